"""experiments/README.md opens with the claims table, and every number in it is its source's.

The table is generated from the committed runs (`python -m experiments.claims`); the page must
hold exactly that table, so a number edited by hand, or a committed result that changes under
it, fails here until the table is generated again (`python -m experiments.claims --write`).
"""

import pytest

from experiments import claims


def _page_table(lines):
    start = lines.index(claims.HEADER)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return start, lines[start:end]


def test_the_page_opens_with_the_claims_table_generated_from_the_committed_runs():
    with open(claims.PAGE) as f:
        lines = f.read().split("\n")
    start, table = _page_table(lines)
    assert table == claims.claims_table().split("\n")  # pytest shows the rows that differ
    headings = [line for line in lines[:start] if line.startswith("#")]
    assert headings == [
        "# Experiments: the paper's findings, re-run",
        "## Every claim, and whether it is reproduced",
    ]


def test_writing_the_table_replaces_only_the_table():
    page = f"# Title\n\ntext\n\n{claims.HEADER}\n|---|---|---|\n| a | b | c |\n\nafter\n"
    new = claims.HEADER + "\n|---|---|---|\n| x | y | z |\n| u | v | w |"
    assert claims.replace_table(page, new) == page.replace(
        "| a | b | c |", "| x | y | z |\n| u | v | w |"
    )
    with pytest.raises(ValueError, match="no claims table"):
        claims.replace_table("# no table\n", new)
