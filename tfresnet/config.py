"""Configuration as data: each setting is a dataclass field written once, with its default, help
text, group, allowed values and check (`setting`), and validated where a config is made.

    @dataclasses.dataclass
    class TrainConfig:
        batch_size: int | None = setting(None, "Global batch size.", group="schedule",
                                         check=at_least(1))
        def __post_init__(self):
            check_fields(self)

The CLI turns these fields into flags (`tfresnet.cli.config_flags`); nothing here knows about
flags. A config is flat, its sections are each field's `group`, so a run's `config.json` is one
JSON object of field names (what every run written so far holds).
"""

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping

Check = Callable[[str, object], None]  # check(name, value) raises ValueError for a bad value
SCALARS = (bool, int, float, str)


def setting(
    default=dataclasses.MISSING,
    help: str = "",
    *,
    group: str | None = None,
    choices: Iterable | None = None,
    check: Check | None = None,
    item: type | None = None,
    default_factory=dataclasses.MISSING,
):
    """A dataclass field with its help text (`tfresnet <command> --help` shows it), the `group`
    it is listed under, the `choices` it takes, a `check` of its value and, for a field holding a
    list of values, the type of one `item`. `check_fields` applies choices and check."""
    metadata = {
        "help": help,
        "group": group,
        "choices": tuple(choices) if choices is not None else None,
        "check": check,
        "item": item,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def check_choice(name: str, value, choices: Iterable) -> None:
    """ValueError naming the allowed values unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; allowed: {', '.join(map(str, choices))}.")


def at_least(low: float, kind: str = "", *, strict: bool = False, why: str = "") -> Check:
    """A check: a finite number >= `low` (> with `strict`); the message says `kind` ("a number",
    "a count or a fraction") before the bound and `why` after it."""
    bound = f"{'>' if strict else '>='} {low}"
    words = (f"{kind} {bound}" if kind else bound) + (f" ({why})" if why else "")

    def check(name, value):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and (low < value if strict else low <= value) and value < math.inf):
            raise ValueError(f"{name} must be {words}; got {value}.")

    return check


def check_of(cls, name: str) -> Check:
    """Field `name` of dataclass `cls`'s check, for another field that holds the same value
    (TrainConfig.weight_decay is the model's ConvSettings.weight_decay)."""
    return fields_by_name(cls)[name].metadata["check"]


def check_value(cls, name: str, value) -> None:
    """Apply field `name` of dataclass `cls`'s choices and check to `value` (None passes where
    the field's default is None)."""
    field = fields_by_name(cls)[name]
    if value is None and value_type(field)[1]:
        return
    meta = field.metadata
    if meta.get("choices") is not None and meta.get("item") is None:
        check_choice(name, value, meta["choices"])
    if meta.get("check") is not None:
        meta["check"](name, value)


def check_fields(config) -> None:
    """Validate every field of the dataclass instance `config` (its `__post_init__` calls this)."""
    for field in dataclasses.fields(config):
        check_value(type(config), field.name, getattr(config, field.name))


def fields_by_name(cls) -> dict:
    return {field.name: field for field in dataclasses.fields(cls)}


def value_type(field) -> tuple[type | None, bool]:
    """(the scalar type of the field's values, whether None is allowed): `int | None` gives
    (int, True); a list field gives its `item` type; a nested dataclass or other type, None."""
    hint = field.type
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    optional = type(None) in args or field.default is None
    if field.metadata.get("item") is not None:
        return field.metadata["item"], optional
    scalars = [a for a in args if a in SCALARS]
    return (scalars[0] if len(scalars) == 1 else None), optional


def from_dict(cls, values: Mapping, source: str) -> dict:
    """The field values of `cls` that the JSON object `values` (read from `source`) holds,
    with ints where floats are due made floats; ValueError for a key that is no field or a
    value of the wrong type, naming `source`."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{source} must hold a JSON object of settings; got {type(values)}.")
    known = fields_by_name(cls)
    out = {}
    for name, value in values.items():
        if name not in known:
            raise ValueError(
                f"{source}: {name!r} is not a {cls.__name__} setting; allowed: {', '.join(known)}."
            )
        kind, optional = value_type(known[name])
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        fits = (value is None and optional) or kind is None or type(value) is kind
        if not fits:
            raise ValueError(
                f"{source}: {name} must be {'null or ' if optional else ''}a JSON "
                f"{kind.__name__}; got {value!r}."
            )
        out[name] = value
    return out
