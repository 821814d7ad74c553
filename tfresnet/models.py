"""The ResNet family as a table of specs and one builder (He et al. 2015, Table 1 and Sec. 4.2).

    build_model("resnet56")                     # CIFAR, 6n+2 layers, option A
    build_model("resnet50", num_classes=100)    # ImageNet bottleneck, option B, v1.5 strides
    build_model("plain20")                      # same layers as resnet20, no shortcuts

Names: `resnet<d>` / `plain<d>` where d is an ImageNet depth (18, 34, 50, 101, 152, 200) or any
CIFAR depth 6n+2; `cifar_resnet<d>` / `cifar_plain<d>` force the CIFAR family (50 and 152 are
both). `python -m tfresnet.models --list` prints the table with parameters and multiply-adds.
"""

import dataclasses
import re
import sys

import keras
import numpy as np

from tfresnet import blocks

FAMILIES = ("cifar", "imagenet")

# ImageNet depths -> (block, blocks per stage); paper Table 1. One line per network.
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),  # He et al. 2016
}
CIFAR_LISTED_DEPTHS = (20, 32, 44, 56, 110, 1202)
CIFAR_PLAIN_LISTED_DEPTHS = (20, 32, 44, 56, 110)
IMAGENET_PLAIN_LISTED_DEPTHS = (18, 34)


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """Architecture of one named network: everything but the training and input choices."""

    family: str  # "cifar": 3x3 stem, 16/32/64 filters; "imagenet": 7x7/2 stem + max-pool, 64-512
    block: str  # "basic" (two 3x3) or "bottleneck" (1x1-3x3-1x1, 4x expansion)
    stage_blocks: tuple  # residual blocks per stage
    residual: bool = True  # False: the plain counterpart (shortcut "none")

    @property
    def stage_filters(self):
        return (16, 32, 64) if self.family == "cifar" else (64, 128, 256, 512)

    @property
    def depth(self):
        convs = 3 if self.block == "bottleneck" else 2
        return convs * sum(self.stage_blocks) + 2

    @property
    def default_shortcut(self):
        # The paper: option A on CIFAR (Sec. 4.2), option B on ImageNet (Table 3/4).
        if not self.residual:
            return "none"
        return "A" if self.family == "cifar" else "B"

    @property
    def default_input_shape(self):
        return (32, 32, 3) if self.family == "cifar" else (224, 224, 3)

    @property
    def default_num_classes(self):
        return 10 if self.family == "cifar" else 1000

    @property
    def min_input_size(self):
        return 4 if self.family == "cifar" else 32  # the network's total downsampling


def cifar_spec(n, residual=True):
    """The paper's CIFAR network with 6n+2 layers: three stages of n basic blocks."""
    return ResNetSpec("cifar", "basic", (n, n, n), residual)


def imagenet_spec(depth, residual=True):
    block, stage_blocks = IMAGENET_DEPTHS[depth]
    return ResNetSpec("imagenet", block, stage_blocks, residual)


_NAME = re.compile(r"^(cifar_)?(resnet|plain)(\d+)$")


def listed_names():
    """The networks named in the paper (what `--list` shows and the tests cover)."""
    names = [f"resnet{d}" for d in CIFAR_LISTED_DEPTHS if d not in IMAGENET_DEPTHS]
    names += [f"plain{d}" for d in CIFAR_PLAIN_LISTED_DEPTHS]
    names += [f"resnet{d}" for d in IMAGENET_DEPTHS]
    names += [f"plain{d}" for d in IMAGENET_PLAIN_LISTED_DEPTHS]
    return names


def get_spec(name):
    """Turn a model name into its spec, or raise a ValueError that says what names exist."""
    match = _NAME.match(str(name).lower())
    if not match:
        raise ValueError(
            f"Unknown model name {name!r}. Allowed: resnet<d>/plain<d> with d in "
            f"{sorted(IMAGENET_DEPTHS)} (ImageNet) or any CIFAR depth 6n+2 (20, 32, 44, 56, 110, "
            f"1202, ...); cifar_resnet<d>/cifar_plain<d> force the CIFAR family."
        )
    force_cifar, kind, depth = match.group(1), match.group(2), int(match.group(3))
    residual = kind == "resnet"
    if depth in IMAGENET_DEPTHS and not force_cifar:
        return imagenet_spec(depth, residual)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"Model {name!r}: CIFAR-style depth must be 6n+2 with n >= 1 (8, 14, 20, 26, 32, ...), "
            f"and ImageNet depths are {sorted(IMAGENET_DEPTHS)}; got depth {depth}."
        )
    return cifar_spec((depth - 2) // 6, residual)


def _check_input_shape(input_shape, spec, name):
    if len(input_shape) != 3 or any(d is not None and int(d) < 1 for d in input_shape):
        raise ValueError(
            f"input_shape must be (height, width, channels) with positive sizes; "
            f"got {input_shape!r}."
        )
    small = [d for d in input_shape[:2] if d is not None and d < spec.min_input_size]
    if small:
        raise ValueError(
            f"Input {input_shape[0]}x{input_shape[1]} is too small for {name}: the "
            f"{spec.family} stem and stages downsample by {spec.min_input_size}, so height and "
            f"width must be at least {spec.min_input_size}."
        )


def _stem(x, spec, preact, settings):
    if spec.family == "cifar":
        x = blocks.conv(x, 16, 3, 1, "stem_conv", settings)
    else:
        # Explicit padding as in keras.applications, so its weights transplant exactly.
        x = keras.layers.ZeroPadding2D(3, name="stem_pad")(x)
        x = blocks.conv(x, 64, 7, 2, "stem_conv", settings, padding="valid")
    if not preact:
        x = blocks.relu(blocks.bn(x, "stem_bn", settings), "stem_relu")
    if spec.family == "imagenet":
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    return x


def build_model(
    name,
    *,
    shortcut=None,
    num_classes=None,
    input_shape=None,
    preact=False,
    stride_placement="v1.5",
    weight_decay=0.0,
    zero_init_residual=False,
    sync_bn=False,
    conv_bias=False,
    bn_epsilon=blocks.layers.BN_EPSILON,
    pixel_mean=None,
    pixel_std=None,
):
    """Build a named ResNet (or plain net) as a functional `keras.Model`.

    Args:
      name: str, e.g. "resnet20", "plain56", "resnet50" (see the module docstring).
      shortcut: str, "A" | "B" | "C" | "none"; default per family as in the paper
        (A for CIFAR, B for ImageNet, "none" for plain nets).
      num_classes: int, classifier width; default 10 (CIFAR family) or 1000 (ImageNet).
      input_shape: (height, width, channels); default (32, 32, 3) or (224, 224, 3).
      preact: bool, pre-activation blocks (He et al. 2016).
      stride_placement: str, bottleneck stride on the first 1x1 ("v1", the paper) or on the
        3x3 ("v1.5", torchvision; the default).
      weight_decay: float, SGD weight decay on conv and dense kernels only (never BN or biases).
      zero_init_residual: bool, start every residual branch at zero (identity blocks).
      sync_bn: bool, synchronise BN batch statistics across replicas.
      conv_bias: bool, biases on convs (only to hold keras.applications weights).
      bn_epsilon: float, BN epsilon (keras.applications uses 1.001e-5).
      pixel_mean, pixel_std: optional arrays broadcastable to input_shape; when given, the model
        takes raw pixel values and standardises them itself, so exports need no preprocessing.

    Returns:
      A `keras.Model` named `name` whose output "predictions" is a float32 softmax.

    Example:
      >>> model = build_model("resnet20", input_shape=(8, 8, 1))
      >>> model.output_shape
      (None, 10)
    """
    spec = get_spec(name)
    shortcut = spec.default_shortcut if shortcut is None else shortcut
    if shortcut not in blocks.SHORTCUTS:
        raise ValueError(f"Unknown shortcut {shortcut!r}; allowed: {', '.join(blocks.SHORTCUTS)}.")
    if not spec.residual and shortcut != "none":
        raise ValueError(f"{name} is a plain network; it takes shortcut='none', not {shortcut!r}.")
    if stride_placement not in blocks.STRIDE_PLACEMENTS:
        raise ValueError(
            f"Unknown stride_placement {stride_placement!r}; allowed: "
            f"{', '.join(blocks.STRIDE_PLACEMENTS)}."
        )
    num_classes = spec.default_num_classes if num_classes is None else int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}.")
    input_shape = tuple(spec.default_input_shape if input_shape is None else input_shape)
    _check_input_shape(input_shape, spec, name)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay}.")

    settings = blocks.ConvSettings(
        weight_decay=weight_decay,
        conv_bias=conv_bias,
        sync_bn=sync_bn,
        bn_epsilon=bn_epsilon,
        zero_init_residual=zero_init_residual,
    )
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    if pixel_mean is not None or pixel_std is not None:
        mean, std = np.broadcast_arrays(
            np.asarray(0.0 if pixel_mean is None else pixel_mean, "float32"),
            np.asarray(1.0 if pixel_std is None else pixel_std, "float32"),
        )
        axis = tuple(range(-mean.ndim, 0)) or None  # per-pixel, per-channel or one scalar
        x = keras.layers.Normalization(
            axis=axis, mean=mean, variance=np.square(std), name="standardize"
        )(x)
    x = _stem(x, spec, preact, settings)
    block_fn = blocks.BLOCKS[spec.block]
    for stage, (filters, count) in enumerate(
        zip(spec.stage_filters, spec.stage_blocks, strict=True), 1
    ):
        for index in range(1, count + 1):
            x = block_fn(
                x,
                filters,
                2 if index == 1 and stage > 1 else 1,
                shortcut=shortcut,
                preact=preact,
                name=f"stage{stage}_block{index}",
                settings=settings,
                stride_placement=stride_placement,
            )
    if preact:
        x = blocks.relu(blocks.bn(x, "post_bn", settings), "post_relu")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dense(
        num_classes,
        kernel_initializer="he_normal",
        kernel_regularizer=settings.regularizer(),
        name="logits",
    )(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
    # Keras walks the layer graph recursively (here and when saving); ResNet-1202 needs more
    # than Python's default 1000 frames.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 50 * spec.depth))
    return keras.Model(inputs, outputs, name=str(name).lower())


def count_params(model):
    """Trainable parameters (what the paper and torchvision count; excludes BN moving stats)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def count_flops(model):
    """Multiply-adds of one image through the convs and dense layers (the paper's "FLOPs")."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, _ = layer.output.shape
            kh, kw, cin, cout = layer.kernel.shape
            total += height * width * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return int(total)


def model_table(names=None, input_size=None):
    """Rows (name, layers, shortcut, params, multiply-adds) for the named networks."""
    rows = []
    for name in names or listed_names():
        spec = get_spec(name)
        size = input_size or spec.default_input_shape[0]
        stride = "v1" if spec.family == "imagenet" else "v1.5"
        model = build_model(name, input_shape=(size, size, 3), stride_placement=stride)
        rows.append(
            (name, spec.depth, spec.default_shortcut, count_params(model), count_flops(model))
        )
        keras.backend.clear_session()
    return rows


def format_table(rows):
    lines = [
        "| model | layers | shortcut | params | multiply-adds |",
        "|---|---:|:---:|---:|---:|",
    ]
    for name, depth, shortcut, params, flops in rows:
        lines.append(f"| {name} | {depth} | {shortcut} | {params:,} | {flops / 1e9:.3g}G |")
    return "\n".join(lines)


def main(argv=None):
    """`python -m tfresnet.models --list [names...]`: the model table as markdown."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "--list":
        print("usage: python -m tfresnet.models --list [name ...]", file=sys.stderr)
        return 2
    print(format_table(model_table(argv[1:] or None)))
    print(
        "\nCIFAR nets at 32x32x3 with 10 classes; ImageNet nets at 224x224x3 with 1000 classes "
        "and v1 (paper) bottleneck strides; params are trainable weights."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
