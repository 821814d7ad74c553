"""benchmarks/time_to_accuracy.py: its commands (the recipe, each trick off), what it reads from
a run (the first epoch over the target, the medians), its tables, its refusals, and one real
1-epoch run on the embedded digits, as a whole `tfresnet train` process."""

import json

import pytest

from benchmarks import time_to_accuracy as tta

SMOKE = [
    "--dataset=digits",
    "--model=cifar_resnet8",
    "--seeds=0",
    "--validation_size=100",
    "--target=0.01",
    "--train_flags=--epochs=1 --noexport --batch_size=64",
]


def test_ablation_runs_the_recipe_then_each_trick_set_back_to_the_papers(capsys):
    argv = [
        "--dry_run",
        "--ablate",
        "--seeds=0,1",
        "--output_dir=x",
        "--variant=ema=--ema_momentum=0.9",
    ]
    assert tta.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split(":")[0] for line in lines]
    assert names == [
        name
        for name in (
            "recipe",
            "no zero_init_residual",
            "no label_smoothing",
            "no lr_schedule",
            "no warmup_epochs",
            "no nesterov",
            "no test_flip",
            "no batch_size",
            "no weight_decay",
            "ema",
        )
        for _ in (0, 1)
    ]
    assert lines[0].endswith(
        "-m tfresnet.cli train --dataset=fashion_mnist --model=resnet20 --recipe=fast --seed=0 "
        "--validation_size=5000 '--run_dir=<temporary>' --verbose=2"
    )
    assert lines[2].endswith("--verbose=2 --nozero_init_residual")
    assert lines[7].endswith(
        "--seed=1 --validation_size=5000 '--run_dir=<temporary>' --verbose=2 --lr_schedule=steps"
    )
    assert lines[14].endswith("--batch_size=128") and lines[-1].endswith("--ema_momentum=0.9")


def test_first_crossing_medians_and_tables():
    assert tta.first_crossing([0.5, None, 0.93, 0.94, 0.95], 0.94) == 4
    assert tta.first_crossing([0.5, 0.6], 0.94) is None
    runs = [
        dict(variant="recipe", flags=[], seed=s, wall_s=w, train_s=w - 10, test_accuracy=a,
             val_accuracy=a, epochs=8, target_epoch=e, target_elapsed_s=t, load1_before=1.0,
             load1_during_mean=2.0)
        for s, w, a, e, t in ((0, 100.0, 0.9, 5, 60.0), (1, 120.0, 0.92, None, None),
                              (2, 110.0, 0.91, 7, 80.0))
    ]  # fmt: skip
    (summary,) = tta.medians(runs)
    assert summary["wall_s"] == 110.0 and summary["test_accuracy"] == pytest.approx(0.91)
    assert summary["target_epoch"] == 6 and summary["target_elapsed_s"] == 70.0
    assert summary["reached_target"] == 2 and summary["runs"] == 3
    report = dict(
        model="m", dataset="d", recipe="fast", date="today", machine="a CPU", command="c",
        validation_size=5000, target=0.94, runs=runs, medians=[summary],
    )  # fmt: skip
    text = tta.tables(report)
    assert "| recipe | - | 3 | 110.0 | 100.0 | 91.00 | 91.00 | 6 | 70.0 | 2/3 |" in text
    assert "| recipe | 1 | 120.0 | 110.0 | 8 | 92.00 | 92.00 | - | - | 1.0 | 2.0 |" in text
    assert "today, a CPU" in text and "5000 training images held out" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dry_run"], "--output_dir is required"),
        (["--output_dir=x", "--target=2"], "--target must be a validation accuracy in (0, 1]"),
        (["--output_dir=x", "--validation_size=0"], "--validation_size must be > 0"),
        (["--output_dir=x", "--recipe=slow"], "Unknown recipe 'slow'; allowed: cifar"),
        (["--output_dir=x", "--variant=ema"], "--variant must be NAME=FLAGS; got 'ema'"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(argv, message, capsys):
    assert tta.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_one_epoch_on_digits_reports_each_seed(tmp_path):
    out = tmp_path / "out"
    assert tta.main([*SMOKE, "--recipe=fast", f"--output_dir={out}"]) == 0
    report = json.loads((out / "results.json").read_text())
    (run,) = report["runs"]
    assert run["returncode"] == 0 and run["epochs"] == 1 and run["seed"] == 0
    assert 0 < run["train_s"] < run["wall_s"]
    assert 0 <= run["test_accuracy"] <= 1 and 0 <= run["val_accuracy"] <= 1
    assert run["target_epoch"] == 1 and 0 < run["target_elapsed_s"] <= run["wall_s"]
    assert run["load1_before"] >= 0 and run["load1_during_max"] >= run["load1_during_mean"]
    assert report["machine"] and report["medians"][0]["runs"] == 1
    saved = json.loads((out / "runs" / "recipe-seed0" / "results.json").read_text())
    assert saved["recipe"]["name"] == "fast" and saved["data"]["sizes"]["validation"] == 100
    assert 1 - saved["final"]["test_error"] == pytest.approx(run["test_accuracy"])
    assert (out / "runs" / "recipe-seed0" / "history.csv").is_file()
    assert "| recipe | - | 1 |" in (out / "results.md").read_text()
