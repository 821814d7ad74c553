"""Markdown tables: the one writer behind every table tfresnet, its experiments and its
benchmarks print (the model table, tuning's results.md, the experiments' and benchmarks' tables).

    print(markdown.table(["model", "params"], [("resnet20", "272,474")], align="lr"))
"""

from collections.abc import Iterable, Sequence

ALIGNMENTS = {"l": "---", "r": "---:", "c": ":---:"}


def table(header: Sequence[str], rows: Iterable[Sequence], align: str = "") -> str:
    """A GitHub markdown table: `header`, then one line per row of cells (any values, shown with
    `str`). `align` has one letter per column, l (the default), r or c. A `|` inside a cell is
    escaped, so a cell never splits the row."""
    if len(align) > len(header) or set(align) - set(ALIGNMENTS):
        raise ValueError(f"align {align!r}: one letter per column ({len(header)}) among l, r, c.")
    align = align.ljust(len(header), "l")

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "|" + "|".join(ALIGNMENTS[a] for a in align) + "|"]
    return "\n".join([*lines, *(line(row) for row in rows)])
