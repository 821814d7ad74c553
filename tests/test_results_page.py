"""experiments/README.md opens with the claims table, and every number in it is its source's.

The table is generated from the committed runs (`python -m experiments.claims`); the page must
hold exactly that table, so a number edited by hand, or a committed result that changes under
it, fails here until the table is generated again (`python -m experiments.claims --write`).
"""

import json
import shutil

import numpy as np
import pytest

from experiments import claims, common


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


def _row(table: str, claim: str) -> str:
    return next(line for line in table.split("\n") if line.startswith(f"| {claim}"))


def _mean_of(values) -> str:
    return f"{np.mean(values):.2f}% (mean of {values[0]:.2f} and {values[1]:.2f}%)"


def test_resnet56s_second_seed_at_the_whole_schedule_enters_the_depth_claim_as_it_lands(tmp_path):
    """When ResNet-56's seed-1 run (still training) commits its results.json, generating the table
    again states the depth claim on 2 seeds of each net: each net's mean and both seeds' values."""
    results = tmp_path / "results"
    shutil.copytree(common.DEFAULT_RESULTS_DIR, results, ignore=shutil.ignore_patterns("smoke"))
    depth = results / "depth"
    run = json.loads((depth / "resnet56-fashion_mnist-b1-bf16-seed0/results.json").read_text())
    run["final"].update(train_error=0.0151, test_error=0.0512)  # a made-up seed 1
    run["config"]["seed"] = 1
    seed1 = depth / "resnet56-fashion_mnist-b1-bf16-seed1"
    seed1.mkdir(exist_ok=True)
    (seed1 / "results.json").write_text(json.dumps(run))
    runs = {
        (d, seed): json.loads(
            (depth / f"resnet{d}-fashion_mnist-b1-bf16-seed{seed}/results.json").read_text()
        )
        for d in (20, 56)
        for seed in (0, 1)
    }
    final = {
        (d, key): [100 * runs[d, seed]["final"][key] for seed in (0, 1)]
        for d in (20, 56)
        for key in ("train_error", "test_error")
    }
    table = claims.claims_table(str(results))
    row = _row(table, "ResNet-56 no worse than ResNet-20")
    train_gap = np.mean(final[56, "train_error"]) - np.mean(final[20, "train_error"])
    test_gap = np.mean(final[56, "test_error"]) - np.mean(final[20, "test_error"])
    assert (
        f"whole schedule: training error {_mean_of(final[56, 'train_error'])} vs "
        f"{_mean_of(final[20, 'train_error'])}, test error {_mean_of(final[56, 'test_error'])} vs "
        f"{_mean_of(final[20, 'test_error'])} "
    ) in row
    assert (
        "**reproduced** in training error at the paper's whole schedule, on **2 seeds of each**: "
        f"ResNet-56's mean ends {-train_gap:.2f} points below ResNet-20's mean"
    ) in row
    assert f"{train_gap:+.2f} at 1 (means of 2 seeds of each;" in row
    spreads = [max(final[d, "train_error"]) - min(final[d, "train_error"]) for d in (20, 56)]
    assert (
        f"ResNet-20's seeds differ by {spreads[0]:.2f} points and ResNet-56's by {spreads[1]:.2f} "
        "of training error"
    ) in row
    assert f"ResNet-56's mean {-test_gap:.2f} points below ResNet-20's mean" in row
    assert "running" not in row and "budget 0.1 differ" not in row
    falls = _row(table, "Error falls with depth")
    assert (
        "(20 and 56 only, 2 seeds of each) ResNet-56's test error, averaged over seeds, is "
        f"{-test_gap:.2f} points below ResNet-20's" in falls
    )
