"""Residual blocks as functions over Keras tensors, readable next to the paper's Fig. 2 and Fig. 5.

Post-activation (He et al. 2015):  conv-BN-ReLU ... conv-BN, + shortcut, ReLU.
Pre-activation (He et al. 2016):   BN-ReLU-conv ... BN-ReLU-conv, + shortcut.

Shortcut options (paper Sec. 3.3 / Table 3):
  "A"    identity; where dimensions grow: subsample + zero-padded channels (no parameters).
  "B"    projection (1x1 conv + BN) only where dimensions change, identity elsewhere.
  "C"    projection on every block.
  "none" no shortcut at all: the plain counterpart with exactly the same residual-branch layers.
"""

import dataclasses

import keras

from tfresnet import layers

SHORTCUTS = ("A", "B", "C", "none")
STRIDE_PLACEMENTS = ("v1", "v1.5")


@dataclasses.dataclass(frozen=True)
class ConvSettings:
    """How every conv/BN of a model is made; one instance is shared by all its blocks."""

    weight_decay: float = 0.0  # SGD-style decay: loss += weight_decay / 2 * ||kernel||^2
    conv_bias: bool = False  # keras.applications' ResNets carry conv biases; the paper's don't
    sync_bn: bool = False  # synchronise BN statistics across replicas
    bn_epsilon: float = layers.BN_EPSILON
    zero_init_residual: bool = False  # start each residual branch as the zero function

    def regularizer(self):
        # Keras' L2(l) adds l * sum(w^2); its gradient 2*l*w equals SGD weight decay when l = wd/2.
        return keras.regularizers.L2(self.weight_decay / 2) if self.weight_decay else None


def conv(x, filters, kernel_size, strides, name, settings, zero_init=False, padding="same"):
    """A He-normal initialised 2D convolution with the model's regulariser."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=settings.conv_bias,
        kernel_initializer="zeros" if zero_init else "he_normal",
        kernel_regularizer=settings.regularizer(),
        name=name,
    )(x)


def bn(x, name, settings, zero_gamma=False):
    return layers.batch_norm(
        name, zero_gamma=zero_gamma, synchronized=settings.sync_bn, epsilon=settings.bn_epsilon
    )(x)


def relu(x, name):
    return keras.layers.ReLU(name=name)(x)


def shortcut_path(x, preactivated, filters, strides, *, option, preact, name, settings):
    """The shortcut of one block, or None for a plain block.

    Projections read the pre-activated input in pre-activation blocks (He et al. 2016);
    identity and zero-padding read the block input itself.
    """
    if option not in SHORTCUTS:
        raise ValueError(f"Unknown shortcut option {option!r}; allowed: {', '.join(SHORTCUTS)}.")
    if option == "none":
        return None
    changes = strides != 1 or x.shape[-1] != filters
    if option == "C" or (option == "B" and changes):
        y = conv(preactivated, filters, 1, strides, f"{name}_shortcut_conv", settings)
        return y if preact else bn(y, f"{name}_shortcut_bn", settings)
    if changes:
        return layers.ZeroPadShortcut(filters, strides, name=f"{name}_shortcut_pad")(x)
    return x


def residual_unit(x, convs, *, shortcut, preact, name, settings):
    """A chain of convs `[(filters, kernel_size, strides), ...]` plus the shortcut around it."""
    out_filters = convs[-1][0]
    strides = 1
    for _, _, s in convs:
        strides *= s
    y, preactivated = x, x
    last = len(convs)
    for i, (filters, kernel_size, conv_strides) in enumerate(convs, start=1):
        if preact:
            y = relu(bn(y, f"{name}_bn{i}", settings), f"{name}_relu{i}")
            if i == 1:
                preactivated = y
            zero = settings.zero_init_residual and i == last
            y = conv(y, filters, kernel_size, conv_strides, f"{name}_conv{i}", settings, zero)
        else:
            y = conv(y, filters, kernel_size, conv_strides, f"{name}_conv{i}", settings)
            zero = settings.zero_init_residual and i == last
            y = bn(y, f"{name}_bn{i}", settings, zero_gamma=zero)
            if i < last:
                y = relu(y, f"{name}_relu{i}")
    s = shortcut_path(
        x,
        preactivated,
        out_filters,
        strides,
        option=shortcut,
        preact=preact,
        name=name,
        settings=settings,
    )
    if s is not None:
        y = keras.layers.Add(name=f"{name}_add")([y, s])
    return y if preact else relu(y, f"{name}_out")


def basic_block(x, filters, strides, *, shortcut, preact, name, settings, stride_placement=None):
    """Two 3x3 convs (paper Fig. 5 left); output has `filters` channels."""
    convs = [(filters, 3, strides), (filters, 3, 1)]
    return residual_unit(x, convs, shortcut=shortcut, preact=preact, name=name, settings=settings)


def bottleneck_block(
    x, filters, strides, *, shortcut, preact, name, settings, stride_placement="v1.5"
):
    """1x1 reduce, 3x3, 1x1 expand to 4*filters (paper Fig. 5 right).

    `stride_placement`: "v1" strides the first 1x1 (the paper, keras.applications);
    "v1.5" strides the 3x3 (torchvision, TF Model Garden), slightly more accurate and costly.
    """
    if stride_placement not in STRIDE_PLACEMENTS:
        raise ValueError(
            f"Unknown stride_placement {stride_placement!r}; allowed: "
            f"{', '.join(STRIDE_PLACEMENTS)}."
        )
    s1, s3 = (strides, 1) if stride_placement == "v1" else (1, strides)
    convs = [(filters, 1, s1), (filters, 3, s3), (4 * filters, 1, 1)]
    return residual_unit(x, convs, shortcut=shortcut, preact=preact, name=name, settings=settings)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}
