"""Tests for tfresnet.tuning: the space, the four tuners, failures, resume, distributed search.

Real trials train cifar_resnet8/14 on the embedded 8x8 digits for one epoch (`steps=2` rounds
up to one epoch of 20 batches of 64). Tests of the bookkeeping alone (retries, resume) replace
`ResNetHyperModel.fit` with an instant fake, so they only pay for building the models.
"""

import csv
import io
import itertools
import json
import os
import socket
import subprocess
import sys
import uuid

import keras
import pytest

from tfresnet import cli, compat, rundir, tune_config, tuners, tuning
from tfresnet import train as train_lib
from tfresnet.train import TrainConfig
from tfresnet.tuning import SearchSpace, TuneConfig

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TIMEOUT_S = 300  # one subprocess search; a cold TF import alone takes ~15 s on 2 busy cores
FIXED = dict(preact=None, learning_rate=None, weight_decay=None)  # the recipe's


def _train(**kwargs):
    values = dict(dataset="digits", steps=2, batch_size=64, validation_size=0.1, verbose=0)
    values.update(kwargs)
    return TrainConfig(**values)


def _tune(tmp_path, space, **kwargs):
    train_kwargs = {"export": False, **kwargs.pop("train", {})}
    values = dict(directory=str(tmp_path / "search"), evaluate_best=False)
    values.update(kwargs)
    return TuneConfig(_train(**train_kwargs), space=space, **values)


def _attempts(search_dir):
    """trial id -> the attempt records of that trial."""
    out = {}
    for name in sorted(os.listdir(search_dir)):
        path = os.path.join(search_dir, name, "attempts.jsonl")
        if name.startswith("trial_") and os.path.exists(path):
            with open(path) as f:
                out[name[len("trial_") :]] = [json.loads(line) for line in f]
    return out


def _trial_values(search_dir):
    """trial id -> hyperparameter values, read from KerasTuner's trial.json files."""
    out = {}
    for name in sorted(os.listdir(search_dir)):
        path = os.path.join(search_dir, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(path):
            with open(path) as f:
                trial = json.load(f)
            out[trial["trial_id"]] = (trial["status"], trial["hyperparameters"]["values"])
    return out


@pytest.fixture
def fake_fit(monkeypatch):
    """Replace training by an instant fit; `calls` lists (trial run dir, hp values)."""
    calls = []
    failures = {}  # shortcut -> exception class to raise

    def fit(self, hp, model, *args, run_dir=None, **kwargs):
        calls.append((run_dir, dict(hp.values)))
        if hp.values.get("shortcut") in failures:
            raise failures[hp.values["shortcut"]](f"boom in {hp.values['shortcut']}")
        return {"val_accuracy": 0.5 + 0.01 * hp.values["depth"], "val_loss": 1.0}

    monkeypatch.setattr(tuners.ResNetHyperModel, "fit", fit)
    fit.calls, fit.failures = calls, failures
    return fit


# --------------------------------------------------------------------------
# The space and the configuration (no training)
# --------------------------------------------------------------------------


def test_default_spaces_are_the_paper_grid_and_the_whole_space():
    grid = tune_config.default_space("grid")
    assert grid.shortcut == ("A", "B", "C", "none")
    assert grid.preact is grid.learning_rate is grid.weight_decay is None
    assert grid.depths("cifar") == (20, 32, 44, 56, 110)
    assert grid.depths("imagenet") == (18, 34, 50, 101, 152)
    assert grid.grid_size("cifar") == 5 * 4
    full = tune_config.default_space("random")
    assert full.preact == (False, True) and len(full.learning_rate) == 3
    assert full.grid_size("cifar") == 5 * 4 * 2 * 3 * 2


def test_space_takes_single_values_as_fixed_and_checks_them():
    space = SearchSpace(depth=26, shortcut="B", preact=False, learning_rate=1, weight_decay=0)
    assert space.depth == (26,) and space.shortcut == ("B",) and space.learning_rate == (1.0,)
    assert space.grid_size("cifar") == 1
    with pytest.raises(ValueError, match=r"6n\+2"):
        SearchSpace(depth=(20, 21), family="cifar")
    with pytest.raises(ValueError, match=r"\[18, 34, 50, 101, 152, 200\]"):
        SearchSpace(depth=20, family="imagenet")
    with pytest.raises(ValueError, match="allowed: A, B, C, none"):
        SearchSpace(shortcut=("A", "D"))
    with pytest.raises(ValueError, match="preact values must be bools"):
        SearchSpace(preact=(0, 1))
    with pytest.raises(ValueError, match="twice"):
        SearchSpace(depth=(20, 20))
    with pytest.raises(ValueError, match="allowed: cifar, imagenet"):
        SearchSpace(family="mnist")
    # Each value is checked by the TrainConfig field it becomes: the same words as `train`'s.
    for field, bad in (("learning_rate", (0.1, float("nan"))), ("weight_decay", float("inf"))):
        with pytest.raises(ValueError) as space_error:
            SearchSpace(**{field: bad})
        with pytest.raises(ValueError) as train_error:
            TrainConfig(**{field: bad[-1] if isinstance(bad, tuple) else bad})
        assert str(space_error.value) == str(train_error.value)
        assert str(space_error.value).startswith(f"{field} must be a number")


def test_model_names_force_the_family():
    assert tune_config.model_name("cifar", 50, "A") == "cifar_resnet50"  # 6*8+2, not ImageNet's 50
    assert tune_config.model_name("cifar", 56, "none") == "cifar_plain56"
    assert tune_config.model_name("imagenet", 50, "B") == "resnet50"
    assert tune_config.model_name("imagenet", 34, "none") == "plain34"


def test_tune_config_refuses_selection_without_validation_and_bad_options(tmp_path):
    with pytest.raises(ValueError, match="validation split"):
        TuneConfig(_train(validation_size=0))
    with pytest.raises(ValueError, match="allowed: random, hyperband, bayesian, grid"):
        TuneConfig(_train(), tuner="sgd")
    with pytest.raises(ValueError, match="epochs"):
        TuneConfig(_train(steps=4), tuner="hyperband")
    with pytest.raises(ValueError, match="a trial logs accuracy, loss, top5_accuracy, val_acc"):
        TuneConfig(_train(), objective="val_f1:max")  # not a metric a trial logs
    with pytest.raises(ValueError, match="val_loss:max or val_loss:min"):
        TuneConfig(_train(), objective="val_loss:up")
    with pytest.raises(ValueError, match="hyperband_factor must be >= 2"):
        TuneConfig(_train(), tuner="hyperband", hyperband_factor=1)
    with pytest.raises(ValueError, match="bayesian_initial_points must be >= 1"):
        TuneConfig(_train(), tuner="bayesian", bayesian_initial_points=0)
    assert tune_config.make_objective("val_accuracy:min").direction == "min"
    assert tune_config.make_objective("val_top5_accuracy").direction == "max"
    assert tune_config.make_objective("val_loss").direction == "min"
    assert tune_config.make_objective("weight_decay_loss").direction == "min"
    with pytest.raises(ValueError, match="a trial logs"):
        tune_config.make_objective("val_weight_decay_loss")  # no validation counterpart
    config = TuneConfig(_train(), tuner="grid")
    assert config.space == tune_config.PAPER_GRID
    assert config.directory == os.path.join("runs", "tune-grid-digits")


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--epochs=0", "epochs must be between 1 and 2,147,483,647; got 0."),
        ("--epochs=10000000000000000000", "epochs must be between 1 and 2,147,483,647; got 1"),
        ("--steps=-1", "steps must be between 1"),
        ("--budget=nan", "budget must be > 0"),
        ("--directory=", "directory is empty: give a folder path (it is made if missing), or"),
    ],
)
def test_tune_flags_are_refused_as_trains_are_before_any_trial(
    tmp_path, fake_fit, capsys, flag, message
):
    argv = ["tfresnet", "tune", "--tuner=grid", "--depth=8", "--shortcut=A", "--verbose=0"]
    argv += [f"--directory={tmp_path / 'search'}", flag]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert fake_fit.calls == [] and not (tmp_path / "search").exists()


def test_cli_flags_fill_the_space_and_keep_the_rest_of_the_default():
    from absl import flags

    from tfresnet.cli import tune as tune_cli

    fv = flags.FlagValues()
    tune_cli.define_flags(fv)
    fv(["tune", "--tuner=grid", "--depth=20,56", "--shortcut=A,B,C,none", "--preact=false"])
    config = tune_cli.config_from_flags(fv)
    assert config.space == SearchSpace(
        depth=(20, 56),
        shortcut=("A", "B", "C", "none"),
        preact=False,
        learning_rate=None,
        weight_decay=None,
    )
    assert config.train.validation_size == 0.1 and config.tuner == "grid"
    assert config.train.shortcut is None and config.train.preact is False  # the space's lists
    assert "model" not in fv and "resume" not in fv and "run_dir" not in fv
    fv.unparse_flags()
    fv(["tune", "--learning_rate=0.1,2e-1", "--weight_decay=0"])
    assert tune_cli.space_from_flags(fv).learning_rate == (0.1, 0.2)
    fv.unparse_flags()
    fv(["tune", "--shortcut="])  # an empty list is a mistake, not "the default"
    with pytest.raises(ValueError, match="shortcut: give at least one value"):
        tune_cli.space_from_flags(fv)
    for bad in ("--preact=maybe", "--depth=20,x", "--shortcut=A,D", "--learning_rate=fast"):
        with pytest.raises(flags.IllegalFlagValueError, match=bad.split("=")[0]):
            fv(["tune", bad])


# --------------------------------------------------------------------------
# Real searches
# --------------------------------------------------------------------------


@pytest.mark.slow  # the ram:// search below runs a real grid, its selection and export by default
def test_grid_covers_exactly_the_declared_space_and_exports_the_best(tmp_path):
    space = SearchSpace(depth=(8, 14), shortcut=("A", "none"), **FIXED)
    config = _tune(tmp_path, space, tuner="grid", evaluate_best=True, train={"export": True})
    results = tuning.search(config)

    trials = results["trials"]
    assert [(r["depth"], r["shortcut"]) for r in trials] == list(
        itertools.product((8, 14), ("A", "none"))
    )
    assert [r["model"] for r in trials] == [
        "cifar_resnet8",
        "cifar_plain8",
        "cifar_resnet14",
        "cifar_plain14",
    ]
    assert {r["status"] for r in trials} == {"COMPLETED"}
    recorded = _trial_values(tmp_path / "search")  # KerasTuner's own trial.json records
    assert sorted((v["depth"], v["shortcut"]) for _, v in recorded.values()) == sorted(
        itertools.product((8, 14), ("A", "none"))
    )
    # Option A adds no parameters: each residual net has exactly its plain net's count.
    assert trials[0]["params"] == trials[1]["params"] == 75_290 - 2 * 9 * 16
    assert trials[2]["params"] == trials[3]["params"] > trials[0]["params"]
    assert all(r["learning_rate"] == pytest.approx(0.05) for r in trials)  # 0.1 x 64/128
    assert all(r["weight_decay"] == pytest.approx(1e-4) and r["epochs"] == 1 for r in trials)
    assert all(0.0 <= r["val_error"] <= 1.0 for r in trials)

    # Selection used validation only: trials never evaluated the test set.
    for row in trials:
        with open(os.path.join(row["run_dir"], "results.json")) as f:
            run = json.load(f)
        assert run["final"]["test_error"] is None and run["curves"]["test_error"] == []
        assert run["data"]["sizes"] == {"train": 1294, "validation": 144, "test": 359}
    best = results["best"]
    assert best["val_error"] == min(r["val_error"] for r in trials)
    assert 0.0 <= best["test_error"] <= 1.0
    assert [r["trial"] for r in trials if r["test_error"] is not None] == [best["trial"]]
    assert os.path.isfile(os.path.join(best["export"], "saved_model.pb"))
    assert os.path.basename(os.path.dirname(best["export"])) == best["model"]

    search_dir = tmp_path / "search"
    with open(search_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == [r["model"] for r in trials]
    assert list(rows[0]) == list(tuning.RESULTS_COLUMNS)
    assert json.loads((search_dir / "results.json").read_text())["best"]["trial"] == best["trial"]
    table = (search_dir / "results.md").read_text()
    assert table.count("| COMPLETED |") == 4 and "(best)" in table
    assert all(len(a) == 1 for a in _attempts(search_dir).values())
    # Everything the search wrote is listed as ours: --overwrite may start it again.
    assert rundir.foreign_entries(str(search_dir), rundir.SEARCH_LAYOUT) == []


def _live_train_step_graphs():
    """Traced train/test steps alive in this process (Keras names them one_step_on_data)."""
    import gc

    from tensorflow.python.framework import func_graph

    gc.collect()
    return sum(
        isinstance(o, func_graph.FuncGraph) and o.name.startswith("one_step_on_data")
        for o in gc.get_objects()
    )


def test_a_search_of_budgeted_trials_keeps_their_reports_and_no_graph_of_them(tmp_path):
    """One real two-trial grid (one test, so xdist never makes it twice), whose trials each
    spend their time budget in their first of 3 epochs: each stops at the end of that epoch,
    evaluated and saved as a finished run; a finished trial keeps its report, and only the best
    its model; and each trial's traced steps go with it (TF's custom-gradient registry pinned
    them, about 9 MB a cifar_resnet8 trial; see compat)."""
    before = _live_train_step_graphs()
    space = SearchSpace(depth=8, shortcut=("A", "none"), **FIXED)
    config = _tune(
        tmp_path, space, tuner="grid", trial_time_budget=1e-3, train={"steps": None, "epochs": 3}
    )
    results = tuning.search(config)
    assert _live_train_step_graphs() == before
    assert results["counts"] == {"COMPLETED": 2}
    best = results["best"]["trial"]
    for row in results["trials"]:
        assert row["status"] == "COMPLETED"
        assert (row["epochs"], row["planned_epochs"]) == (1, 3)
        history = rundir.read_history(os.path.join(row["run_dir"], "history.csv"))
        assert len(history["trial_seconds"]) == 1 and history["trial_seconds"][0] > 1e-3
        assert rundir.finished(row["run_dir"])
        kept = sorted(os.listdir(row["run_dir"]))
        report = ["config.json", "history.csv", "logs", "results.json"]
        assert kept == sorted(report + (["model.keras"] if row["trial"] == best else []))
        trial_dir = os.path.dirname(row["run_dir"])
        assert not os.path.exists(os.path.join(trial_dir, "checkpoint.weights.h5"))
    table = (tmp_path / "search" / "results.md").read_text()
    assert table.count("| 1 of 3 (time budget) |") == 2


def test_time_to_accuracy_is_the_objective_and_the_trials_score(tmp_path):
    space = SearchSpace(depth=8, shortcut="A", **FIXED)
    config = _tune(tmp_path, space, tuner="grid", objective="time_to:0.05", trial_time_budget=600)
    results = tuning.search(config)
    (row,) = results["trials"]
    history = rundir.read_history(os.path.join(row["run_dir"], "history.csv"))
    assert history["val_accuracy"][0] >= 0.05  # 10 classes: reached in the first epoch
    assert row["time_to_s"] == pytest.approx(history["trial_seconds"][0])
    assert row["score"] == pytest.approx(row["time_to_s"])
    table = (tmp_path / "search" / "results.md").read_text()
    assert "time to 0.05 (s)" in table


def test_the_trial_clock_scores_an_unreached_target_as_the_budget_and_stops_there(monkeypatch):

    now = iter([0.0, 10.0, 20.0, 30.0])
    monkeypatch.setattr(tuners.time, "perf_counter", lambda: next(now))
    clock = tuners.TrialClock(budget=25.0, target=0.9)
    clock.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    clock.model.stop_training = False  # as fit sets it
    clock.on_train_begin()
    epochs = []
    for epoch, accuracy in enumerate((0.5, 0.95, 0.99)):  # reached at 20 s, within 25
        logs = {"val_accuracy": accuracy}
        clock.on_epoch_end(epoch, logs)
        epochs.append((logs["trial_seconds"], logs["time_to_0.9"], clock.model.stop_training))
    assert epochs == [(10.0, 25.0, False), (20.0, 20.0, False), (30.0, 20.0, True)]
    late = tuners.TrialClock(budget=5.0, target=0.9)  # reached only after its budget
    late.set_model(clock.model)
    now = iter([0.0, 10.0])
    late.on_train_begin()
    logs = {"val_accuracy": 0.95}
    late.on_epoch_end(0, logs)
    assert logs["time_to_0.9"] == 5.0


def test_the_fast_recipe_search_script_runs_on_digits(tmp_path):
    """experiments/tune_fast.sh, the real search's exact command, with its data, depth and
    length shrunk by flags that override (its smoke mode): every trial completes with the
    searched recipe values, and the best is measured once on the test set."""
    directory = tmp_path / "search"
    env = {**os.environ, "PYTHONPATH": ROOT}
    command = ["bash", os.path.join(ROOT, "experiments", "tune_fast.sh")]
    command += ["--dataset=digits", "--validation_size=0.1", "--precision=float32"]
    command += ["--depth=8", "--epochs=1", "--hyperband_iterations=1", "--verbose=0"]
    command += [f"--directory={directory}"]  # exports the best, as the real search does
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((directory / "results.json").read_text())
    trials = results["trials"]
    assert trials and {r["status"] for r in trials} == {"COMPLETED"}
    assert {r["model"] for r in trials} == {"cifar_resnet8:width_multiplier=1"}
    # A spec string is served under its folder-safe name.
    assert os.path.isdir(results["best"]["export"])
    assert "/cifar_resnet8-width_multiplier-1/" in results["best"]["export"]
    assert {r["batch_size"] for r in trials} <= {128, 256}
    assert {r["label_smoothing"] for r in trials} <= {0.0, 0.1}
    assert {r["warmup_epochs"] for r in trials} <= {0.0, 1.0}
    assert {r["learning_rate"] for r in trials} <= {0.1, 0.2, 0.4}
    assert [r["epochs"] for r in trials] == [1]  # Hyperband's one round of --epochs=1
    recipes = {
        json.loads(open(os.path.join(r["run_dir"], "config.json")).read())["recipe"] for r in trials
    }
    assert recipes == {"fast"}
    assert [r["trial"] for r in trials if r["test_error"] is not None] == [results["best"]["trial"]]
    assert results["search"]["train"]["validation_size"] == 0.1


@pytest.mark.slow  # a search in a fresh process
def test_random_search_from_the_command_line(tmp_path, capsys):
    directory = tmp_path / "random"
    argv = [
        "tfresnet",
        "tune",
        "--tuner=random",
        "--max_trials=2",
        "--depth=8",
        "--shortcut=A,B",
        "--preact=true,false",
        "--learning_rate=0.05",
        "--weight_decay=1e-4",
        "--dataset=digits",
        "--steps=2",
        "--batch_size=64",
        "--verbose=0",
        "--noexport",
        "--noevaluate_best",
        f"--directory={directory}",
    ]
    assert cli.main(argv) == 0
    assert "| trial | model |" in capsys.readouterr().out
    results = json.loads((directory / "results.json").read_text())
    assert len(results["trials"]) == 2 and results["counts"] == {"COMPLETED": 2}
    combos = {(r["shortcut"], r["preact"]) for r in results["trials"]}
    assert len(combos) == 2 and combos <= set(itertools.product("AB", (True, False)))
    assert {r["learning_rate"] for r in results["trials"]} == {0.05}
    assert not (directory / "export").exists()


@pytest.mark.slow  # another oracle; grid and random run by default
def test_bayesian_search(tmp_path):
    space = SearchSpace(depth=8, shortcut=("A", "B", "none"), **FIXED)
    config = _tune(tmp_path, space, tuner="bayesian", max_trials=2, bayesian_initial_points=1)
    results = tuning.search(config)
    assert [r["status"] for r in results["trials"]] == ["COMPLETED", "COMPLETED"]
    assert len({r["shortcut"] for r in results["trials"]}) == 2  # no configuration twice
    assert results["best"]["val_error"] == min(r["val_error"] for r in results["trials"])


@pytest.mark.slow  # another oracle; grid and random run by default
def test_hyperband_trains_its_rounds_in_epochs(tmp_path):
    space = SearchSpace(depth=8, shortcut=("A", "none"), **FIXED)
    config = _tune(
        tmp_path, space, tuner="hyperband", hyperband_factor=2, train={"steps": None, "epochs": 2}
    )
    results = tuning.search(config)
    trials = results["trials"]
    assert {r["status"] for r in trials} == {"COMPLETED"}
    values = _trial_values(tmp_path / "search")
    for row in trials:
        hp = values[row["trial"]][1]
        # A continued trial trains only the epochs its round adds, from its parent's weights.
        assert row["epochs"] == hp["tuner/epochs"] - hp["tuner/initial_epoch"]
    assert {values[r["trial"]][1]["tuner/epochs"] for r in trials} == {1, 2}
    assert any("tuner/trial_id" in v for _, v in values.values())  # a promoted trial


@pytest.mark.slow  # a three-trial search
def test_a_diverging_trial_is_recorded_failed_and_the_search_goes_on(tmp_path):
    space = SearchSpace(
        depth=8, shortcut="A", preact=None, learning_rate=(1e30, 0.05), weight_decay=None
    )
    results = tuning.search(_tune(tmp_path, space, tuner="grid"))
    first, second = results["trials"]
    assert first["learning_rate"] == 1e30 and first["status"] == "FAILED"
    assert first["message"].startswith("TrainingError: Training diverged in epoch 1 (NaN")
    assert first["val_error"] is None
    assert second["status"] == "COMPLETED" and results["best"]["trial"] == second["trial"]
    assert "FAILED: " in (tmp_path / "search" / "results.md").read_text()
    # FailedTrialError: not retried.
    assert [len(a) for a in _attempts(tmp_path / "search").values()] == [1, 1]


# --------------------------------------------------------------------------
# Bookkeeping with a fake fit
# --------------------------------------------------------------------------


def test_an_unexpected_error_is_retried_then_recorded_failed(tmp_path, fake_fit):
    fake_fit.failures["B"] = RuntimeError
    space = SearchSpace(depth=8, shortcut=("B", "A"), **FIXED)
    results = tuning.search(_tune(tmp_path, space, tuner="grid", max_retries_per_trial=1))
    statuses = {r["shortcut"]: (r["status"], r["message"]) for r in results["trials"]}
    assert statuses["B"] == ("FAILED", "RuntimeError: boom in B")
    assert statuses["A"][0] == "COMPLETED"
    shortcuts = [values["shortcut"] for _, values in fake_fit.calls]
    assert shortcuts == ["B", "B", "A"]  # one retry, then on with the search
    outcomes = {
        t: [a["outcome"] for a in attempts]
        for t, attempts in _attempts(tmp_path / "search").items()
    }
    assert sorted(outcomes.values()) == [["RuntimeError", "RuntimeError"], ["completed"]]


@pytest.mark.slow  # a search run twice; the stop-and-resume test stays
def test_a_rerun_continues_the_search_without_repeating_finished_trials(
    tmp_path, fake_fit, monkeypatch
):
    space = SearchSpace(depth=(8, 14, 20), shortcut="A", **FIXED)

    def killed_in_the_second_trial(self, hp, model, *args, **kwargs):
        if hp.values["depth"] == 14:
            raise KeyboardInterrupt("killed")  # escapes KerasTuner's error handling, as a kill
        return fake_fit(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(tuners.ResNetHyperModel, "fit", killed_in_the_second_trial)
    with pytest.raises(KeyboardInterrupt):
        tuning.search(_tune(tmp_path, space, tuner="grid"))
    assert [v["depth"] for _, v in fake_fit.calls] == [8]
    keras.backend.clear_session()

    monkeypatch.setattr(tuners.ResNetHyperModel, "fit", fake_fit)
    results = tuning.search(_tune(tmp_path, space, tuner="grid"))
    assert [v["depth"] for _, v in fake_fit.calls] == [8, 14, 20]  # 8 was not trained again
    assert [(r["depth"], r["status"]) for r in results["trials"]] == [
        (8, "COMPLETED"),
        (14, "COMPLETED"),
        (20, "COMPLETED"),
    ]
    outcomes = [
        [a["outcome"] for a in attempts] for attempts in _attempts(tmp_path / "search").values()
    ]
    assert outcomes == [["completed"], ["KeyboardInterrupt", "completed"], ["completed"]]
    killed = _attempts(tmp_path / "search")[results["trials"][1]["trial"]]
    assert results["trials"][1]["time_s"] == pytest.approx(sum(a["seconds"] for a in killed))
    assert results["trials"][1]["time_s"] > killed[-1]["seconds"]  # the killed attempt counts
    # A third run finds nothing left to do.
    tuning.search(_tune(tmp_path, space, tuner="grid"))
    assert len(fake_fit.calls) == 3


@pytest.mark.slow  # two searches
def test_a_grid_stopped_between_trials_continues_where_it_stopped(tmp_path, fake_fit, monkeypatch):
    space = SearchSpace(depth=(8, 14), shortcut=("A", "none"), **FIXED)

    def stop_after_two(self):
        if len(self.oracle.end_order) == 2:
            raise KeyboardInterrupt("killed between trials")

    monkeypatch.setattr(tuners.GridSearch, "pre_create_trial", stop_after_two, raising=False)
    with pytest.raises(KeyboardInterrupt):
        tuning.search(_tune(tmp_path, space, tuner="grid"))
    monkeypatch.undo()
    monkeypatch.setattr(tuners.ResNetHyperModel, "fit", fake_fit)
    results = tuning.search(_tune(tmp_path, space, tuner="grid"))
    done = [(v["depth"], v["shortcut"]) for _, v in fake_fit.calls]
    assert done == list(itertools.product((8, 14), ("A", "none")))  # each once, in grid order
    assert len(results["trials"]) == 4 and results["counts"] == {"COMPLETED": 4}


def test_a_trials_run_directory_is_kept_only_to_resume_it(tmp_path):
    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)
    (run / "backup" / ".tmp-0a1b2c3d-epoch-1.weights.h5").write_text("")  # killed mid-write
    tuners._clear_unresumable(str(run))
    assert os.listdir(run) == []
    (run / "notes.txt").write_text("not the trial's")  # only what a run writes is removed
    with pytest.raises(rundir.ForeignFiles, match=r"\(notes\.txt\); move them out of the tri"):
        tuners._clear_unresumable(str(run))
    (run / "notes.txt").unlink()
    (run / "backup").mkdir()
    (run / "backup" / "state.json").write_text('{"epoch": 1, "weights": "epoch-1.weights.h5"}')
    tuners._clear_unresumable(str(run))  # an interrupted trial: continued from its backup
    assert (run / "backup" / "state.json").exists()
    (run / "results.json").write_text("{}")
    tuners._clear_unresumable(str(run))  # a finished run (the trial is run again): cleared
    assert os.listdir(run) == []
    tuners._clear_unresumable(str(tmp_path / "none"))  # nothing there yet
    assert not (tmp_path / "none").exists()


def test_a_different_search_in_the_same_directory_is_refused(tmp_path, fake_fit):
    space = SearchSpace(depth=8, shortcut="A", **FIXED)
    tuning.search(_tune(tmp_path, space, tuner="grid"))
    other = SearchSpace(depth=8, shortcut="B", **FIXED)
    with pytest.raises(train_lib.TrainingError, match=r"differs in: space.shortcut\)"):
        tuning.search(_tune(tmp_path, other, tuner="grid"))
    results = tuning.search(_tune(tmp_path, other, tuner="grid", overwrite=True))
    assert [r["shortcut"] for r in results["trials"]] == ["B"]
    # A search saved when steps_per_execution was part of a run's identity still continues.
    path = tmp_path / "search" / "search.json"
    saved = json.loads(path.read_text())
    saved["train"]["steps_per_execution"] = 1
    # ... and one saved when the test curve's default was True (each trial sets its own).
    saved["train"]["eval_test_each_epoch"] = True
    path.write_text(json.dumps(saved))
    assert tuning.search(_tune(tmp_path, other, tuner="grid"))["trials"] == results["trials"]
    # And one saved before the time budget and the recipe's dimensions existed.
    saved.pop("trial_time_budget")
    for name in ("batch_size", "label_smoothing", "warmup_epochs", "width_multiplier"):
        saved["space"].pop(name)
    path.write_text(json.dumps(saved))
    assert tuning.search(_tune(tmp_path, other, tuner="grid"))["trials"] == results["trials"]


def test_overwrite_refuses_a_search_directory_holding_files_no_search_wrote(tmp_path, fake_fit):
    from test_rundir import tree_of

    space = SearchSpace(depth=8, shortcut="A", **FIXED)
    tuning.search(_tune(tmp_path, space, tuner="grid"))
    search = tmp_path / "search"
    trial = next(search.glob("trial_*"))
    (trial / "run" / "checkpoints").mkdir()
    for mine in (search / "notes.md", search / "data.json", trial / "run" / "checkpoints" / "m.h5"):
        mine.write_text('{"mine": 1}')
        before = tree_of(search)
        with pytest.raises(rundir.ForeignFiles) as refusal:
            tuning.search(_tune(tmp_path, space, tuner="grid", overwrite=True))
        assert f"({mine.relative_to(search)}); --overwrite deletes only what a search" in str(
            refusal.value
        )
        assert tree_of(search) == before and len(fake_fit.calls) == 1
        mine.unlink()
    assert (search / "tuner0.json").read_text() == "{}"  # KerasTuner's, so --overwrite's to clear
    tuning.search(_tune(tmp_path, space, tuner="grid", overwrite=True))
    assert len(fake_fit.calls) == 2  # started again


def test_a_depth_the_data_cannot_take_is_refused_before_the_search_is_saved(
    tmp_path, fake_fit, monkeypatch
):
    with pytest.raises(ValueError, match=r"6n\+2"):  # the family (cifar) comes from the data
        tuning.search(_tune(tmp_path, SearchSpace(depth=7, shortcut="A", **FIXED)))
    assert not (tmp_path / "search" / "search.json").exists()
    with monkeypatch.context() as chief:  # a distributed chief: no data, so no family yet
        chief.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
        chief.setenv("KERASTUNER_TUNER_ID", "chief")
        chief.setattr(train_lib, "load_run_data", lambda config: pytest.fail("loaded data"))
        with pytest.raises(ValueError, match=r"6n\+2"):  # 7 is no family's depth
            tuning.search(_tune(tmp_path, SearchSpace(depth=7, shortcut="A", **FIXED)))
    assert not (tmp_path / "search" / "search.json").exists()
    # So the corrected command is not refused as "a different search".
    space = SearchSpace(depth=8, shortcut="A", **FIXED)
    assert tuning.search(_tune(tmp_path, space))["counts"] == {"COMPLETED": 1}


def test_a_search_directory_in_use_is_refused_before_anything_is_written(tmp_path, fake_fit):
    from test_runlock import held_by_another_process

    (tmp_path / "search").mkdir()
    space = SearchSpace(depth=8, shortcut="A", **FIXED)
    with held_by_another_process(tmp_path / "search"):  # the same search, started twice
        with pytest.raises(tuning.runlock.RunDirInUse, match="another tfresnet tune runs"):
            tuning.search(_tune(tmp_path, space, tuner="grid", overwrite=True))
    assert os.listdir(tmp_path / "search") == [] and fake_fit.calls == []
    # --overwrite would delete a trial that another process (the old search's worker) trains.
    (tmp_path / "search" / "trial_0003" / "run").mkdir(parents=True)
    with held_by_another_process(tmp_path / "search" / "trial_0003" / "run"):
        with pytest.raises(tuning.runlock.RunDirInUse, match="would delete trial_0003"):
            tuning.search(_tune(tmp_path, space, tuner="grid", overwrite=True))
    assert os.listdir(tmp_path / "search") == ["trial_0003"] and fake_fit.calls == []


def test_a_stop_request_ends_the_search_and_the_same_command_resumes_it(tmp_path, monkeypatch):
    """SIGTERM mid-trial: the trial is neither failed nor followed by the next one (which
    would stop at once too); exit 143, and the rerun finishes the search."""
    stopped, resumed = [], []
    state = {"epoch": 0, "batch": 1, "weights": "epoch-0-batch-1.weights.h5"}

    def fit_model(config, **kwargs):
        backup = os.path.join(config.run_dir, "backup", "state.json")
        if config.shortcut == "B" and not stopped:
            stopped.append(config.run_dir)
            os.makedirs(os.path.dirname(backup))
            with open(backup, "w") as f:  # what the recorder commits before raising
                json.dump(state, f)
            raise tuning.rundir.Preempted(0, 1)
        resumed.append(os.path.exists(backup))
        with open(os.path.join(config.run_dir, "history.csv"), "w") as f:
            f.write("epoch,val_accuracy,val_loss\n0,0.6,1.0\n")
        return None, {}

    monkeypatch.setattr(tuning.train_lib, "fit_model", fit_model)
    space = SearchSpace(depth=8, shortcut=("A", "B", "none"), **FIXED)  # the smallest nets
    with pytest.raises(tuners.TrialPreempted) as stop:
        tuning.search(_tune(tmp_path, space, tuner="grid"))
    assert cli.classify_error(stop.value)[0] == cli.EXIT_PREEMPTED
    statuses = [status for status, _ in _trial_values(tmp_path / "search").values()]
    assert statuses == ["COMPLETED", "RUNNING"]  # shortcut "none" never started
    keras.backend.clear_session()
    results = tuning.search(_tune(tmp_path, space, tuner="grid"))
    assert results["counts"] == {"COMPLETED": 3}
    assert resumed == [False, True, False]  # shortcut B found its backup: it was not cleared


def test_a_trial_another_process_trains_is_left_to_it(tmp_path, fake_fit, monkeypatch):
    """A tuner restarted under the same id while the old one lives is given the old one's
    trial: it must neither clear that trial's run directory nor end the trial."""
    from test_runlock import another_process_can_lock, held_by_another_process

    space = SearchSpace(depth=8, shortcut="A", **FIXED)
    run_dir = tmp_path / "search" / "trial_0000" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "history.csv").write_text("epoch\n")  # the other process's, not resumable here
    with held_by_another_process(run_dir):
        with pytest.raises(tuners.TrialInUse, match="Trial 0000 is in training") as refused:
            tuning.search(_tune(tmp_path, space, tuner="grid"))
    assert cli.classify_error(refused.value)[0] == cli.EXIT_RETRY  # a cluster manager retries
    assert os.listdir(run_dir) == ["history.csv"] and fake_fit.calls == []
    assert _attempts(tmp_path / "search") == {}
    assert [status for status, _ in _trial_values(tmp_path / "search").values()] == ["RUNNING"]
    keras.backend.clear_session()
    # Once the other process is gone, the same command trains the trial from the start, and
    # holds it until the oracle has ended it (until then the oracle would hand it out again).
    held_at_end = []
    end_trial = compat.ResumableGridSearchOracle.end_trial

    def end_trial_while_held(oracle, trial):
        held_at_end.append(not another_process_can_lock(run_dir))
        return end_trial(oracle, trial)

    monkeypatch.setattr(compat.ResumableGridSearchOracle, "end_trial", end_trial_while_held)
    results = tuning.search(_tune(tmp_path, space, tuner="grid"))
    assert results["counts"] == {"COMPLETED": 1} and len(fake_fit.calls) == 1
    assert not (run_dir / "history.csv").exists()
    assert held_at_end == [True] and another_process_can_lock(run_dir)  # and released after


@pytest.mark.slow  # default-suite time; CI's slow step runs it
def test_a_search_on_ram_trains_selects_exports_and_continues(tmp_path, monkeypatch):
    """The search directory on TF's in-memory file system, an object store without atomic
    rename like gs://: trials, results, the test error and the export all land there, nothing
    in the working directory, and a rerun continues the finished search without training."""
    import tensorflow as tf

    from tfresnet import export, files

    monkeypatch.chdir(tmp_path)  # a path taken as local would show up here as ./ram:/...
    directory = f"ram://{uuid.uuid4().hex[:8]}/search"
    space = SearchSpace(depth=8, shortcut=("A", "none"), **FIXED)
    config = TuneConfig(
        _train(export=True), space=space, tuner="grid", directory=directory, evaluate_best=True
    )
    results = tuning.search(config)
    trials = results["trials"]
    assert [(r["model"], r["status"]) for r in trials] == [
        ("cifar_resnet8", "COMPLETED"),
        ("cifar_plain8", "COMPLETED"),
    ]
    assert results["directory"] == directory
    assert all(len(tuning.read_jsonl(f"{directory}/trial_{r['trial']}/attempts.jsonl")) == 1
               for r in trials)  # fmt: skip
    best = results["best"]
    # Only the best trial keeps its model (what is tested and exported); ram:// lists them.
    assert [files.exists(f"{r['run_dir']}/model.keras") for r in trials] == [
        r["trial"] == best["trial"] for r in trials
    ]
    assert best["val_error"] == min(r["val_error"] for r in trials)
    assert 0.0 <= best["test_error"] <= 1.0
    assert best["export"] == f"{directory}/export/{best['model']}/1"
    assert export.model_versions(f"{directory}/export/{best['model']}") == [1]
    names = {n.rstrip("/") for n in tf.io.gfile.listdir(directory)}
    assert {"search.json", "results.json", "results.csv", "results.md", "best_export.json"} <= names
    rows = list(csv.DictReader(io.StringIO(files.read_text(f"{directory}/results.csv"))))
    assert [r["model"] for r in rows] == ["cifar_resnet8", "cifar_plain8"]
    assert files.read_json(f"{directory}/results.json")["best"]["trial"] == best["trial"]
    assert "(best)" in files.read_text(f"{directory}/results.md")
    assert not os.listdir(tmp_path)
    keras.backend.clear_session()

    again = tuning.search(config)
    assert [r["trial"] for r in again["trials"]] == [r["trial"] for r in trials]
    assert again["best"]["export"] == best["export"]  # the marker: exported once
    assert all(len(tuning.read_jsonl(f"{directory}/trial_{r['trial']}/attempts.jsonl")) == 1
               for r in trials)  # fmt: skip
    assert not os.listdir(tmp_path)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tune_command(directory, *flags):
    return [
        sys.executable,
        "-m",
        "tfresnet.cli",
        "tune",
        "--dataset=digits",
        "--steps=2",
        "--batch_size=64",
        "--verbose=0",
        "--noevaluate_best",
        "--noexport",
        f"--directory={directory}",
        *flags,
    ]


def _run_all(commands, envs, tmp_path):
    """Start every command, wait for all (killing them all on a timeout); return the logs."""
    logs = [open(tmp_path / f"process{i}.log", "w+") for i in range(len(commands))]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        for cmd, env, log in zip(commands, envs, logs, strict=True)
    ]
    try:
        for proc in procs:
            proc.wait(timeout=TIMEOUT_S)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    texts = []
    for log in logs:
        log.seek(0)
        texts.append(log.read())
        log.close()
    return [p.returncode for p in procs], texts


@pytest.mark.slow  # three processes start TensorFlow; the chief polls every 20 s
def test_distributed_search_with_a_chief_and_two_workers(tmp_path):
    directory = tmp_path / "search"
    command = _tune_command(directory, "--tuner=grid", "--depth=8", "--shortcut=A,B,C,none")
    port = str(_free_port())
    envs = []
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
        env.update(
            KERASTUNER_TUNER_ID=tuner_id,
            KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=port,
        )
        envs.append(env)
    codes, logs = _run_all([command] * 3, envs, tmp_path)
    assert codes == [0, 0, 0], "\n\n".join(log[-3000:] for log in logs)
    assert "no trials left" in logs[1] and "no trials left" in logs[2]

    results = json.loads((directory / "results.json").read_text())  # written by the chief
    assert sorted(r["shortcut"] for r in results["trials"]) == ["A", "B", "C", "none"]
    assert results["counts"] == {"COMPLETED": 4}
    attempts = _attempts(directory)
    assert sorted(attempts) == sorted(r["trial"] for r in results["trials"])
    assert all(len(a) == 1 for a in attempts.values()), attempts  # each trial ran exactly once
    ran_by = {a[0]["tuner_id"] for a in attempts.values()}
    assert ran_by == {"tuner0", "tuner1"}  # both workers trained, the chief only served
    oracle = json.loads((directory / "oracle.json").read_text())
    assert sorted(oracle["end_order"]) == sorted(attempts)
    assert set(oracle["run_times"].values()) == {1}


@pytest.mark.slow
def test_every_trial_trains_under_mirrored_when_asked(tmp_path):
    directory = tmp_path / "search"
    command = _tune_command(
        directory, "--tuner=grid", "--depth=8", "--shortcut=A", "--strategy=mirrored"
    ) + ["--num_replicas=2"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    codes, logs = _run_all([command], [env], tmp_path)
    assert codes == [0], logs[0][-3000:]
    results = json.loads((directory / "results.json").read_text())
    (row,) = results["trials"]
    with open(os.path.join(row["run_dir"], "results.json")) as f:
        assert json.load(f)["replicas"] == 2
