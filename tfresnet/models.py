"""The ResNet family as a table of specs and one builder (He et al. 2015, Table 1 and Sec. 4.2).

    build_model("resnet56")                     # CIFAR, 6n+2 layers, option A
    build_model("resnet50", num_classes=100)    # ImageNet bottleneck, option B, v1.5 strides
    build_model("plain20")                      # same layers as resnet20, no shortcuts

Names: `resnet<d>` / `plain<d>` where d is an ImageNet depth (18, 34, 50, 101, 152, 200) or any
CIFAR depth 6n+2; `cifar_resnet<d>` / `cifar_plain<d>` force the CIFAR family (50 and 152 are
both). `python -m tfresnet.models --list` prints the table with parameters and multiply-adds.

Beyond the table (docs/models.md, "Use in your own model"):

    build_model("resnet50", include_top=False, pooling="avg")  # keras.applications' arguments
    backbone("resnet50")                         # {"stage1": ..., "stage4": ...} features
    build_model(ResNetSpec("cifar", "basic", (2, 2, 2), stage_filters=(64, 128, 256)))
    build_model("resnet20:width_multiplier=4")   # a spec string (`parse_model`)
"""

import collections
import contextlib
import dataclasses
import functools
import inspect
import math
import numbers
import os
import re
import sys

import keras
import numpy as np

from tfresnet import blocks, markdown

FAMILIES = ("cifar", "imagenet")
# Stem kind -> its downsampling: "cifar" a 3x3/1 conv, "imagenet" a 7x7/2 conv + 3x3/2 max-pool.
STEMS = {"cifar": 1, "imagenet": 4}
_FIRST_FILTERS = {"cifar": 16, "imagenet": 64}  # first stage's filters; every stage doubles them

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


def _check_choice(what, value, allowed):
    if value not in allowed:
        raise ValueError(f"Unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}.")


def _positive_ints(what, values):
    """`values` as a non-empty tuple of ints >= 1, or a ValueError quoting them."""
    items = tuple(values) if isinstance(values, (tuple, list)) else ()
    if not items or not all(blocks.is_positive_int(v) for v in items):
        raise ValueError(f"{what} must be a non-empty sequence of ints >= 1; got {values!r}.")
    return tuple(int(v) for v in items)


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """Architecture of one network: everything but the training and input choices.

    The named networks are rows of specs (`get_spec("resnet56")`); any other ResNet is one more
    spec, built by `build_model(spec)` and described by plain data (`dataclasses.asdict(spec)`,
    `spec.to_string()`, `parse_model`). Fields left None take the family's values, so every
    field holds a concrete value after construction and equal networks have equal specs.

    Args:
      family: str, "cifar" or "imagenet": the defaults for the fields below, the shortcut
        option (A / B), the input shape (32x32x3 / 224x224x3) and the classes (10 / 1000).
      block: str, "basic" (two 3x3 convs) or "bottleneck" (1x1-3x3-1x1, 4x expansion).
      stage_blocks: tuple of int, residual blocks per stage; the first stage keeps the stem's
        resolution and every later one halves it.
      residual: bool, False for the plain counterpart (no shortcuts).
      stage_filters: tuple of int, filters per stage (a bottleneck outputs 4x as many);
        default 16, 32, 64 (CIFAR) or 64, 128, 256, 512 (ImageNet), doubling per stage.
      stem: str, "cifar" (3x3 conv, stride 1) or "imagenet" (7x7/2 conv + 3x3/2 max-pool);
        default the family's.
      stem_filters: int, the stem conv's filters; default `stage_filters[0]`.

    Example:
      >>> spec = ResNetSpec("cifar", "basic", (2, 2, 2), stage_filters=(32, 64, 128))
      >>> spec.depth, spec.stem, spec.stem_filters, spec.to_string()
      (14, 'cifar', 32, 'cifar:block=basic;stage_blocks=2,2,2;stage_filters=32,64,128')
      >>> get_spec("resnet20").widened(4).stage_filters  # Wide ResNet's k = 4
      (64, 128, 256)
    """

    family: str
    block: str
    stage_blocks: tuple
    residual: bool = True
    stage_filters: tuple = None
    stem: str = None
    stem_filters: int = None

    def __post_init__(self):
        set_field = functools.partial(object.__setattr__, self)
        _check_choice("family", self.family, FAMILIES)
        _check_choice("block", self.block, tuple(blocks.BLOCKS))
        set_field("stage_blocks", _positive_ints("stage_blocks", self.stage_blocks))
        if not isinstance(self.residual, (bool, np.bool_)):
            raise ValueError(f"residual must be True or False; got {self.residual!r}.")
        set_field("residual", bool(self.residual))
        if self.stage_filters is None:
            first = _FIRST_FILTERS[self.family]
            set_field("stage_filters", tuple(first * 2**i for i in range(len(self.stage_blocks))))
        set_field("stage_filters", _positive_ints("stage_filters", self.stage_filters))
        if len(self.stage_filters) != len(self.stage_blocks):
            raise ValueError(
                f"stage_filters {self.stage_filters} has {len(self.stage_filters)} entries but "
                f"stage_blocks {self.stage_blocks} has {len(self.stage_blocks)}; give one each."
            )
        set_field("stem", self.family if self.stem is None else self.stem)
        _check_choice("stem", self.stem, tuple(STEMS))
        if self.stem_filters is None:
            set_field("stem_filters", self.stage_filters[0])
        set_field("stem_filters", _positive_ints("stem_filters", [self.stem_filters])[0])

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
    def feature_strides(self):
        """{"stage1": stride, ...}: each stage output's downsampling of the input."""
        stem = STEMS[self.stem]
        return {f"stage{i}": stem * 2 ** (i - 1) for i in range(1, len(self.stage_blocks) + 1)}

    @property
    def min_input_size(self):
        return self.feature_strides[f"stage{len(self.stage_blocks)}"]  # total downsampling

    def min_weights(self):
        """A lower bound on the weight count: the stages' main-path conv kernels alone (no
        stem, shortcut projections, BatchNorm or head), so it can be computed before building."""
        bottleneck = self.block == "bottleneck"

        def block(cin, f):  # 1x1-3x3-1x1 (4x expansion) or two 3x3 convs
            return cin * f + 9 * f * f + 4 * f * f if bottleneck else 9 * (cin * f + f * f)

        total, channels = 0, self.stem_filters
        for count, filters in zip(self.stage_blocks, self.stage_filters, strict=True):
            out = 4 * filters if bottleneck else filters
            total += block(channels, filters) + (count - 1) * block(out, filters)
            channels = out
        return total

    def widened(self, multiplier):
        """This spec with every stage's filters times `multiplier` (Wide ResNets' k; the stem
        keeps its filters, as in Zagoruyko & Komodakis 2016)."""
        number = isinstance(multiplier, numbers.Real) and not isinstance(multiplier, bool)
        if not number or not 0 < multiplier < float("inf"):
            raise ValueError(f"width multiplier must be a number > 0; got {multiplier!r}.")
        scaled = [f * multiplier for f in self.stage_filters]
        if not all(math.isfinite(f) for f in scaled):
            raise ValueError(f"width multiplier {multiplier!r} makes the filter counts infinite.")
        filters = tuple(max(1, round(f)) for f in scaled)
        return dataclasses.replace(self, stage_filters=filters)

    def table_name(self):
        """The network's name in the table (`get_spec(name) == self`), or None."""
        kind = "resnet" if self.residual else "plain"
        for name in (f"{kind}{self.depth}", f"cifar_{kind}{self.depth}"):
            try:
                if get_spec(name) == self:
                    return name
            except ValueError:
                continue
        return None

    def to_string(self):
        """The table name, or a spec string that `parse_model` turns back into this spec."""
        name = self.table_name()
        if name:
            return name
        defaults = dataclasses.asdict(ResNetSpec(self.family, self.block, self.stage_blocks))
        defaults.update(stage_blocks=None, stem_filters=self.stage_filters[0])
        parts = [f"block={self.block}"]
        for field in ("stage_blocks", "residual", "stage_filters", "stem", "stem_filters"):
            value = getattr(self, field)
            if value != defaults[field]:
                parts.append(f"{field}={_format_value(value)}")
        return f"{self.family}:{';'.join(parts)}"


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


def _format_value(value):
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _parse_bool(text):
    if text.lower() not in ("true", "false"):
        raise ValueError("expected true or false")
    return text.lower() == "true"


def _parse_ints(text):
    return tuple(int(v) for v in text.split(","))


# Spec-string keys -> how their values are read (ResNetSpec fields, plus the width multiplier).
_SPEC_KEYS = {
    "block": str,
    "stage_blocks": _parse_ints,
    "stage_filters": _parse_ints,
    "stem": str,
    "stem_filters": int,
    "residual": _parse_bool,
    "width_multiplier": float,
}


def parse_model(text):
    """A `ResNetSpec` from a model name or a spec string (what a config file or flag holds).

    Args:
      text: str, a name from the table ("resnet56", "plain34") or `base:key=value;...` where
        base is a name (its block, stage depths and residual flag are the starting point) or a
        family, "cifar" or "imagenet" (then `stage_blocks` is required and `block` defaults to
        basic). Keys: block, stage_blocks and stage_filters (comma-separated ints), stem,
        stem_filters, residual (true/false) and width_multiplier (a number that scales every
        stage's filters, applied last). Fields not given take the family's defaults.

    Returns:
      ResNetSpec. `spec.to_string()` gives a string that parses back to the same spec.

    Raises:
      ValueError quoting the part that is wrong and listing what is allowed.

    Example:
      >>> parse_model("resnet20:width_multiplier=2").stage_filters
      (32, 64, 128)
      >>> parse_model("imagenet:block=bottleneck;stage_blocks=1,1").feature_strides
      {'stage1': 4, 'stage2': 8}
    """
    text = str(text).strip()
    base, _, rest = text.partition(":")
    base = base.strip().lower()
    if base in FAMILIES:
        fields = {"family": base, "block": "basic"}
    else:
        spec = get_spec(base)
        fields = {f: getattr(spec, f) for f in ("family", "block", "stage_blocks", "residual")}
    values = {}
    for item in filter(None, (part.strip() for part in rest.split(";"))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key not in _SPEC_KEYS or key in values:
            problem = "is given twice" if key in values else "is not key=value with a known key"
            raise ValueError(
                f"{item!r} in model spec {text!r} {problem}; keys: {', '.join(_SPEC_KEYS)}."
            )
        try:
            values[key] = _SPEC_KEYS[key](value)
        except ValueError:
            raise ValueError(
                f"{key}={value!r} in model spec {text!r} is not a valid "
                f"{_SPEC_KEYS[key].__name__.removeprefix('_parse_')} value."
            ) from None
    multiplier = values.pop("width_multiplier", None)
    fields.update(values)
    if "stage_blocks" not in fields:
        raise ValueError(
            f"Model spec {text!r} needs stage_blocks (e.g. {base}:stage_blocks=2,2,2) when it "
            f"starts from a family instead of a name."
        )
    spec = ResNetSpec(**fields)
    return spec if multiplier is None else spec.widened(multiplier)


def resolve_spec(name):
    """The spec of `name`: a model name or spec string (`parse_model`), a ResNetSpec, or a
    dict of ResNetSpec fields (`dataclasses.asdict(spec)`, e.g. read back from JSON)."""
    if isinstance(name, ResNetSpec):
        return name
    if isinstance(name, dict):
        fields = [f.name for f in dataclasses.fields(ResNetSpec)]
        unknown = sorted(set(name) - set(fields))
        if unknown:
            raise ValueError(
                f"Unknown ResNetSpec field(s) {', '.join(unknown)} in {name!r}; allowed: "
                f"{', '.join(fields)}."
            )
        return ResNetSpec(**name)
    if isinstance(name, str):
        return parse_model(name)
    raise ValueError(
        f"A model is a name or spec string, a ResNetSpec or a dict of its fields; got "
        f"{type(name).__name__} {name!r}."
    )


def feature_strides(name):
    """{"stage1": stride, ...}: how much each stage output of `backbone(name)` is downsampled.

    ImageNet nets: {"stage1": 4, "stage2": 8, "stage3": 16, "stage4": 32}, which keras-hub and
    FPN papers call P2-P5 (level k has stride 2**k); CIFAR nets: {"stage1": 1, "stage2": 2,
    "stage3": 4}.

    Example:
      >>> feature_strides("resnet20")
      {'stage1': 1, 'stage2': 2, 'stage3': 4}
    """
    return resolve_spec(name).feature_strides


def check_input_shape(input_shape: tuple, spec: ResNetSpec, name: str) -> None:
    """ValueError unless `spec`'s net takes (height, width, channels) `input_shape`: every
    stage must keep at least one pixel."""
    if len(input_shape) != 3 or any(d is not None and int(d) < 1 for d in input_shape):
        raise ValueError(
            f"input_shape must be (height, width, channels) with positive sizes; "
            f"got {input_shape!r}."
        )
    small = [d for d in input_shape[:2] if d is not None and d < spec.min_input_size]
    if small:
        raise ValueError(
            f"Input {input_shape[0]}x{input_shape[1]} is too small for {name}: the "
            f"stem and stages downsample by {spec.min_input_size}, so height and "
            f"width must be at least {spec.min_input_size}."
        )


def _stem(x, spec, preact, settings):
    if spec.stem == "cifar":
        x = blocks.conv(x, spec.stem_filters, 3, 1, "stem_conv", settings)
    else:
        # Explicit padding as in keras.applications, so its weights transplant exactly.
        x = keras.layers.ZeroPadding2D(3, name="stem_pad")(x)
        x = blocks.conv(x, spec.stem_filters, 7, 2, "stem_conv", settings, padding="valid")
    if not preact:
        x = blocks.relu(blocks.bn(x, "stem_bn", settings), "stem_relu")
    if spec.stem == "imagenet":
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    return x


def _label(name, spec):
    """The model's default name: a table name as given, else the spec's table name, else
    custom_resnet<depth> (custom_plain<depth>)."""
    if isinstance(name, str) and _NAME.match(name.strip().lower()):
        return name.strip().lower()
    kind = "resnet" if spec.residual else "plain"
    return spec.table_name() or f"custom_{kind}{spec.depth}"


_Features = collections.namedtuple("_Features", "inputs stages settings")


def _features(
    spec,
    label,
    *,
    input_shape,
    input_tensor,
    shortcut,
    preact,
    stride_placement,
    weight_decay,
    zero_init_residual,
    sync_bn,
    conv_bias,
    bn_epsilon,
    pixel_mean,
    pixel_std,
):
    """Validate the body arguments (`build_model`'s, the defaults are there), then build the
    input, standardisation, stem and stages."""
    shortcut = spec.default_shortcut if shortcut is None else shortcut
    if shortcut not in blocks.SHORTCUTS:
        raise ValueError(f"Unknown shortcut {shortcut!r}; allowed: {', '.join(blocks.SHORTCUTS)}.")
    if not spec.residual and shortcut != "none":
        raise ValueError(f"{label} is a plain network; it takes shortcut='none', not {shortcut!r}.")
    if stride_placement not in blocks.STRIDE_PLACEMENTS:
        raise ValueError(
            f"Unknown stride_placement {stride_placement!r}; allowed: "
            f"{', '.join(blocks.STRIDE_PLACEMENTS)}."
        )
    if input_tensor is not None:
        if not keras.backend.is_keras_tensor(input_tensor) or len(input_tensor.shape) != 4:
            raise ValueError(
                f"input_tensor must be a 4D Keras tensor (batch, height, width, channels), "
                f"such as keras.Input((32, 32, 3)) or a layer's output; got {input_tensor!r}."
            )
        tensor_shape = tuple(input_tensor.shape[1:])
        if input_shape is not None and tuple(input_shape) != tensor_shape:
            raise ValueError(
                f"input_shape {tuple(input_shape)} differs from input_tensor's shape "
                f"{tensor_shape}; give only one of them."
            )
        input_shape = tensor_shape
    input_shape = tuple(spec.default_input_shape if input_shape is None else input_shape)
    check_input_shape(input_shape, spec, label)
    if not 0 <= weight_decay < math.inf:
        raise ValueError(f"weight_decay must be a number >= 0; got {weight_decay}.")

    settings = blocks.ConvSettings(
        weight_decay=weight_decay,
        conv_bias=conv_bias,
        sync_bn=sync_bn,
        bn_epsilon=bn_epsilon,
        zero_init_residual=zero_init_residual,
    )
    if input_tensor is None:
        x = keras.Input(shape=input_shape, name="images")
        inputs = x
    else:
        x = input_tensor
        sources = keras.utils.get_source_inputs(input_tensor)
        inputs = sources[0] if len(sources) == 1 else sources
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
    stages = []
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
        stages.append(x)
    return _Features(inputs, stages, settings)


@contextlib.contextmanager
def recursion_headroom(frames: int):
    """Python's recursion limit raised to at least `frames` inside the block, then restored.

    Keras walks a functional graph recursively when it builds, saves and loads a model;
    ResNet-1202 needs about 50 frames a layer of depth, more than Python's default 1000.
    """
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(max(before, int(frames)))
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


POOLINGS = (None, "avg", "max")


def _check_head(include_top, pooling, classifier_activation, num_classes):
    if include_top not in (True, False):
        raise ValueError(f"include_top must be True or False; got {include_top!r}.")
    _check_choice("pooling", pooling, POOLINGS)
    try:
        keras.activations.get(classifier_activation)
    except ValueError:
        raise ValueError(
            f"Unknown classifier_activation {classifier_activation!r}; allowed: None (logits), "
            f"a callable or a Keras activation name ('softmax', 'sigmoid', 'linear', ...)."
        ) from None
    if include_top and pooling == "max":
        raise ValueError(
            "pooling='max' applies only with include_top=False; the classifier average-pools."
        )
    if not include_top and (num_classes is not None or classifier_activation != "softmax"):
        raise ValueError(
            f"num_classes={num_classes!r} and classifier_activation={classifier_activation!r} "
            f"apply only with include_top=True; a headless model has no classifier."
        )


def build_model(
    name,
    *,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    input_tensor=None,
    num_classes=None,
    input_shape=None,
    shortcut=None,
    preact=False,
    stride_placement="v1.5",
    weight_decay=0.0,
    zero_init_residual=False,
    sync_bn=False,
    conv_bias=False,
    bn_epsilon=blocks.layers.BN_EPSILON,
    pixel_mean=None,
    pixel_std=None,
    model_name=None,
):
    """Build a ResNet (or plain net) as a functional `keras.Model`.

    Args:
      name: str, ResNetSpec or dict. A name from the table ("resnet20", "plain56", "resnet50";
        see the module docstring), a spec string ("resnet20:width_multiplier=4",
        see `parse_model`), a `ResNetSpec`, or a dict of its fields.
      include_top: bool, True: average-pool, the "logits" Dense layer and a float32
        "predictions" activation; False: a headless feature extractor (keras.applications'
        meaning).
      pooling: str or None, for include_top=False only: None outputs the last stage's 4D
        feature map, "avg" / "max" global-pool it to (batch, channels).
      classifier_activation: str, callable or None, the "predictions" activation; None gives
        logits (for `from_logits=True` losses).
      input_tensor: a 4D Keras tensor to build the network on (an existing `keras.Input` or
        a layer's output); the model's inputs are then that tensor's source inputs.
      num_classes: int, classifier width; default 10 (CIFAR family) or 1000 (ImageNet).
      input_shape: (height, width, channels); default (32, 32, 3) or (224, 224, 3), or the
        shape of `input_tensor`.
      shortcut: str, "A" | "B" | "C" | "none"; default per family as in the paper
        (A for CIFAR, B for ImageNet, "none" for plain nets).
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
      model_name: str, the Keras model's name; default the table name as given, else
        "custom_resnet<depth>" ("custom_plain<depth>").

    Returns:
      A `keras.Model`. With the top its output "predictions" is float32 (batch, num_classes);
      headless, the last stage's features, pooled or not. Layer names are the same either way,
      so weights carry over by name (see docs/models.md, "Fine-tuning").

    Example:
      >>> build_model("resnet20", input_shape=(8, 8, 1)).output_shape
      (None, 10)
      >>> build_model("resnet20", input_shape=(8, 8, 1), include_top=False).output_shape
      (None, 2, 2, 64)
    """
    spec, label = _buildable_spec(name)
    _check_head(include_top, pooling, classifier_activation, num_classes)
    num_classes = spec.default_num_classes if num_classes is None else int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}.")
    with recursion_headroom(50 * spec.depth):
        features = _features(
            spec,
            label,
            input_shape=input_shape,
            input_tensor=input_tensor,
            shortcut=shortcut,
            preact=preact,
            stride_placement=stride_placement,
            weight_decay=weight_decay,
            zero_init_residual=zero_init_residual,
            sync_bn=sync_bn,
            conv_bias=conv_bias,
            bn_epsilon=bn_epsilon,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
        )
        return _head(features, preact, include_top, pooling, classifier_activation, num_classes,
                     model_name or label)  # fmt: skip


def _physical_memory():
    """This machine's memory in bytes, or None where the platform does not say (Windows)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    return memory if memory > 0 else None


def _about(number):
    """An int as a message shows it: with thousands separators, or as 2.6e15 when longer
    (a float could overflow)."""
    digits = str(number)
    return f"{number:,}" if number < 10**15 else f"{digits[0]}.{digits[1]}e{len(digits) - 1}"


def _buildable_spec(name):
    """(spec, default model name) of what `build_model` and `backbone` are asked to build;
    refuses, before any layer is made, a network whose float32 weights alone exceed this
    machine's memory: building it would run for hours or end in an allocator's OOM."""
    spec = resolve_spec(name)
    label = _label(name, spec)
    weights, have = spec.min_weights(), _physical_memory()
    need = 4 * weights
    if have is not None and need > have:
        shown = name.strip() if isinstance(name, str) else label
        raise ValueError(
            f"Model {shown!r} has at least {_about(weights)} weights "
            f"({_about(need >> 30)} GiB in float32), more than this machine's "
            f"{have / 2**30:.1f} GiB of memory; use fewer blocks (stage_blocks) or fewer filters "
            f"(stage_filters, width_multiplier)."
        )
    return spec, label


def _head(features, preact, include_top, pooling, classifier_activation, num_classes, name):
    """The model: `features`' last stage, then the post-activation, pooling and classifier."""
    settings = features.settings
    x = features.stages[-1]
    if preact:
        x = blocks.relu(blocks.bn(x, "post_bn", settings), "post_relu")
    if include_top or pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    if include_top:
        x = keras.layers.Dense(
            num_classes,
            kernel_initializer="he_normal",
            kernel_regularizer=settings.regularizer(),
            name="logits",
        )(x)
        x = keras.layers.Activation(
            classifier_activation or "linear", dtype="float32", name="predictions"
        )(x)
    return keras.Model(features.inputs, x, name=name)


def _body_defaults():
    """{argument: default} of `build_model`'s body arguments: all but the name and the head."""
    head = ("name", "model_name", "include_top", "pooling", "classifier_activation", "num_classes")
    parameters = inspect.signature(build_model).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in head}


def backbone(name, *, model_name=None, **kwargs):
    """A ResNet's stem and stages as a multi-scale feature extractor (detection, segmentation).

    Args:
      name: str, ResNetSpec or dict, as for `build_model`.
      model_name: str, the Keras model's name; default "<name>_backbone".
      **kwargs: `build_model`'s body arguments: input_shape, input_tensor, shortcut, preact,
        stride_placement, weight_decay, zero_init_residual, sync_bn, conv_bias, bn_epsilon,
        pixel_mean, pixel_std.

    Returns:
      A `keras.Model` whose output is a dict {"stage1": ..., "stage2": ..., ...} of each
      stage's last block output (keras-hub's `pyramid_outputs`; ImageNet nets' stage1-stage4
      are its P2-P5). `feature_strides(name)` gives each one's stride. Layer names are
      `build_model`'s, so a classifier's weights load by name (`.weights.h5` by structure).
      Pre-activation nets' stage outputs are the raw block sums, before the final BN-ReLU.

    Example:
      >>> features = backbone("resnet20", input_shape=(16, 16, 3))
      >>> {key: tensor.shape for key, tensor in features.output.items()}
      {'stage1': (None, 16, 16, 16), 'stage2': (None, 8, 8, 32), 'stage3': (None, 4, 4, 64)}
    """
    body = _body_defaults()
    unknown = [key for key in kwargs if key not in body]
    if unknown:
        raise ValueError(
            f"backbone() takes build_model's body arguments ({', '.join(body)}), not "
            f"{', '.join(unknown)}; it has no classifier (for a pooled feature vector: "
            f"build_model(..., include_top=False, pooling='avg'))."
        )
    spec, label = _buildable_spec(name)
    with recursion_headroom(50 * spec.depth):
        features = _features(spec, label, **{**body, **kwargs})
        outputs = {f"stage{i}": x for i, x in enumerate(features.stages, 1)}
        return keras.Model(features.inputs, outputs, name=model_name or f"{label}_backbone")


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
    """Rows (name, layers, shortcut, params, multiply-adds) for the named networks: model
    names, spec strings or specs, as `build_model` takes them."""
    rows = []
    for name in names or listed_names():
        spec = resolve_spec(name)
        size = input_size or spec.default_input_shape[0]
        stride = "v1" if spec.family == "imagenet" else "v1.5"
        model = build_model(name, input_shape=(size, size, 3), stride_placement=stride)
        label = name.strip() if isinstance(name, str) else spec.to_string()
        row = (label, spec.depth, spec.default_shortcut, count_params(model), count_flops(model))
        rows.append(row)
        keras.backend.clear_session()
    return rows


def format_table(rows):
    return markdown.table(
        ["model", "layers", "shortcut", "params", "multiply-adds"],
        [(name, d, s, f"{params:,}", f"{flops / 1e9:.3g}G") for name, d, s, params, flops in rows],
        align="lrcrr",
    )


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
