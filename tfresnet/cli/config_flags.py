"""Absl flags generated from a config dataclass's fields (`tfresnet.config.setting`): one flag
per field, of its name, type, default, choices and help, listed under its group in `--help`.

ml_collections' `config_flags` would name them `--config.epochs` and check no choices; users
type `--epochs` and read absl's "value should be one of <...>", so the flags are made here.
"""

import dataclasses
from collections.abc import Iterable, Mapping

from absl import flags

from tfresnet import config as config_lib
from tfresnet import files

CONFIG_FILE_FLAG = "config"


class ListOf(flags.ListParser):
    """A comma-separated list flag whose items absl's `item` parser converts and checks."""

    def __init__(self, item):
        super().__init__()
        self.item = item

    def parse(self, argument):
        return [self.item.parse(value) for value in super().parse(argument)]

    def flag_type(self):
        return f"list of {self.item.flag_type()}"


def _item_parser(kind, choices):
    if choices is not None:
        return flags.EnumParser(choices)
    return {
        bool: flags.BooleanParser,
        int: flags.IntegerParser,
        float: flags.FloatParser,
        str: flags.ArgumentParser,
    }[kind]()


def flag_names(cls, *, names: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list:
    """The fields of dataclass `cls` that are flags (those in `names`, default all, less
    `exclude`): every field but one holding another dataclass (TuneConfig.train, .space)."""
    wanted = set(names) if names is not None else None
    return [
        field.name
        for field in dataclasses.fields(cls)
        if field.name not in exclude
        and (wanted is None or field.name in wanted)
        and (config_lib.value_type(field)[0] is not None or field.metadata.get("choices"))
    ]


def define_flags(
    fv: flags.FlagValues,
    cls,
    *,
    names: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    defaults: Mapping | None = None,
) -> list[str]:
    """Define a flag on `fv` for each of `flag_names(cls, names=, exclude=)`: its type, choices,
    help and group are the field's, its default the field's or `defaults[name]`; a field with an
    `item` type is a list flag. Returns the names."""
    defaults = defaults or {}
    fields = config_lib.fields_by_name(cls)
    defined = flag_names(cls, names=names, exclude=exclude)
    for name in defined:
        field = fields[name]
        kind, _ = config_lib.value_type(field)
        meta = field.metadata
        choices = meta.get("choices")
        default = defaults[name] if name in defaults else _default(field)
        common = dict(flag_values=fv, module_name=meta.get("group") or cls.__name__)
        help_text = meta.get("help") or name
        if meta.get("item") is not None:
            flags.DEFINE(
                ListOf(_item_parser(kind, choices)),
                name,
                default,
                f"{help_text} (a comma separated list)",
                serializer=flags.CsvListSerializer(","),
                **common,
            )
        elif choices is not None:
            flags.DEFINE_enum(name, default, choices, help_text, **common)
        elif kind is bool:
            flags.DEFINE_bool(name, default, help_text, **common)
        else:  # int, float, str: what absl's DEFINE_integer, _float and _string call
            parser, serializer = _item_parser(kind, None), flags.ArgumentSerializer()
            flags.DEFINE(parser, name, default, help_text, serializer=serializer, **common)
    return defined


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def define_config_file_flag(fv: flags.FlagValues, what: str) -> None:
    """`--config=PATH`: start from a saved config (`what`); flags given override its fields."""
    flags.DEFINE_string(
        CONFIG_FILE_FLAG,
        None,
        f"A saved {what} to start from (a run directory's config.json); flags given on the "
        "command line override its settings.",
        flag_values=fv,
        module_name="config file",
    )


def values_from_flags(
    fv: flags.FlagValues, names: Iterable[str], cls=None, *, not_saved: Iterable[str] = ()
) -> dict:
    """{name: value} of the flags `names`. With `--config` given (and `cls`, the dataclass the
    file holds), the file's settings less `not_saved` (what one command asks, such as
    --overwrite, is not taken from another's config), replaced by the flags given."""
    path = fv[CONFIG_FILE_FLAG].value if CONFIG_FILE_FLAG in fv else None
    if not path:
        return {name: fv[name].value for name in names}
    if not files.exists(path):
        raise ValueError(f"--config file {path!r} does not exist (give a run's config.json).")
    try:
        saved = files.read_json(path)
    except files.CorruptFile as err:
        raise files.CorruptFile(f"--config: {err}.") from err
    values = config_lib.from_dict(cls, saved, f"--config file {path!r}")
    values = {name: value for name, value in values.items() if name not in not_saved}
    values.update({name: fv[name].value for name in names if fv[name].present})
    return values
