import pytest

from tfresnet import markdown


def test_a_table_has_its_header_alignment_and_rows_with_pipes_escaped():
    text = markdown.table(["name", "n", "mid"], [("a|b", 1, "x"), ("c", 2.5, None)], align="lrc")
    assert text.splitlines() == [
        "| name | n | mid |",
        "|---|---:|:---:|",
        "| a\\|b | 1 | x |",  # the pipe stays inside its cell
        "| c | 2.5 | None |",
    ]
    assert markdown.table(["a", "b"], [], align="r").splitlines()[1] == "|---:|---|"  # then l


@pytest.mark.parametrize("align", ["lrx", "lrrr"])
def test_an_alignment_that_does_not_fit_the_columns_is_refused(align):
    with pytest.raises(ValueError, match="one letter per column \\(3\\) among l, r, c"):
        markdown.table(["a", "b", "c"], [], align=align)
