"""The ResNet family as data: the table of named networks and `ResNetSpec` (He et al. 2015,
Table 1 and Sec. 4.2); `models.build_model` turns a spec into a Keras model.

Names: `resnet<d>` / `plain<d>` with d an ImageNet depth (18, 34, 50, 101, 152, 200) or any CIFAR
depth 6n+2; `cifar_resnet<d>` / `cifar_plain<d>` force the CIFAR family. A spec string
(`parse_model("resnet20:width_multiplier=4")`) describes any other ResNet.
"""

import dataclasses
import functools
import math
import numbers
import re

import numpy as np

from tfresnet import blocks, config
from tfresnet.config import check_choice

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


def _positive_ints(what, values):
    """`values` as a non-empty tuple of ints >= 1, or a ValueError quoting them."""
    items = tuple(values) if isinstance(values, (tuple, list)) else ()
    if not items or not all(map(blocks.is_positive_int, items)):
        raise ValueError(f"{what} must be a non-empty sequence of ints >= 1; got {values!r}.")
    return tuple(int(v) for v in items)


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """Architecture of one network: everything but the training and input choices.

    Fields left None take the family's values, so equal networks have equal specs.

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
    stage_blocks: tuple[int, ...]
    residual: bool = True
    stage_filters: tuple[int, ...] | None = None
    stem: str | None = None
    stem_filters: int | None = None

    def __post_init__(self):
        set_field = functools.partial(object.__setattr__, self)
        check_choice("family", self.family, FAMILIES)
        check_choice("block", self.block, tuple(blocks.BLOCKS))
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
        check_choice("stem", self.stem, tuple(STEMS))
        if self.stem_filters is None:
            set_field("stem_filters", self.stage_filters[0])
        set_field("stem_filters", _positive_ints("stem_filters", [self.stem_filters])[0])

    @property
    def depth(self) -> int:
        convs = 3 if self.block == "bottleneck" else 2
        return convs * sum(self.stage_blocks) + 2

    @property
    def default_shortcut(self) -> str:
        """The paper's: option A on CIFAR (Sec. 4.2), B on ImageNet (Table 3/4); plain: none."""
        return ("A" if self.family == "cifar" else "B") if self.residual else "none"

    @property
    def default_input_shape(self) -> tuple[int, int, int]:
        return (32, 32, 3) if self.family == "cifar" else (224, 224, 3)

    @property
    def default_num_classes(self) -> int:
        return 10 if self.family == "cifar" else 1000

    @property
    def feature_strides(self) -> dict[str, int]:
        """{"stage1": stride, ...}: each stage output's downsampling of the input."""
        stem = STEMS[self.stem]
        return {f"stage{i}": stem * 2 ** (i - 1) for i in range(1, len(self.stage_blocks) + 1)}

    @property
    def min_input_size(self) -> int:
        return self.feature_strides[f"stage{len(self.stage_blocks)}"]  # total downsampling

    def min_weights(self) -> int:
        """A lower bound on the weight count (the stages' main-path conv kernels alone), known
        before building."""
        bottleneck = self.block == "bottleneck"

        def block(cin, f):  # 1x1-3x3-1x1 (4x expansion) or two 3x3 convs
            return cin * f + 9 * f * f + 4 * f * f if bottleneck else 9 * (cin * f + f * f)

        total, channels = 0, self.stem_filters
        for count, filters in zip(self.stage_blocks, self.stage_filters, strict=True):
            out = 4 * filters if bottleneck else filters
            total += block(channels, filters) + (count - 1) * block(out, filters)
            channels = out
        return total

    def widened(self, multiplier: float) -> "ResNetSpec":
        """This spec with every stage's filters times `multiplier` (Wide ResNets' k; the stem
        keeps its filters)."""
        number = isinstance(multiplier, numbers.Real) and not isinstance(multiplier, bool)
        if not number or not 0 < multiplier < float("inf"):
            raise ValueError(f"width multiplier must be a number > 0; got {multiplier!r}.")
        scaled = [f * multiplier for f in self.stage_filters]
        if not all(math.isfinite(f) for f in scaled):
            raise ValueError(f"width multiplier {multiplier!r} makes the filter counts infinite.")
        filters = tuple(max(1, round(f)) for f in scaled)
        return dataclasses.replace(self, stage_filters=filters)

    def table_name(self) -> str | None:
        """The network's name in the table (`get_spec(name) == self`), or None."""
        kind = "resnet" if self.residual else "plain"
        for name in (f"{kind}{self.depth}", f"cifar_{kind}{self.depth}"):
            try:
                if get_spec(name) == self:
                    return name
            except ValueError:
                continue
        return None

    def to_string(self) -> str:
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


_NAME = re.compile(r"^(cifar_)?(resnet|plain)(\d+)$")


def listed_names() -> list[str]:
    """The networks named in the paper (what `tfresnet models` shows and the tests cover)."""
    names = [f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)]  # CIFAR, Table 6
    names += [f"plain{d}" for d in (20, 32, 44, 56, 110)]  # CIFAR, Fig. 6
    return names + [f"resnet{d}" for d in IMAGENET_DEPTHS] + ["plain18", "plain34"]


def canonical_name(text: str) -> str | None:
    """`text` as the table spells names (" ResNet20" -> "resnet20") if it has a name's form
    (resnet<d>, plain<d>, cifar_resnet<d>, cifar_plain<d>), else None."""
    text = str(text).strip().lower()
    return text if _NAME.match(text) else None


def get_spec(name: str) -> ResNetSpec:
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
        return ResNetSpec("imagenet", *IMAGENET_DEPTHS[depth], residual)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"Model {name!r}: CIFAR-style depth must be 6n+2 with n >= 1 (8, 14, 20, 26, 32, ...), "
            f"and ImageNet depths are {sorted(IMAGENET_DEPTHS)}; got depth {depth}."
        )
    n = (depth - 2) // 6  # the paper's CIFAR nets: three stages of n basic blocks
    return ResNetSpec("cifar", "basic", (n, n, n), residual)


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


def parse_model(text: str) -> ResNetSpec:
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


def resolve_spec(name: str | ResNetSpec | dict) -> ResNetSpec:
    """The spec of `name`: a model name or spec string (`parse_model`), a ResNetSpec, or a
    dict of ResNetSpec fields (`dataclasses.asdict(spec)`, e.g. read back from JSON)."""
    if isinstance(name, ResNetSpec):
        return name
    if isinstance(name, dict):
        plain = {k: v.item() if isinstance(v, np.generic) else v for k, v in name.items()}
        return ResNetSpec(**config.from_dict(ResNetSpec, plain, "model spec"))
    if isinstance(name, str):
        return parse_model(name)
    raise ValueError(
        f"A model is a name or spec string, a ResNetSpec or a dict of its fields; got "
        f"{type(name).__name__} {name!r}."
    )


def feature_strides(name: str | ResNetSpec | dict) -> dict[str, int]:
    """{"stage1": stride, ...}: how much each stage output of `backbone(name)` is downsampled
    (an ImageNet net's 4, 8, 16, 32 are FPN's P2-P5).

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
