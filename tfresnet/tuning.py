"""Hyperparameter search with KerasTuner over depth, shortcut type, pre-activation, lr and decay.

    from tfresnet.train import TrainConfig
    from tfresnet.tuning import SearchSpace, TuneConfig, search

    # The paper's comparison: shortcut options A, B, C (Table 3) and plain nets (Fig. 6).
    result = search(TuneConfig(
        TrainConfig(dataset="digits", epochs=3, batch_size=64, validation_size=0.1),
        tuner="grid",
        space=SearchSpace(depth=(20, 56), shortcut=("A", "B", "C", "none")),
    ))

    tfresnet tune --tuner=grid --depth=20,56 --shortcut=A,B,C,none --epochs=3

Every trial trains through `train.fit_model` (the data pipeline, recipe, callbacks and strategy
of `tfresnet train`), selects on the held-out validation split (never the test set), and keeps
its run directory in the tuner's `trial_<id>/run/`. The data is loaded once per search. The
search directory holds the KerasTuner state (re-running the same command continues the search),
`search.json` (the search's config), `results.{md,csv,json}` and `export/` (the best model,
exported for TF Serving after its test error is measured). Distributed tuning (a chief oracle
and workers) uses KerasTuner's environment variables; see docs/tuning.md.

This module runs the search; the space and config are in `tune_config`, the hypermodel in
`hypermodel`, the tuners in `tuners`, the results table in `tune_results` (their public names
are re-exported here).
"""

import contextlib
import dataclasses
import os

import keras
import keras_tuner
import tensorflow as tf

from tfresnet import data as data_lib
from tfresnet import (
    distribute,
    files,
    pipeline,
    rundir,
    runlock,
    tune_config,
    tune_results,
    tuners,
    untrusted,
)
from tfresnet import results as results_lib
from tfresnet import train as train_lib
from tfresnet.compat import ResumableGridSearchOracle
from tfresnet.hypermodel import ResNetHyperModel, TrialPreempted
from tfresnet.tune_config import (
    DEFAULT_MAX_TRIALS,
    FAMILIES,
    NON_IDENTITY_FIELDS,
    OBJECTIVE_METRICS,
    PAPER_DEPTHS,
    PAPER_GRID,
    SPACE_FIELDS,
    TRIAL_FIELDS,
    TUNERS,
    SearchSpace,
    TuneConfig,
    default_space,
    make_objective,
    max_epochs,
    model_name,
    shared_train_config,
)
from tfresnet.tune_results import RESULTS_COLUMNS, results_markdown, trial_rows, write_results
from tfresnet.tuners import (
    BayesianOptimization,
    GridSearch,
    Hyperband,
    RandomSearch,
    TrialInUse,
    build_tuner,
)


def check_search_dir(config: TuneConfig) -> None:
    """Refuse to continue a different search in the same directory; save this one's config."""
    path = os.path.join(config.directory, "search.json")
    if config.overwrite and not tuners.is_worker():
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
    if files.exists(path):
        try:
            saved = files.read_json(path)
            if not isinstance(saved, dict):
                raise files.CorruptFile(f"{path} is not a search config (a JSON object)")
        except files.CorruptFile as err:
            raise files.CorruptFile(
                f"{err}: restore it from a copy, or use --overwrite to start the search again, "
                "or another --directory."
            ) from err
        # A search saved before a field became a speed setting still lists it under "train".
        train = saved.get("train")
        if isinstance(train, dict):
            saved["train"] = tune_config.run_identity(train)
        # A setting or dimension added since the search was saved compares at its default.
        for field in dataclasses.fields(TuneConfig):
            if field.name in config.identity() and field.default is not dataclasses.MISSING:
                saved.setdefault(field.name, field.default)
        space = saved.get("space")
        if isinstance(space, dict):
            saved["space"] = {**dict.fromkeys(config.identity()["space"]), **space}
        if saved != config.identity():
            differs = _differences(saved, config.identity())
            raise train_lib.TrainingError(
                f"Search directory {config.directory!r} holds a different search (differs in: "
                f"{', '.join(differs)}). Use --overwrite to replace it, or another --directory."
            )
    else:
        files.write_json(path, config.identity())


def _check_depths(space, hypermodel):
    """Refuse depths the family cannot take before search.json is written. The chief of a
    distributed search loads no data until the end: without a family given it refuses depths
    that no family takes."""
    if space.family or not tuners.is_chief():
        space.depths(hypermodel.family)
        return
    refusals = []
    for family in tune_config.FAMILIES:
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


def _differences(a, b, prefix=""):
    """Dotted keys whose values differ between two nested dicts."""
    keys = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            keys.append(f"{prefix}{key}")
    return keys


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
    `TrialInUse` if another process trains this tuner's trial; both worth a retry later.
    """
    files.check_output_dir(config.directory, "directory", unset="runs/tune-<tuner>-<dataset>")
    hypermodel = ResNetHyperModel(
        config.train,
        config.space,
        strategy=strategy,
        data=data,
        time_budget=config.trial_time_budget,
        target=tune_config.time_to_target(config.objective),
    )
    with contextlib.ExitStack() as stack:
        if not tuners.is_worker() and distribute.writes_run_dir(hypermodel.strategy):
            files.makedirs(config.directory)
            refusal = runlock.RunDirInUse(
                f"Search directory {config.directory!r} is in use: another tfresnet tune runs "
                "this search. Run the same command again once it has ended (it continues the "
                "search), or use another --directory."
            )
            tuners.hold_or_refuse(stack, runlock.exclusive(config.directory), refusal)
        _check_depths(config.space, hypermodel)
        check_search_dir(config)
        tuner = build_tuner(config, hypermodel)
        tuner.search(
            verbose=train_lib.keras_verbose(config.train.verbose) if verbose is None else verbose
        )
        if tuners.is_worker():
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
    """Test error of the selected trial's final model, then its SavedModel under export/."""
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
    if config.train.export:
        found["export"] = export_best(config, best, model, hypermodel.data.info)
    return found


def export_best(config: TuneConfig, best: dict, model: keras.Model, info: data_lib.DataInfo) -> str:
    """Export the best model once per best trial (a re-run that selects it again reuses it)."""
    marker = os.path.join(config.directory, "best_export.json")
    done = tune_results.read_json_if_exists(marker)
    if done and done.get("trial") == best["trial"] and tf.io.gfile.isdir(done.get("path", "")):
        return done["path"]
    from tfresnet import export

    path = export.export_for_serving(
        model,
        os.path.join(config.directory, "export"),
        model_name=best["model"],
        class_names=list(info.class_names) or None,
    )
    files.write_json(marker, {"trial": best["trial"], "path": path})
    return path


__all__ = [
    "BayesianOptimization",
    "DEFAULT_MAX_TRIALS",
    "FAMILIES",
    "GridSearch",
    "Hyperband",
    "NON_IDENTITY_FIELDS",
    "OBJECTIVE_METRICS",
    "PAPER_DEPTHS",
    "PAPER_GRID",
    "RESULTS_COLUMNS",
    "RandomSearch",
    "ResNetHyperModel",
    "ResumableGridSearchOracle",
    "SPACE_FIELDS",
    "SearchSpace",
    "TRIAL_FIELDS",
    "TUNERS",
    "TrialInUse",
    "TrialPreempted",
    "TuneConfig",
    "build_tuner",
    "check_search_dir",
    "default_space",
    "export_best",
    "make_objective",
    "max_epochs",
    "measure_and_export",
    "model_name",
    "results_markdown",
    "search",
    "shared_train_config",
    "summarize",
    "trial_rows",
    "write_results",
]
