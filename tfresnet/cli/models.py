"""`tfresnet models [MODEL ...]`: the model table (`models.model_table`) as markdown. Spec
strings go in as arguments (`--names` would split their commas)."""

from absl import flags

from tfresnet import markdown, models

TAKES_ARGUMENTS = True


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_list("names", None, "Models to list; default the paper's.", flag_values=fv)


def run(fv: flags.FlagValues, args: list[str]) -> int:
    print(format_table(models.model_table([*(fv.names or ()), *args] or None)))
    print(
        "\nCIFAR nets at 32x32x3 with 10 classes; ImageNet nets at 224x224x3 with 1000 classes "
        "and v1 (paper) bottleneck strides; params are trainable weights."
    )
    return 0


def format_table(rows: list[tuple[str, int, str, int, int]]) -> str:
    """`models.model_table` rows as a markdown table (params with commas, multiply-adds in G)."""
    return markdown.table(
        ["model", "layers", "shortcut", "params", "multiply-adds"],
        [(name, d, s, f"{params:,}", f"{flops / 1e9:.3g}G") for name, d, s, params, flops in rows],
        align="lrcrr",
    )
