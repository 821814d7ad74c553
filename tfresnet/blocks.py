"""Residual blocks as functions over Keras tensors, readable next to the paper's Fig. 2 and Fig. 5.

Post-activation (He et al. 2015):  conv-BN-ReLU ... conv-BN, + shortcut, ReLU.
Pre-activation (He et al. 2016):   BN-ReLU-conv ... BN-ReLU-conv, + shortcut.

Shortcuts (paper Sec. 3.3): "A" identity, zero-padded where channels grow; "B" a 1x1 projection
where the shape changes; "C" a projection on every block; "none" the plain counterpart.

    x = keras.Input((32, 32, 3))
    y = basic_block(x, 16, name="my_block1")        # 16 channels, same size; 1x1 projection
    y = bottleneck_block(y, 32, 2, name="my_block2")  # 128 channels (4x32), half the size
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
    return layers.batch_norm(
        name, zero_gamma=zero_gamma, synchronized=settings.sync_bn, epsilon=settings.bn_epsilon
    )(x)


def relu(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    return keras.layers.ReLU(name=name)(x)


def is_positive_int(value: object) -> bool:
    """True for an int >= 1 (numpy ints too; not bools or floats)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _check_unit_args(x, convs, shortcut, preact, settings):
    """Validate a residual unit's arguments before any layer is made; ValueError otherwise."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4 or shape[-1] is None:
        raise ValueError(
            f"x must be a 4D (batch, height, width, channels) tensor with known channels; "
            f"got shape {shape!r}."
        )
    if not convs or not all(
        isinstance(c, (tuple, list)) and len(c) == 3 and all(map(is_positive_int, c)) for c in convs
    ):
        raise ValueError(
            f"convs must be a non-empty list of (filters, kernel_size, strides) ints >= 1; "
            f"got {convs!r}."
        )
    check_choice("shortcut", shortcut, SHORTCUTS)
    if preact not in (True, False):
        raise ValueError(f"preact must be True or False; got {preact!r}.")
    if not isinstance(settings, ConvSettings):
        raise ValueError(f"settings must be a ConvSettings or None; got {settings!r}.")
    if shortcut == "A" and shape[-1] > convs[-1][0]:
        raise ValueError(
            f"Shortcut 'A' only adds channels (zero-padding), but the input has {shape[-1]} and "
            f"the block outputs {convs[-1][0]}; use shortcut 'B' or 'C'."
        )


def _check_block_args(filters, strides):
    for what, value in (("filters", filters), ("strides", strides)):
        if not is_positive_int(value):
            raise ValueError(f"{what} must be an int >= 1; got {value!r}.")


def shortcut_path(
    x: keras.KerasTensor,
    preactivated: keras.KerasTensor,
    filters: int,
    strides: int,
    *,
    option: str,
    preact: bool,
    name: str,
    settings: ConvSettings,
) -> keras.KerasTensor | None:
    """The shortcut of one block, or None for a plain block. Projections read the pre-activated
    input in pre-activation blocks (He et al. 2016), identity and zero-padding the input itself."""
    if option == "none":
        return None
    changes = strides != 1 or x.shape[-1] != filters
    if option == "C" or (option == "B" and changes):
        y = conv(preactivated, filters, 1, strides, f"{name}_shortcut_conv", settings)
        return y if preact else bn(y, f"{name}_shortcut_bn", settings)
    if changes:
        return layers.ZeroPadShortcut(filters, strides, name=f"{name}_shortcut_pad")(x)
    return x


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
        "none" (a plain block, no shortcut).
      preact: bool, False: conv-BN-ReLU ... conv-BN, + shortcut, ReLU (He et al. 2015);
        True: BN-ReLU-conv ..., + shortcut (He et al. 2016).
      name: str, prefix of every layer's name (`{name}_conv1`, `{name}_bn1`, `{name}_add`,
        ...); default "residual_unit<k>", unique per Keras session.
      settings: ConvSettings; default ConvSettings().

    Returns:
      Keras tensor, the block output.

    Raises:
      ValueError naming the bad argument, before any layer is made.

    Example:
      >>> x = keras.Input((8, 8, 16))
      >>> y = residual_unit(x, [(16, 1, 1), (16, 3, 2), (32, 1, 1)], name="mixed")
      >>> y.shape
      (None, 4, 4, 32)
    """
    settings = ConvSettings() if settings is None else settings
    _check_unit_args(x, convs, shortcut, preact, settings)
    name = name or f"residual_unit{keras.backend.get_uid('residual_unit')}"
    out_filters = convs[-1][0]
    strides = math.prod(s for _, _, s in convs)
    y, preactivated = x, x
    last = len(convs)
    for i, (filters, kernel_size, conv_strides) in enumerate(convs, start=1):
        zero = settings.zero_init_residual and i == last
        if preact:
            y = relu(bn(y, f"{name}_bn{i}", settings), f"{name}_relu{i}")
            if i == 1:
                preactivated = y
            y = conv(y, filters, kernel_size, conv_strides, f"{name}_conv{i}", settings, zero)
        else:
            y = conv(y, filters, kernel_size, conv_strides, f"{name}_conv{i}", settings)
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
    _check_block_args(filters, strides)
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
    _check_block_args(filters, strides)
    check_choice("stride_placement", stride_placement, STRIDE_PLACEMENTS)
    name = name or f"bottleneck_block{keras.backend.get_uid('bottleneck_block')}"
    s1, s3 = (strides, 1) if stride_placement == "v1" else (1, strides)
    convs = [(filters, 1, s1), (filters, 3, s3), (4 * filters, 1, 1)]
    return residual_unit(x, convs, shortcut=shortcut, preact=preact, name=name, settings=settings)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}
