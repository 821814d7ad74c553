"""Residual blocks as functions over Keras tensors, readable next to the paper's Fig. 2 and Fig. 5.

Post-activation (He et al. 2015):  conv-BN-ReLU ... conv-BN, + shortcut, ReLU.
Pre-activation (He et al. 2016):   BN-ReLU-conv ... BN-ReLU-conv, + shortcut.

Shortcuts (paper Sec. 3.3): "A" identity, zero-padded where channels grow; "B" a 1x1 projection
where the shape changes; "C" a projection on every block; "none" the plain counterpart.
"""

import dataclasses
import math
import numbers

import keras

from tfresnet import layers
from tfresnet.config import at_least, check_choice, check_fields, setting

SHORTCUTS = ("A", "B", "C", "none")
STRIDE_PLACEMENTS = ("v1", "v1.5")


@dataclasses.dataclass(frozen=True)
class ConvSettings:
    """How every conv/BN of a model is made; one instance is shared by all its blocks.

    Example:
      >>> y = basic_block(keras.Input((8, 8, 4)), 4, settings=ConvSettings(weight_decay=1e-4))
    """

    weight_decay: float = setting(
        0.0,
        "SGD-style decay: loss += weight_decay / 2 * ||kernel||^2",
        check=at_least(0, "a number"),
    )
    conv_bias: bool = False  # keras.applications' ResNets carry conv biases; the paper's don't
    sync_bn: bool = False  # synchronise BN batch statistics across replicas
    bn_epsilon: float = layers.BN_EPSILON
    zero_init_residual: bool = False  # the branch's last BN (preact: conv) at zero: identity

    def __post_init__(self):
        check_fields(self)

    def regularizer(self) -> keras.regularizers.Regularizer | None:
        # Keras' L2(l) adds l * sum(w^2); its gradient 2*l*w equals SGD weight decay when l = wd/2.
        return keras.regularizers.L2(self.weight_decay / 2) if self.weight_decay else None


def conv(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int,
    strides: int,
    name: str,
    settings: ConvSettings,
    zero_init: bool = False,
    padding: str = "same",
) -> keras.KerasTensor:
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


def bn(
    x: keras.KerasTensor, name: str, settings: ConvSettings, zero_gamma: bool = False
) -> keras.KerasTensor:
    """The paper's BN (momentum 0.9) on TF's fused kernel; `zero_gamma` starts it at zero."""
    return layers.BatchNormalization(
        momentum=layers.BN_MOMENTUM,
        epsilon=settings.bn_epsilon,
        gamma_initializer="zeros" if zero_gamma else "ones",
        synchronized=settings.sync_bn,
        name=name,
    )(x)


def is_positive_int(value: object) -> bool:
    """True for an int >= 1 (numpy ints too; not bools or floats)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _check_unit_args(convs, shortcut, preact, settings):
    """The arguments Keras' layers do not check themselves; ValueError before any layer."""
    if not convs or not all(
        isinstance(c, (tuple, list)) and len(c) == 3 and all(map(is_positive_int, c)) for c in convs
    ):  # Keras takes True as 1 filter and fails on 4.0 deep in a shape
        raise ValueError(
            f"convs must be a non-empty list of (filters, kernel_size, strides) ints >= 1; "
            f"got {convs!r}."
        )
    check_choice("shortcut", shortcut, SHORTCUTS)
    if preact not in (True, False):
        raise ValueError(f"preact must be True or False; got {preact!r}.")
    if not isinstance(settings, ConvSettings):
        raise ValueError(f"settings must be a ConvSettings or None; got {settings!r}.")


def residual_unit(
    x: keras.KerasTensor,
    convs: list[tuple[int, int, int]],
    *,
    shortcut: str = "B",
    preact: bool = False,
    name: str | None = None,
    settings: ConvSettings | None = None,
) -> keras.KerasTensor:
    """A chain of conv-BN(-ReLU) layers plus the shortcut around it: any residual block.

    Args:
      x: Keras tensor (batch, height, width, channels), the block input.
      convs: list of (filters, kernel_size, strides) int triples, the residual branch in
        order; the block's stride is their product, its output has the last one's filters.
      shortcut: str, "A" (identity; zero-pads channels and subsamples where they change),
        "B" (a 1x1 projection + BN only where shape changes), "C" (projection always) or
        "none" (a plain block, no shortcut). Pre-activation projections read the
        pre-activated input (He et al. 2016) and carry no BN.
      preact: bool, False: conv-BN-ReLU ... conv-BN, + shortcut, ReLU (He et al. 2015);
        True: BN-ReLU-conv ..., + shortcut (He et al. 2016).
      name: str, prefix of every layer's name (`{name}_conv1`, `{name}_bn1`, `{name}_add`,
        ...); default "residual_unit<k>", unique per Keras session.
      settings: ConvSettings; default ConvSettings().

    Example:
      >>> x = keras.Input((8, 8, 16))
      >>> residual_unit(x, [(16, 1, 1), (16, 3, 2), (32, 1, 1)], name="mixed").shape
      (None, 4, 4, 32)
    """
    settings = ConvSettings() if settings is None else settings
    _check_unit_args(convs, shortcut, preact, settings)
    name = name or f"residual_unit{keras.backend.get_uid('residual_unit')}"
    y = preactivated = x
    for i, (filters, kernel_size, strides) in enumerate(convs, start=1):
        zero = settings.zero_init_residual and i == len(convs)
        if preact:
            y = keras.layers.ReLU(name=f"{name}_relu{i}")(bn(y, f"{name}_bn{i}", settings))
            preactivated = y if i == 1 else preactivated
            y = conv(y, filters, kernel_size, strides, f"{name}_conv{i}", settings, zero)
        else:
            y = conv(y, filters, kernel_size, strides, f"{name}_conv{i}", settings)
            y = bn(y, f"{name}_bn{i}", settings, zero_gamma=zero)
            if i < len(convs):
                y = keras.layers.ReLU(name=f"{name}_relu{i}")(y)
    filters, strides = convs[-1][0], math.prod(s for _, _, s in convs)
    changes = strides != 1 or x.shape[-1] != filters
    if shortcut == "C" or (shortcut == "B" and changes):
        s = conv(preactivated, filters, 1, strides, f"{name}_shortcut_conv", settings)
        s = s if preact else bn(s, f"{name}_shortcut_bn", settings)
    elif shortcut == "A" and changes:
        s = layers.ZeroPadShortcut(filters, strides, name=f"{name}_shortcut_pad")(x)
    else:
        s = None if shortcut == "none" else x
    if s is not None:
        y = keras.layers.Add(name=f"{name}_add")([y, s])
    return y if preact else keras.layers.ReLU(name=f"{name}_out")(y)


def basic_block(
    x: keras.KerasTensor,
    filters: int,
    strides: int = 1,
    *,
    shortcut: str = "B",
    preact: bool = False,
    name: str | None = None,
    settings: ConvSettings | None = None,
    stride_placement: str | None = None,
) -> keras.KerasTensor:
    """Two 3x3 convs (paper Fig. 5 left), the block of ResNet-18/34 and the CIFAR nets.

    Args:
      x, shortcut, preact, name, settings: as for `residual_unit`.
      filters: int, the output channels of both convs.
      strides: int, the first conv's (and the shortcut's) stride; 2 halves the size.
      stride_placement: ignored (so that both blocks take the same arguments).

    Example:
      >>> x = keras.Input((8, 8, 16))
      >>> basic_block(x, 32, 2, shortcut="A").shape
      (None, 4, 4, 32)
    """
    name = name or f"basic_block{keras.backend.get_uid('basic_block')}"
    convs = [(filters, 3, strides), (filters, 3, 1)]
    return residual_unit(x, convs, shortcut=shortcut, preact=preact, name=name, settings=settings)


def bottleneck_block(
    x: keras.KerasTensor,
    filters: int,
    strides: int = 1,
    *,
    shortcut: str = "B",
    preact: bool = False,
    name: str | None = None,
    settings: ConvSettings | None = None,
    stride_placement: str = "v1.5",
) -> keras.KerasTensor:
    """1x1 reduce, 3x3, 1x1 expand to 4*filters (paper Fig. 5 right), ResNet-50 and deeper.

    Args:
      x, shortcut, preact, name, settings: as for `residual_unit`.
      filters: int, the 1x1 and 3x3 convs' channels; the block outputs 4 * filters.
      strides: int, the block's stride; 2 halves the size.
      stride_placement: str, "v1" strides the first 1x1 (the paper, keras.applications);
        "v1.5" the 3x3 (torchvision), slightly more accurate and costly.

    Example:
      >>> x = keras.Input((8, 8, 64))
      >>> bottleneck_block(x, 32, 2).shape
      (None, 4, 4, 128)
    """
    check_choice("stride_placement", stride_placement, STRIDE_PLACEMENTS)
    name = name or f"bottleneck_block{keras.backend.get_uid('bottleneck_block')}"
    s1, s3 = (strides, 1) if stride_placement == "v1" else (1, strides)
    convs = [(filters, 1, s1), (filters, 3, s3), (4 * filters, 1, 1)]
    return residual_unit(x, convs, shortcut=shortcut, preact=preact, name=name, settings=settings)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}
