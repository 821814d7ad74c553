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
"""

import contextlib
import csv
import dataclasses
import functools
import io
import json
import math
import os
import time

import keras
import keras_tuner
import tensorflow as tf
from keras_tuner.src.engine.tuner_utils import SaveBestEpoch

from tfresnet import (
    blocks,
    distribute,
    files,
    markdown,
    pipeline,
    rundir,
    runlock,
    specs,
    untrusted,
)
from tfresnet import config as config_lib
from tfresnet import results as results_lib
from tfresnet import train as train_lib
from tfresnet.config import at_least, setting

TUNERS = ("random", "hyperband", "bayesian", "grid")
FAMILIES = specs.FAMILIES
PAPER_DEPTHS = {
    "cifar": (20, 32, 44, 56, 110),  # 6n+2 with n = 3, 5, 7, 9, 18 (paper Sec. 4.2)
    "imagenet": (18, 34, 50, 101, 152),  # paper Table 1
}
DEFAULT_MAX_TRIALS = 10  # random and bayesian; grid runs its whole grid
# TrainConfig fields the search space sets per trial (the rest of the config is shared).
SPACE_FIELDS = ("model", "shortcut", "preact", "learning_rate", "weight_decay")
# TrainConfig fields each trial sets itself: its own run directory, no test set, a fresh start.
TRIAL_FIELDS = ("run_dir", "eval_test_each_epoch", "resume", "overwrite")
# TrainConfig fields that do not define a search (a re-run may change them).
NON_IDENTITY_FIELDS = (*train_lib.NON_IDENTITY_FIELDS, "run_dir", *SPACE_FIELDS)
RESULTS_COLUMNS = (
    "trial",
    "model",
    "depth",
    "shortcut",
    "preact",
    "learning_rate",
    "weight_decay",
    "epochs",
    "val_error",
    "test_error",
    "params",
    "time_s",
    "status",
)


# --------------------------------------------------------------------------
# The search space
# --------------------------------------------------------------------------


def _as_values(name, value, kind):
    """None, or a non-empty tuple of `kind` values (a single value becomes a 1-tuple)."""
    if value is None:
        return None
    values = tuple(value) if isinstance(value, list | tuple) else (value,)
    if not values:
        raise ValueError(f"{name}: give at least one value, or None.")
    if kind is float:
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        values = tuple(float(v) for v in values) if ok else values
    else:
        ok = all(type(v) is kind for v in values)
    if not ok:
        raise ValueError(f"{name} values must be {kind.__name__}s; got {values!r}.")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} lists a value twice: {values!r}.")
    return values


SPACE_GROUP = "search space (unset: the tuner's default)"


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What to search. Each field: a list of values (searched), one value (fixed) or None.

    None takes the value from the search's base `TrainConfig` (not a hyperparameter); for
    `depth`, None means the family's depths from the paper. The defaults are the whole space;
    `PAPER_GRID` is the paper's depth x shortcut comparison. Each value is checked as the
    `TrainConfig` field of the same name checks it.
    """

    depth: tuple | int | None = setting(
        None,
        "Depths to search; default the paper's (CIFAR 20,32,44,56,110; ImageNet 18,...,152).",
        group=SPACE_GROUP,
        item=int,
    )
    shortcut: tuple | str | None = setting(
        blocks.SHORTCUTS,
        f"Shortcut options among {','.join(blocks.SHORTCUTS)} (none = plain net).",
        group=SPACE_GROUP,
        item=str,
        choices=blocks.SHORTCUTS,
    )
    preact: tuple | bool | None = setting(
        (False, True), "Pre-activation: true, false or true,false.", group=SPACE_GROUP, item=bool
    )
    learning_rate: tuple | float | None = setting(
        (0.05, 0.1, 0.2), "Learning rates (used as given).", group=SPACE_GROUP, item=float
    )
    weight_decay: tuple | float | None = setting(
        (1e-4, 5e-4), "Weight decays.", group=SPACE_GROUP, item=float
    )
    family: str | None = setting(
        None, "Model family; default by image size.", group=SPACE_GROUP, choices=FAMILIES
    )

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if field.metadata["item"] is None:
                continue
            values = _as_values(field.name, getattr(self, field.name), field.metadata["item"])
            object.__setattr__(self, field.name, values)
            if field.name in SPACE_FIELDS:
                for value in values or ():
                    config_lib.check_value(train_lib.TrainConfig, field.name, value)
        config_lib.check_fields(self)  # the family
        if self.family is not None:
            self.depths(self.family)

    def depths(self, family):
        """The depths to search for `family`, checked against the model table."""
        depths = self.depth or PAPER_DEPTHS[family]
        for depth in depths:
            model_name(family, depth, "A")  # raises, listing the allowed depths
        return depths

    def dimensions(self, family):
        """(name, values or None) in search order; the grid varies the last one fastest."""
        return (
            ("depth", self.depths(family)),
            ("shortcut", self.shortcut),
            ("preact", self.preact),
            ("learning_rate", self.learning_rate),
            ("weight_decay", self.weight_decay),
        )

    def grid_size(self, family):
        size = 1
        for _, values in self.dimensions(family):
            size *= len(values or (None,))
        return size


PAPER_GRID = SearchSpace(preact=None, learning_rate=None, weight_decay=None)


def default_space(tuner):
    """grid: the paper's depth x shortcut comparison; the sampling tuners: the whole space."""
    _check_tuner(tuner)
    return PAPER_GRID if tuner == "grid" else SearchSpace()


def model_name(family, depth, shortcut):
    """The model-table name of one trial: `cifar_resnet<d>`, `resnet<d>`, `cifar_plain<d>`, ..."""
    kind = "plain" if shortcut == "none" else "resnet"
    prefix = "cifar_" if family == "cifar" else ""
    if family == "imagenet" and depth not in specs.IMAGENET_DEPTHS:
        raise ValueError(
            f"ImageNet-family depth must be one of {sorted(specs.IMAGENET_DEPTHS)}; got {depth}."
        )
    name = f"{prefix}{kind}{depth}"
    specs.get_spec(name)  # CIFAR: 6n+2; the error lists what is allowed
    return name


# --------------------------------------------------------------------------
# Configuration of a search
# --------------------------------------------------------------------------


def shared_train_config() -> train_lib.TrainConfig:
    """The `TrainConfig` a search starts from: the defaults, with 0.1 of the training set held
    out to select on (the test set never is)."""
    return train_lib.TrainConfig(validation_size=0.1)


def _check_objective(name, value):
    make_objective(value)


@dataclasses.dataclass
class TuneConfig:
    """Everything that defines a search; saved as `search.json` in its directory.

    Each field is written once, here, with its help (`tfresnet tune --help`) and its check.
    """

    train: train_lib.TrainConfig = setting(
        default_factory=shared_train_config,
        help="What every trial shares: data, recipe, budget, strategy (not SPACE_FIELDS, "
        "TRIAL_FIELDS).",
    )
    tuner: str = setting("random", "KerasTuner algorithm.", group="search", choices=TUNERS)
    space: SearchSpace | None = setting(None, "What to search; None: default_space(tuner).")
    directory: str | None = setting(
        None, "Search directory; default runs/tune-<tuner>-<data>.", group="search"
    )
    max_trials: int | None = setting(
        None,
        f"Trials; default the whole grid, or {DEFAULT_MAX_TRIALS} (random/bayesian).",
        group="search",
        check=at_least(1),
    )
    objective: str = setting(
        "val_accuracy",
        "Validation metric to select on (a metric a trial logs, or name:min|max).",
        group="search",
        check=_check_objective,
    )
    hyperband_factor: int = setting(
        3,
        "Hyperband reduction factor: each round keeps 1/factor of the trials.",
        group="search",
        check=at_least(2, why="each round keeps 1/factor of the trials"),
    )
    hyperband_iterations: int = setting(
        1, "Hyperband iterations.", group="search", check=at_least(1)
    )
    bayesian_initial_points: int | None = setting(
        None,
        "Random trials before the Bayesian model; default KerasTuner's (3 x dimensions).",
        group="search",
        check=at_least(1),
    )
    max_retries_per_trial: int = setting(
        0, "Reruns of a trial that crashed unexpectedly.", group="search", check=at_least(0)
    )
    max_consecutive_failed_trials: int = setting(
        3, "Stop after this many failures in a row.", group="search", check=at_least(1)
    )
    evaluate_best: bool = setting(
        True, "Test error of the best trial, after selection.", group="search"
    )
    overwrite: bool = setting(
        False, "Delete the search in --directory and start again.", group="search"
    )

    def __post_init__(self):
        config_lib.check_fields(self)
        if self.space is None:
            self.space = default_space(self.tuner)
        if self.directory is None:
            self.directory = os.path.join(
                "runs", f"tune-{self.tuner}-{train_lib._slug(self.train.dataset)}"
            )
        if not self.train.validation_size and self.objective.startswith("val_"):
            raise ValueError(
                f"objective {self.objective!r} needs a validation split: set validation_size "
                "(e.g. 0.1 of train, or 5000 for the paper's 45k/5k CIFAR-10 split). The test "
                "set is never used for selection."
            )
        if self.tuner == "hyperband" and (self.train.steps or self.train.budget):
            raise ValueError(
                "hyperband counts a trial's budget in epochs: give epochs (the most one trial "
                "trains), not steps or budget."
            )

    def identity(self):
        """What must match for a re-run to continue this search."""
        values = dataclasses.asdict(self)
        values.pop("overwrite")
        values.pop("directory")
        values["train"] = _run_identity(values["train"])
        return json.loads(json.dumps(values, default=str))


def _run_identity(train: dict) -> dict:
    """A trial config's fields that define what it computes (not `NON_IDENTITY_FIELDS`)."""
    return {k: v for k, v in train.items() if k not in NON_IDENTITY_FIELDS}


def _check_tuner(tuner):
    config_lib.check_choice("tuner", tuner, TUNERS)


def max_epochs(train_config):
    """The most epochs one Hyperband trial trains: the base config's epochs."""
    epochs = train_config.epochs or train_lib.DEFAULT_EPOCHS.get(train_config.dataset)
    if epochs is None:
        raise ValueError("hyperband needs the budget in epochs: pass epochs.")
    return epochs


# --------------------------------------------------------------------------
# The hypermodel: KerasTuner's build/fit over the one training path
# --------------------------------------------------------------------------


class ResNetHyperModel(keras_tuner.HyperModel):
    """Builds a trial's ResNet with `train.make_model` and trains it with `train.fit_model`.

    The strategy and the data are made once (on first use) and shared by all trials.
    """

    def __init__(self, base_config, space, *, strategy=None, data=None):
        super().__init__(name="tfresnet")
        self.base_config = base_config
        self.space = space
        self._strategy = strategy
        self._data = data

    @property
    def strategy(self):
        if self._strategy is None:
            self._strategy = train_lib.make_strategy(self.base_config)
        return self._strategy

    @property
    def data(self):
        if self._data is None:
            self.strategy  # noqa: B018 -- mirrored on CPU must split the CPU before TF starts
            self._data = train_lib.load_run_data(self.base_config)
        return self._data

    @property
    def family(self):
        return self.space.family or ("cifar" if self.data.info.style == "cifar" else "imagenet")

    def declare_hyperparameters(self, hp):
        """Register the space: a Choice per searched field, a Fixed per fixed one."""
        for name, values in self.space.dimensions(self.family):
            if values is None:
                continue
            if len(values) == 1:
                hp.Fixed(name, values[0])
            else:
                hp.Choice(name, list(values))

    def trial_config(self, values, run_dir=None, epochs=None):
        """The base TrainConfig with one trial's hyperparameter values filled in."""
        base = self.base_config
        depth = values["depth"]
        shortcut = values.get("shortcut", base.shortcut)
        if shortcut is None:
            shortcut = specs.get_spec(model_name(self.family, depth, "A")).default_shortcut
        overrides = dict(
            model=model_name(self.family, depth, shortcut),
            shortcut=shortcut,
            preact=bool(values.get("preact", base.preact)),
            learning_rate=values.get("learning_rate", base.learning_rate),
            weight_decay=values.get("weight_decay", base.weight_decay),
            run_dir=run_dir or base.run_dir,
            export=False,  # only the best model is exported, at the end of the search
            eval_test_each_epoch=False,  # trials never touch the test set
            resume=False,
            overwrite=False,
        )
        if epochs is not None:  # Hyperband's rounds
            overrides.update(epochs=epochs, steps=None, budget=None)
        return dataclasses.replace(base, **overrides)

    def build(self, hp):
        self.declare_hyperparameters(hp)
        config = self.trial_config(hp.values)
        keras.utils.set_random_seed(config.seed)
        return train_lib.make_model(config, self.data.info, self.strategy)

    def fit(
        self, hp, model, *args, run_dir=None, epochs=None, initial_epoch=0, held=None, **kwargs
    ):
        """Train `model` for one trial; returns the last epoch's metrics (the objective's too).

        Hyperband passes `epochs`/`initial_epoch`: a trial it continues starts from the parent
        trial's weights and trains the remaining epochs with its own learning-rate schedule.
        """
        callbacks = [_checkpoint_atomically(c, self.strategy) for c in kwargs.pop("callbacks", [])]
        rounds = None if epochs is None else epochs - initial_epoch
        config = self.trial_config(hp.values, run_dir=run_dir, epochs=rounds)
        files.makedirs(config.run_dir)
        files.write_json(os.path.join(config.run_dir, "config.json"), dataclasses.asdict(config))
        try:
            train_lib.fit_model(
                config,
                strategy=self.strategy,
                data=self.data,
                model=model,
                extra_callbacks=callbacks,
                evaluate_test=False,
                held=held,  # the tuner's hold of the trial's run directory
            )
        except (train_lib.TrainingError, tf.errors.ResourceExhaustedError) as err:
            # Deterministic failures (divergence, out of memory): record, do not retry.
            raise keras_tuner.errors.FailedTrialError(f"{type(err).__name__}: {err}") from err
        except rundir.Preempted as err:
            raise TrialPreempted(err.epoch, err.batch) from err
        history = rundir.read_history(os.path.join(config.run_dir, "history.csv"))
        return {k: v[-1] for k, v in history.items() if k != "epoch" and v and math.isfinite(v[-1])}


# --------------------------------------------------------------------------
# Tuners
# --------------------------------------------------------------------------


class _TrialRunner:
    """What tfresnet adds to each KerasTuner tuner: a run directory and an attempt log per trial.

    Also declares the space without building a model (KerasTuner builds one to discover it),
    writes the search state (tuner, oracle and trial JSON files) whole or not at all, and holds
    each trial's run directory from the trial's start until the oracle has ended it: until then
    the oracle hands the same trial to a tuner restarted under the same id.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.oracle, keras_tuner.Oracle):  # a worker holds a client of the chief's
            _write_state_atomically(self.oracle)
        self._trial_hold = contextlib.ExitStack()
        self._held = None  # the `runlock.Hold` of the running trial's run directory

    def search(self, *args, **kwargs):
        try:
            return super().search(*args, **kwargs)
        finally:  # a trial ended by an exception (a kill, TrialInUse) never reached on_trial_end
            self._trial_hold.close()

    def on_trial_begin(self, trial):
        run_dir = self._run_dir(trial)
        if distribute.writes_run_dir(self.hypermodel.strategy):
            files.makedirs(run_dir)
            hold = runlock.exclusive(run_dir)
            refusal = TrialInUse(_trial_in_use(trial.trial_id, run_dir))
            self._held = _hold(self._trial_hold, hold, refusal)
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        try:
            super().on_trial_end(trial)
        finally:
            self._trial_hold.close()

    def _run_dir(self, trial):
        return os.path.join(self.get_trial_dir(trial.trial_id), "run")

    def save(self):
        """KerasTuner's `BaseTuner.save`, with atomic writes (`_write_state_atomically`)."""
        if not self._is_worker():
            self.oracle.save()
        _write_state(self._get_tuner_fname(), self.get_state())

    def _populate_initial_space(self):
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        """KerasTuner's, in the trial's run directory; appends the attempt (tuner, pid, seconds,
        outcome) to the trial's attempts.jsonl."""
        run_dir = self._run_dir(trial)
        _clear_unresumable(run_dir)
        start, outcome = time.perf_counter(), "completed"
        try:
            return super().run_trial(trial, *args, run_dir=run_dir, held=self._held, **kwargs)
        except BaseException as err:
            outcome = type(err).__name__
            raise
        finally:
            _append_jsonl(
                os.path.join(self.get_trial_dir(trial.trial_id), "attempts.jsonl"),
                {
                    "tuner_id": self.tuner_id,
                    "pid": os.getpid(),
                    "seconds": round(time.perf_counter() - start, 3),
                    "outcome": outcome,
                },
            )


def _write_state_atomically(oracle):
    """Make this oracle write oracle.json and each trial.json whole or not at all.

    KerasTuner overwrites its state files in place: a kill in mid-write leaves half a file that
    the next run cannot reload, and on ram:// (where an overwrite appends) two JSON documents in
    one. Only this oracle instance is changed.
    """
    oracle.save = lambda: _write_state(oracle._get_oracle_fname(), oracle.get_state())
    oracle._save_trial = lambda trial: _write_state(
        os.path.join(oracle._get_trial_dir(trial.trial_id), "trial.json"), trial.get_state()
    )


def _write_state(path, state):
    """KerasTuner's JSON (NaN allowed: it reads its own files back), written atomically."""
    files.write_text(path, json.dumps(state))


def _checkpoint_atomically(callback, strategy):
    """KerasTuner's best-epoch checkpoint (`SaveBestEpoch`), saved with `files.save_weights`:
    whole or not at all, for the same reasons as `_write_state_atomically`; Hyperband starts a
    continued trial from it. Other callbacks are returned as they are."""
    if not isinstance(callback, SaveBestEpoch):
        return callback

    def save_model():
        # Every worker saves (reading synchronized variables is collective); the chief's counts.
        with distribute.writable_dir(os.path.dirname(callback.filepath), strategy) as folder:
            target = files.join(folder, os.path.basename(callback.filepath))
            files.save_weights(callback.model, target)

    callback._save_model = save_model
    return callback


class TrialPreempted(rundir.Preempted, keras_tuner.errors.FatalError):
    """A stop request (SIGTERM) ended a trial after its backup. Fatal to the search, so that
    KerasTuner neither records the trial as failed nor goes on to the next one (each would stop
    at once); the same command resumes the trial from its backup."""


class TrialInUse(runlock.RunDirInUse, keras_tuner.errors.FatalError):
    """Another process trains this trial (a tuner restarted under the same id while the old one
    lives). Fatal to this search process, so KerasTuner neither retries nor ends the trial that
    the other process is training."""


def _trial_in_use(trial_id, run_dir):
    return (
        f"Trial {trial_id} is in training in another process ({run_dir!r} is in use): a tuner "
        "with the same KERASTUNER_TUNER_ID still runs. Run the same command again once it has "
        "ended."
    )


def _hold(stack, lock, refusal):
    """Enter `lock` (a `runlock.exclusive`) on `stack`; raise `refusal` if another process
    holds the directory."""
    try:
        return stack.enter_context(lock)
    except runlock.RunDirInUse:
        raise refusal from None


def _clear_unresumable(run_dir):
    """Keep a trial's run directory only to continue an interrupted run (its backup)."""
    if files.exists(run_dir) and not rundir.resumable(run_dir):
        rundir.clear(run_dir, hint="move them out of the trial's run directory to run it again")


def _append_jsonl(path, record):
    files.append_line(path, json.dumps(record))


class RandomSearch(_TrialRunner, keras_tuner.RandomSearch):
    pass


class Hyperband(_TrialRunner, keras_tuner.Hyperband):
    pass


class BayesianOptimization(_TrialRunner, keras_tuner.BayesianOptimization):
    pass


class ResumableGridSearchOracle(keras_tuner.oracles.GridSearchOracle):
    """KerasTuner 1.4.8's grid oracle, made resumable.

    It does not save where it is in the grid, so a reloaded search stops early, or crashes with
    a KeyError once an interrupted trial finishes (keras-team/keras-tuner#1055). On reload,
    rebuild its position from the trials: every trial, in grid order, may yield its successor.
    """

    def set_state(self, state):
        super().set_state(state)
        if self._ordered_ids._data_to_index:  # a KerasTuner that restores it itself
            return
        order = sorted(
            self.trials,
            key=functools.cmp_to_key(
                lambda a, b: self._compare(
                    self.trials[a].hyperparameters.values, self.trials[b].hyperparameters.values
                )
            ),
        )
        for trial_id in order:
            self._ordered_ids.insert(trial_id)
        self._populate_next = list(order)


class GridSearch(_TrialRunner, keras_tuner.Tuner):
    """keras_tuner.GridSearch over `ResumableGridSearchOracle`."""

    def __init__(self, hypermodel, *, max_trials=None, **kwargs):
        oracle_args = {
            k: kwargs.pop(k)
            for k in (
                "objective",
                "seed",
                "max_retries_per_trial",
                "max_consecutive_failed_trials",
            )
        }
        oracle = ResumableGridSearchOracle(max_trials=max_trials, **oracle_args)
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)


def build_tuner(config, hypermodel):
    """The KerasTuner tuner `config.tuner` names, over `hypermodel`, in `config.directory`."""
    directory = files.absolute(config.directory)
    common = dict(
        hypermodel=hypermodel,
        objective=make_objective(config.objective),
        seed=config.train.seed,
        max_retries_per_trial=config.max_retries_per_trial,
        max_consecutive_failed_trials=config.max_consecutive_failed_trials,
        directory=os.path.dirname(directory),
        project_name=os.path.basename(directory),
        # check_search_dir already emptied an overwritten search (the chief's or a lone
        # tuner's) and wrote its search.json, which KerasTuner's overwrite would delete again.
        overwrite=False,
        distribution_strategy=hypermodel.strategy,
    )
    if config.tuner == "hyperband":
        return Hyperband(
            max_epochs=max_epochs(config.train),
            factor=config.hyperband_factor,
            hyperband_iterations=config.hyperband_iterations,
            **common,
        )
    if config.tuner == "grid":
        return GridSearch(max_trials=config.max_trials, **common)
    max_trials = config.max_trials or DEFAULT_MAX_TRIALS
    if config.tuner == "bayesian":
        return BayesianOptimization(
            max_trials=max_trials, num_initial_points=config.bayesian_initial_points, **common
        )
    return RandomSearch(max_trials=max_trials, **common)


# What `train.fit_model` logs each epoch, so what a trial can be selected on.
_EPOCH_METRICS = ("accuracy", "loss", "top5_accuracy")  # and each with val_
OBJECTIVE_METRICS = (*_EPOCH_METRICS, *(f"val_{m}" for m in _EPOCH_METRICS), "weight_decay_loss")


def make_objective(text):
    """A `keras_tuner.Objective` from "val_accuracy", "val_loss" or "name:max" / "name:min".

    The direction is inferred here, not by KerasTuner, which builds a Keras metric to find it
    and so starts TensorFlow before a mirrored strategy could split the CPU.
    """
    name, _, direction = text.partition(":")
    if name not in OBJECTIVE_METRICS:
        raise ValueError(f"objective {text!r}: a trial logs {', '.join(OBJECTIVE_METRICS)}.")
    if not direction:
        if name.endswith(("loss", "error")):
            direction = "min"
        elif name.endswith(("accuracy", "acc")):
            direction = "max"
    if direction not in ("min", "max"):
        raise ValueError(
            f"objective {text!r}: give the direction, {name}:max or {name}:min (min or max)."
        )
    return keras_tuner.Objective(name, direction)


def _is_worker():
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )


def _is_chief():
    return "KERASTUNER_ORACLE_IP" in os.environ and not _is_worker()


# --------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------


def check_search_dir(config):
    """Refuse to continue a different search in the same directory; save this one's config."""
    path = os.path.join(config.directory, "search.json")
    if config.overwrite and not _is_worker():
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
            saved["train"] = _run_identity(train)
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
    if space.family or not _is_chief():
        space.depths(hypermodel.family)
        return
    refusals = []
    for family in FAMILIES:
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


def search(config, *, strategy=None, data=None, verbose=None):
    """Run (or continue) the search `config` describes; returns the results dict.

    On a distributed worker it runs trials until the chief's oracle has no more, and returns
    `{"worker": tuner_id}`; the chief (or a single process) writes the results and the export.
    The chief (or a lone tuner) holds the search directory throughout and each trial's process
    its run directory (`runlock`): `runlock.RunDirInUse` if the same search runs elsewhere,
    `TrialInUse` if another process trains this tuner's trial; both worth a retry later.
    """
    files.check_output_dir(config.directory, "directory", unset="runs/tune-<tuner>-<dataset>")
    hypermodel = ResNetHyperModel(config.train, config.space, strategy=strategy, data=data)
    with contextlib.ExitStack() as stack:
        if not _is_worker() and distribute.writes_run_dir(hypermodel.strategy):
            files.makedirs(config.directory)
            refusal = runlock.RunDirInUse(
                f"Search directory {config.directory!r} is in use: another tfresnet tune runs "
                "this search. Run the same command again once it has ended (it continues the "
                "search), or use another --directory."
            )
            _hold(stack, runlock.exclusive(config.directory), refusal)
        _check_depths(config.space, hypermodel)
        check_search_dir(config)
        tuner = build_tuner(config, hypermodel)
        tuner.search(
            verbose=train_lib.keras_verbose(config.train.verbose) if verbose is None else verbose
        )
        if _is_worker():
            return {"worker": tuner.tuner_id}
        return summarize(config, tuner, hypermodel)


def trial_rows(tuner, hypermodel):
    """One dict per trial (RESULTS_COLUMNS plus details), in trial order."""
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        trial_dir = tuner.get_trial_dir(trial_id)
        results = _read_json(os.path.join(trial_dir, "run", rundir.RESULTS))
        attempts = _read_jsonl(os.path.join(trial_dir, "attempts.jsonl"))
        values = trial.hyperparameters.values
        config = hypermodel.trial_config(values)
        schedule = (results or {}).get("schedule", {})
        rows.append(
            {
                "trial": trial_id,
                "model": config.model,
                "depth": values["depth"],
                "shortcut": config.shortcut,
                "preact": config.preact,
                "learning_rate": schedule.get("learning_rate", config.learning_rate),
                "weight_decay": schedule.get("weight_decay", config.weight_decay),
                "epochs": schedule.get("epochs"),
                "val_error": (results or {}).get("final", {}).get("val_error"),
                "test_error": None,
                "params": (results or {}).get("model", {}).get("params"),
                "time_s": sum(a["seconds"] for a in attempts) if attempts else None,
                "status": trial.status,
                "score": trial.score,
                "tuner_ids": [a["tuner_id"] for a in attempts],
                "message": _last_line(trial.message),
                "run_dir": os.path.join(trial_dir, "run"),
            }
        )
    return rows


def summarize(config, tuner, hypermodel):
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


def measure_and_export(config, best, hypermodel):
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


def export_best(config, best, model, info):
    """Export the best model once per best trial (a re-run that selects it again reuses it)."""
    marker = os.path.join(config.directory, "best_export.json")
    done = _read_json(marker)
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


# --------------------------------------------------------------------------
# The results table
# --------------------------------------------------------------------------


def write_results(directory, results):
    """results.json (everything), results.csv and results.md (the table)."""
    files.write_json(os.path.join(directory, "results.json"), results)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=RESULTS_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in results["trials"]:
        writer.writerow({k: "" if row[k] is None else row[k] for k in RESULTS_COLUMNS})
    files.write_text(os.path.join(directory, "results.csv"), table.getvalue())
    files.write_text(os.path.join(directory, "results.md"), results_markdown(results) + "\n")


def results_markdown(results):
    """The trials as a markdown table, then a line on the best trial."""
    header = ["trial", "model", "depth", "shortcut", "preact", "lr", "weight decay", "epochs"]
    header += ["val error", "test error", "params", "time (s)", "status"]
    best_trial = (results["best"] or {}).get("trial")
    rows = []
    for row in results["trials"]:
        best = row["trial"] == best_trial
        cells = [
            row["trial"] + (" (best)" if best else ""),
            row["model"],
            row["depth"],
            row["shortcut"],
            "yes" if row["preact"] else "no",
            _number(row["learning_rate"]),
            _number(row["weight_decay"]),
            row["epochs"] if row["epochs"] is not None else "-",
            _percent(row["val_error"]),
            _percent(row.get("test_error")),
            f"{row['params']:,}" if row["params"] is not None else "-",
            f"{row['time_s']:.0f}" if row["time_s"] is not None else "-",
            row["status"]
            + (f": {row['message']}" if row["status"] != "COMPLETED" and row["message"] else ""),
        ]
        rows.append(cells)
    lines = [markdown.table(header, rows)]
    best = results["best"]
    if best:
        lines.append(
            f"\nBest ({results['objective']}): trial {best['trial']}, {best['model']} "
            f"(shortcut {best['shortcut']}), val error {_percent(best['val_error'])}"
            + (
                f", test error {_percent(best['test_error'])}"
                if best.get("test_error") is not None
                else ""
            )
            + (f"; exported to {best['export']}" if best.get("export") else "")
            + "."
        )
    else:
        lines.append("\nNo trial completed.")
    return "\n".join(lines)


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def _number(value):
    return "recipe" if value is None else f"{value:g}"


def _last_line(message):
    """The error of a failed trial's traceback, without the FailedTrialError wrapper."""
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1].strip().split("FailedTrialError: ", 1)[-1] if lines else None


def _read_json(path):
    return files.read_json(path) if files.exists(path) else None


def _read_jsonl(path):
    if not files.exists(path):
        return []
    return [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]
