"""The KerasTuner side of a search: the hypermodel over the one training path (`train.make_model`,
`train.fit_model`), and the tuners, each with a run directory, a lock and an attempt log per
trial (and the `compat` fixes of KerasTuner's internals); `build_tuner` picks one."""

import contextlib
import dataclasses
import functools
import json
import math
import os
import time

import keras
import keras_tuner
import tensorflow as tf

from tfresnet import compat, distribute, files, precision, rundir, runlock, specs, tune_config
from tfresnet import train as train_lib


class ResNetHyperModel(keras_tuner.HyperModel):
    """Builds a trial's ResNet with `train.make_model` and trains it with `train.fit_model`.

    The strategy and the data are made once (on first use) and shared by all trials.
    """

    def __init__(
        self, base_config, space, *, strategy=None, data=None, time_budget=None, target=None
    ):
        super().__init__(name="tfresnet")
        self.base_config = base_config
        self.space = space
        self.time_budget = time_budget  # seconds a trial may train (TuneConfig.trial_time_budget)
        self.target = target  # the validation accuracy of a time_to objective
        if strategy is not None:
            self.strategy = strategy
        if data is not None:
            self.data = data

    @functools.cached_property
    def strategy(self) -> tf.distribute.Strategy:
        return train_lib.make_strategy(self.base_config)

    @functools.cached_property
    def data(self):
        self.strategy  # noqa: B018 -- mirrored on CPU must split the CPU before TF starts
        return train_lib.load_run_data(self.base_config)

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

    def trial_config(
        self, values: dict, run_dir: str | None = None, epochs: int | None = None
    ) -> train_lib.TrainConfig:
        """The base TrainConfig with one trial's hyperparameter values filled in."""
        base = self.base_config
        overrides = {n: values.get(n, getattr(base, n)) for n in tune_config.TRAIN_DIMENSIONS}
        depth, shortcut = values["depth"], overrides["shortcut"]
        if shortcut is None:
            shortcut = specs.get_spec(
                tune_config.model_name(self.family, depth, "A")
            ).default_shortcut
        model = tune_config.model_name(self.family, depth, shortcut)
        if values.get("width_multiplier") is not None:
            model = f"{model}:width_multiplier={values['width_multiplier']:g}"
        overrides.update(
            model=model,
            shortcut=shortcut,
            preact=bool(overrides["preact"]),
            run_dir=run_dir or base.run_dir,
            export=False,  # only the best model is exported, at the end of the search
            eval_test_each_epoch=False,  # trials never touch the test set
            resume=False,
            overwrite=False,
        )
        if epochs is not None:  # Hyperband's rounds
            overrides.update(epochs=epochs, steps=None, budget=None)
        return dataclasses.replace(base, **overrides)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        self.declare_hyperparameters(hp)
        config = self.trial_config(hp.values)
        keras.utils.set_random_seed(config.seed)
        # fit_model trains in the same policy, which it sets itself.
        with precision.policy_scope(config.precision, self.strategy):
            return train_lib.make_model(config, self.data.info, self.strategy)

    def fit(
        self, hp, model, *args, run_dir=None, epochs=None, initial_epoch=0, held=None, **kwargs
    ):
        """Train `model` for one trial; returns the last epoch's metrics (the objective's too).

        Hyperband passes `epochs`/`initial_epoch`: a trial it continues starts from the parent
        trial's weights and trains the remaining epochs with its own learning-rate schedule.
        """
        callbacks = [
            TrialClock(self.time_budget, self.target),  # first: KerasTuner's see its logs
            *(compat.checkpoint_atomically(c, self.strategy) for c in kwargs.pop("callbacks", [])),
        ]
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
                held=held,  # the tuner's hold of the trial's run directory (`_TrialRunner`)
            )
        except (train_lib.TrainingError, tf.errors.ResourceExhaustedError) as err:
            # Deterministic failures (divergence, out of memory): record, do not retry.
            raise keras_tuner.errors.FailedTrialError(f"{type(err).__name__}: {err}") from err
        except rundir.Preempted as err:
            raise TrialPreempted(err.epoch, err.batch) from err
        history = rundir.read_history(os.path.join(config.run_dir, "history.csv"))
        return {k: v[-1] for k, v in history.items() if k != "epoch" and v and math.isfinite(v[-1])}


class TrialPreempted(rundir.Preempted, keras_tuner.errors.FatalError):
    """A stop request (SIGTERM) ended a trial after its backup. Fatal to the search, so that
    KerasTuner neither records the trial as failed nor goes on to the next one (each would stop
    at once); the same command resumes the trial from its backup."""


class TrialInUse(runlock.RunDirInUse, keras_tuner.errors.FatalError):
    """Another process trains this trial (a tuner restarted under the same id while the old one
    lives). Fatal to this search process, so KerasTuner neither retries nor ends the trial that
    the other process is training."""


class TrialClock(keras.callbacks.Callback):
    """A trial's clock: each epoch's logs get `trial_seconds` (wall seconds since its training
    began, validation included); with a `budget` the trial stops at the end of the epoch in
    which the budget is spent; with a `target` the logs get `time_to_<target>`, the seconds at
    which val_accuracy first reached it within the budget, or the budget itself until then (so a
    trial that never reaches it scores its budget, behind every trial that did)."""

    def __init__(self, budget: float | None = None, target: float | None = None):
        super().__init__()
        self.budget, self.target = budget, target
        self.reached = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._start
        if logs is None:
            return
        logs["trial_seconds"] = elapsed
        within = self.budget is None or elapsed <= self.budget
        if self.target is not None:
            if self.reached is None and within and logs.get("val_accuracy", 0) >= self.target:
                self.reached = elapsed
            logs[tune_config.time_to_metric(self.target)] = (
                self.reached if self.reached is not None else self.budget
            )
        if self.budget is not None and elapsed >= self.budget:
            self.model.stop_training = True


class _TrialRunner(compat.KerasTunerFixes):
    """What tfresnet adds to each KerasTuner tuner: a run directory and an attempt log per trial.

    It holds each trial's run directory from the trial's start until the oracle has ended it:
    until then the oracle hands the same trial to a tuner restarted under the same id.
    """

    def __init__(self, *args, keep_trial_models: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._trial_hold = contextlib.ExitStack()
        self._held = None  # the `runlock.Hold` of the running trial's run directory
        self.keep_trial_models = keep_trial_models

    def search(self, *args, **kwargs):
        try:
            return super().search(*args, **kwargs)
        finally:  # a trial ended by an exception (a kill, TrialInUse) never reached on_trial_end
            self._trial_hold.close()

    def on_trial_begin(self, trial):
        run_dir = self._run_dir(trial)
        if distribute.writes_run_dir(self.hypermodel.strategy):
            files.makedirs(run_dir)
            refusal = TrialInUse(
                f"Trial {trial.trial_id} is in training in another process ({run_dir!r} is in "
                "use): a tuner with the same KERASTUNER_TUNER_ID still runs. Run the same "
                "command again once it has ended."
            )
            self._held = hold_or_refuse(self._trial_hold, run_dir, refusal)
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        try:
            super().on_trial_end(trial)
        finally:
            self._trial_hold.close()
        if not self.keep_trial_models:
            self.drop_trial_models()

    def drop_trial_models(self) -> None:
        """Keep of each finished trial what the report needs (config, history, results, logs):
        its checkpoints go, and its model.keras unless it is the best trial so far (a trial
        that is not the best never becomes it again). Hyperband keeps KerasTuner's best-epoch
        weights, from which it continues a promoted trial."""
        best = {t.trial_id for t in self.oracle.get_best_trials(1)}
        project = self.project_dir
        for name in files.listdir(project):
            run_dir = files.join(project, name, "run")
            if not name.startswith("trial_") or not rundir.finished(run_dir):
                continue
            files.remove(files.join(run_dir, "checkpoints"))
            if not isinstance(self, keras_tuner.Hyperband):
                files.remove(files.join(project, name, "checkpoint.weights.h5"))
            if name[len("trial_") :] not in best:
                files.remove(files.join(run_dir, "model.keras"))

    def _run_dir(self, trial):
        return os.path.join(self.get_trial_dir(trial.trial_id), "run")

    def run_trial(self, trial, *args, **kwargs):
        """KerasTuner's, in the trial's run directory, releasing the trial's graphs at its end;
        appends the attempt (tuner, pid, seconds, outcome) to the trial's attempts.jsonl."""
        run_dir = self._run_dir(trial)
        _clear_unresumable(run_dir)
        start, outcome = time.perf_counter(), "completed"
        try:
            # Each trial's traced graphs go with it: a process running many trials stays level.
            with compat.released_custom_gradients():
                return super().run_trial(trial, *args, run_dir=run_dir, held=self._held, **kwargs)
        except BaseException as err:
            outcome = type(err).__name__
            raise
        finally:
            attempt = {
                "tuner_id": self.tuner_id,
                "pid": os.getpid(),
                "seconds": round(time.perf_counter() - start, 3),
                "outcome": outcome,
            }
            path = os.path.join(self.get_trial_dir(trial.trial_id), "attempts.jsonl")
            files.append_line(path, json.dumps(attempt))


# Each KerasTuner tuner as a `_TrialRunner`; grid's oracle is `compat.ResumableGridSearchOracle`.
RandomSearch, Hyperband, BayesianOptimization, GridSearch = (
    type(name, (_TrialRunner, base), {"__module__": __name__})
    for name, base in (
        ("RandomSearch", keras_tuner.RandomSearch),
        ("Hyperband", keras_tuner.Hyperband),
        ("BayesianOptimization", keras_tuner.BayesianOptimization),
        ("GridSearch", keras_tuner.Tuner),
    )
)


def hold_or_refuse(stack: contextlib.ExitStack, directory: str, refusal: Exception) -> runlock.Hold:
    """Hold `directory` (`runlock.exclusive`) on `stack` and return the hold; raise `refusal` if
    another process holds it."""
    try:
        return stack.enter_context(runlock.exclusive(directory))
    except runlock.RunDirInUse:
        raise refusal from None


def _clear_unresumable(run_dir):
    """Keep a trial's run directory only to continue an interrupted run (its backup)."""
    if files.exists(run_dir) and not rundir.resumable(run_dir):
        rundir.clear(run_dir, hint="move them out of the trial's run directory to run it again")


def build_tuner(
    config: tune_config.TuneConfig, hypermodel: keras_tuner.HyperModel
) -> keras_tuner.Tuner:
    """The KerasTuner tuner `config.tuner` names, over `hypermodel`, in `config.directory`."""
    directory = files.absolute(config.directory)
    oracle_args = dict(
        objective=tune_config.make_objective(config.objective),
        seed=config.train.seed,
        max_retries_per_trial=config.max_retries_per_trial,
        max_consecutive_failed_trials=config.max_consecutive_failed_trials,
    )
    tuner_args = dict(
        hypermodel=hypermodel,
        directory=os.path.dirname(directory),
        project_name=os.path.basename(directory),
        # check_search_dir already emptied an overwritten search (the chief's or a lone
        # tuner's) and wrote its search.json, which KerasTuner's overwrite would delete again.
        overwrite=False,
        distribution_strategy=hypermodel.strategy,
        keep_trial_models=config.keep_trial_models,
    )
    if config.tuner == "grid":
        oracle = compat.ResumableGridSearchOracle(max_trials=config.max_trials, **oracle_args)
        return GridSearch(oracle=oracle, **tuner_args)
    common = {**oracle_args, **tuner_args}
    if config.tuner == "hyperband":
        return Hyperband(
            max_epochs=tune_config.max_epochs(config.train),
            factor=config.hyperband_factor,
            hyperband_iterations=config.hyperband_iterations,
            **common,
        )
    max_trials = config.max_trials or tune_config.DEFAULT_MAX_TRIALS
    if config.tuner == "bayesian":
        return BayesianOptimization(
            max_trials=max_trials, num_initial_points=config.bayesian_initial_points, **common
        )
    return RandomSearch(max_trials=max_trials, **common)


def is_worker() -> bool:
    """Whether this process is a worker of a distributed search (KerasTuner's variables)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )


def is_chief() -> bool:
    """Whether this process is the chief (the oracle) of a distributed search."""
    return "KERASTUNER_ORACLE_IP" in os.environ and not is_worker()
