"""Hyperparameter search with KerasTuner over depth, shortcut type, pre-activation, lr and decay.

    from tfresnet.train import TrainConfig
    from tfresnet.tuning import SearchSpace, TuneConfig, search

    # The paper's comparison: shortcut options A, B, C (Table 3) and plain nets (Fig. 6).
    result = search(TuneConfig(
        TrainConfig(dataset="digits", epochs=3, batch_size=64, validation_size=0.1),
        tuner="grid",
        space=SearchSpace(depth=(20, 56), shortcut=("A", "B", "C", "none")),
    ))

Every trial trains through `train.fit_model` and selects on the validation split (never the
test set). This module runs the search and writes its results (results.{md,csv,json}, the best
model's test error and export); the space and config are in `tune_config`, the hypermodel and
the tuners in `tuners`. The search directory's layout, resuming and distributed search:
docs/tuning.md.
"""

import contextlib
import csv
import dataclasses
import io
import json
import os

import keras_tuner
import tensorflow as tf

from tfresnet import data as data_lib
from tfresnet import distribute, files, markdown, pipeline, rundir, runlock, specs, untrusted
from tfresnet import results as results_lib
from tfresnet import train as train_lib
from tfresnet.tune_config import SearchSpace, TuneConfig, run_identity, time_to_target
from tfresnet.tuners import ResNetHyperModel, build_tuner, hold_or_refuse, is_chief, is_worker

# results.csv's columns (a row of results.json has them and more), with results.md's headers.
RESULTS_COLUMNS = {
    "trial": "trial",
    "model": "model",
    "depth": "depth",
    "shortcut": "shortcut",
    "preact": "preact",
    "learning_rate": "lr",
    "weight_decay": "weight decay",
    "epochs": "epochs",
    "batch_size": "batch",
    "label_smoothing": "smoothing",
    "warmup_epochs": "warm-up",
    "width_multiplier": "width",
    "val_error": "val error",
    "test_error": "test error",
    "params": "params",
    "time_s": "time (s)",
    "status": "status",
}


def check_search_dir(config: TuneConfig) -> None:
    """Refuse to continue a different search in the same directory; save this one's config."""
    path = os.path.join(config.directory, "search.json")
    if config.overwrite and not is_worker():
        for name in files.listdir(config.directory):
            if name.startswith("trial_"):
                _refuse_if_training(config.directory, name)
        # The directory stays, and with it the chief's lock.
        rundir.clear(
            config.directory,
            rundir.SEARCH_LAYOUT,
            hint="--overwrite deletes only what a search wrote: move those files away, or use "
            "another --directory",
        )
    mine = config.identity()
    if not files.exists(path):
        files.write_json(path, mine)
        return
    saved = rundir.read_config(
        path,
        "restore it from a copy, or use --overwrite to start the search again, or another "
        "--directory.",
        kind="search",
    )
    # A search saved before a field became a speed setting still lists it under "train".
    if isinstance(saved.get("train"), dict):
        saved["train"] = run_identity(saved["train"])
    # A setting or dimension added since the search was saved compares at its default.
    fields = dataclasses.fields(TuneConfig)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    differs = rundir.differences(saved, mine, defaults)
    if differs:
        raise train_lib.TrainingError(
            f"Search directory {config.directory!r} holds a different search (differs in: "
            f"{', '.join(differs)}). Use --overwrite to replace it, or another --directory."
        )


def _check_depths(space: SearchSpace, hypermodel: ResNetHyperModel) -> None:
    """Refuse depths the family cannot take before search.json is written. The chief of a
    distributed search loads no data until the end: without a family given it refuses depths
    that no family takes."""
    if space.family or not is_chief():
        space.depths(hypermodel.family)
        return
    refusals = []
    for family in specs.FAMILIES:
        try:
            space.depths(family)
            return
        except ValueError as err:
            refusals.append(err)
    raise refusals[0]


def _refuse_if_training(directory, trial_name):
    """`RunDirInUse` if another process trains this trial: --overwrite would delete it."""
    try:
        runlock.ensure_free(files.join(directory, trial_name, "run"))
    except runlock.RunDirInUse:
        raise runlock.RunDirInUse(
            f"--overwrite would delete {trial_name} of {directory!r}, which another process is "
            "training (a worker of the old search?). Stop it first, or use another --directory."
        ) from None


def search(
    config: TuneConfig,
    *,
    strategy: tf.distribute.Strategy | None = None,
    data: data_lib.Data | None = None,
    verbose: int | str | None = None,
) -> dict:
    """Run (or continue) the search `config` describes; returns the results dict.

    On a distributed worker it runs trials until the chief's oracle has no more, and returns
    `{"worker": tuner_id}`; the chief (or a single process) writes the results and the export.
    The chief (or a lone tuner) holds the search directory throughout and each trial's process
    its run directory (`runlock`): `runlock.RunDirInUse` if the same search runs elsewhere,
    `tuners.TrialInUse` if another process trains this tuner's trial; both worth a retry later.
    """
    files.check_output_dir(config.directory, "directory", unset="runs/tune-<tuner>-<dataset>")
    hypermodel = ResNetHyperModel(
        config.train,
        config.space,
        strategy=strategy,
        data=data,
        time_budget=config.trial_time_budget,
        target=time_to_target(config.objective),
    )
    with contextlib.ExitStack() as stack:
        if not is_worker() and distribute.writes_run_dir(hypermodel.strategy):
            files.makedirs(config.directory)
            refusal = runlock.RunDirInUse(
                f"Search directory {config.directory!r} is in use: another tfresnet tune runs "
                "this search. Run the same command again once it has ended (it continues the "
                "search), or use another --directory."
            )
            hold_or_refuse(stack, config.directory, refusal)
        _check_depths(config.space, hypermodel)
        check_search_dir(config)
        tuner = build_tuner(config, hypermodel)
        tuner.search(
            verbose=train_lib.keras_verbose(config.train.verbose) if verbose is None else verbose
        )
        if is_worker():
            return {"worker": tuner.tuner_id}
        return summarize(config, tuner, hypermodel)


def summarize(config: TuneConfig, tuner: keras_tuner.Tuner, hypermodel: ResNetHyperModel) -> dict:
    """Measure the best trial on the test set, export it, write and print the results table."""
    rows = trial_rows(tuner, hypermodel)
    best_trials = [t for t in tuner.oracle.get_best_trials(1) if t.status == "COMPLETED"]
    best = None
    if best_trials:
        best = next(r for r in rows if r["trial"] == best_trials[0].trial_id)
        best.update(measure_and_export(config, best, hypermodel))
    results = {
        "search": config.identity(),
        "directory": files.absolute(config.directory),
        "objective": config.objective,
        "trials": rows,
        "best": best,
        "counts": {s: sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}},
        "versions": results_lib.package_versions(),
    }
    write_results(config.directory, results)
    print(results_markdown(results))
    return results


def measure_and_export(config: TuneConfig, best: dict, hypermodel: ResNetHyperModel) -> dict:
    """Test error of the selected trial's final model, then its SavedModel under export/, once
    per best trial (a re-run that selects it again reuses it)."""
    found = {"best": True}
    if not (config.evaluate_best or config.train.export):
        return found
    model = untrusted.load_keras_model(os.path.join(best["run_dir"], "model.keras"))
    if config.evaluate_best:
        info = hypermodel.data.info
        batch_size = config.train.batch_size or train_lib.pick_recipe(config.train, info).batch_size
        test_ds = pipeline.make_pipeline(
            hypermodel.data.test, info, batch_size=batch_size, training=False
        )
        found["test_error"] = 1.0 - float(
            model.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"]
        )
    if not config.train.export:
        return found
    marker = os.path.join(config.directory, "best_export.json")
    done = read_json_if_exists(marker)
    if done and done.get("trial") == best["trial"] and tf.io.gfile.isdir(done.get("path", "")):
        return {**found, "export": done["path"]}
    from tfresnet import export

    found["export"] = export.export_for_serving(
        model,
        os.path.join(config.directory, "export"),
        model_name=rundir.model_slug(best["model"]),  # a spec string is no folder name
        class_names=list(hypermodel.data.info.class_names) or None,
    )
    files.write_json(marker, {"trial": best["trial"], "path": found["export"]})
    return found


def trial_rows(tuner: keras_tuner.Tuner, hypermodel: ResNetHyperModel) -> list[dict]:
    """One dict per trial (RESULTS_COLUMNS plus details), in trial order."""
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        run_dir = os.path.join(tuner.get_trial_dir(trial_id), "run")
        results = read_json_if_exists(os.path.join(run_dir, rundir.RESULTS)) or {}
        attempts = read_jsonl(os.path.join(tuner.get_trial_dir(trial_id), "attempts.jsonl"))
        values = trial.hyperparameters.values
        config = hypermodel.trial_config(values)
        schedule = results.get("schedule", {})
        rows.append(
            {
                "trial": trial_id,
                "model": config.model,
                "depth": values["depth"],
                "shortcut": config.shortcut,
                "preact": config.preact,
                "learning_rate": schedule.get("learning_rate", config.learning_rate),
                "weight_decay": schedule.get("weight_decay", config.weight_decay),
                "epochs": len(results.get("curves", {}).get("epoch", [])) or schedule.get("epochs"),
                # Fewer than planned: the time budget stopped it (--trial_time_budget).
                "planned_epochs": schedule.get("epochs"),
                "batch_size": schedule.get("batch_size", config.batch_size),
                "label_smoothing": config.label_smoothing,
                "warmup_epochs": config.warmup_epochs,
                "width_multiplier": values.get("width_multiplier"),
                "val_error": results.get("final", {}).get("val_error"),
                "test_error": None,
                "params": results.get("model", {}).get("params"),
                "time_s": sum(a["seconds"] for a in attempts) if attempts else None,
                "status": trial.status,
                "score": trial.score,
                "tuner_ids": [a["tuner_id"] for a in attempts],
                "message": _last_line(trial.message),
                "run_dir": run_dir,
            }
        )
        if hypermodel.target is not None:
            rows[-1]["time_to_s"] = time_to(
                os.path.join(run_dir, "history.csv"), hypermodel.target, hypermodel.time_budget
            )
    return rows


def time_to(history_path: str, target: float, budget: float | None) -> float | None:
    """Seconds of training until val_accuracy first reached `target` within `budget`; None if
    it never did (the trial then scored the budget)."""
    for row in rundir.read_history_rows(history_path):
        seconds, accuracy = row.get("trial_seconds"), row.get("val_accuracy")
        if seconds is None or (budget is not None and seconds > budget):
            return None
        if accuracy is not None and accuracy >= target:
            return seconds
    return None


def write_results(directory: str, results: dict) -> None:
    """results.json (everything), results.csv and results.md (the table)."""
    files.write_json(os.path.join(directory, "results.json"), results)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(RESULTS_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(
        {k: "" if row[k] is None else row[k] for k in RESULTS_COLUMNS} for row in results["trials"]
    )
    files.write_text(os.path.join(directory, "results.csv"), table.getvalue())
    files.write_text(os.path.join(directory, "results.md"), results_markdown(results) + "\n")


def results_markdown(results: dict) -> str:
    """The trials as a markdown table, then a line on the best trial."""
    best = results["best"]
    header = list(RESULTS_COLUMNS.values())
    timed = any("time_to_s" in row for row in results["trials"])
    if timed:
        header.insert(-1, f"time to {results['objective'].partition(':')[2]} (s)")
    rows = []
    for row in results["trials"]:
        status = row["status"]
        cells = {
            **{k: _number(row.get(k)) for k in _RECIPE_NUMBERS},
            "trial": row["trial"]
            + (" (best)" if row["trial"] == (best or {}).get("trial") else ""),
            "model": row["model"],
            "depth": row["depth"],
            "shortcut": row["shortcut"],
            "preact": "yes" if row["preact"] else "no",
            "epochs": _epochs(row),
            "batch_size": row.get("batch_size") or "-",
            "width_multiplier": _number(row.get("width_multiplier") or 1.0),
            "val_error": _percent(row["val_error"]),
            "test_error": _percent(row.get("test_error")),
            "params": f"{row['params']:,}" if row["params"] is not None else "-",
            "time_s": f"{row['time_s']:.0f}" if row["time_s"] is not None else "-",
            "status": status
            + (f": {row['message']}" if status != "COMPLETED" and row["message"] else ""),
        }
        cells = [cells[column] for column in RESULTS_COLUMNS]
        if timed:
            time_to_s = row.get("time_to_s")
            reached = f"{time_to_s:.0f}" if time_to_s is not None else "not reached (budget)"
            cells.insert(-1, reached if status == "COMPLETED" else "-")
        rows.append(cells)
    if not best:
        return f"{markdown.table(header, rows)}\n\nNo trial completed."
    test = (
        f", test error {_percent(best['test_error'])}" if best.get("test_error") is not None else ""
    )
    export = f"; exported to {best['export']}" if best.get("export") else ""
    return (
        f"{markdown.table(header, rows)}\n\nBest ({results['objective']}): trial {best['trial']}, "
        f"{best['model']} (shortcut {best['shortcut']}), val error {_percent(best['val_error'])}"
        f"{test}{export}."
    )


_RECIPE_NUMBERS = ("learning_rate", "weight_decay", "label_smoothing", "warmup_epochs")


def _epochs(row):
    """The epochs a trial ran, and of how many planned when the time budget stopped it."""
    if row["epochs"] is None:
        return "-"
    planned = row.get("planned_epochs")
    if planned and row["epochs"] < planned:
        return f"{row['epochs']} of {planned} (time budget)"
    return row["epochs"]


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def _number(value):
    return "recipe" if value is None else f"{value:g}"


def _last_line(message):
    """The error of a failed trial's traceback, without the FailedTrialError wrapper."""
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1].strip().split("FailedTrialError: ", 1)[-1] if lines else None


def read_json_if_exists(path: str):
    return files.read_json(path) if files.exists(path) else None


def read_jsonl(path: str) -> list:
    if not files.exists(path):
        return []
    return [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]
