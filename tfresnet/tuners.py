"""The KerasTuner tuners of a search, each with a run directory, a lock and an attempt log per
trial (and the `compat` fixes of KerasTuner's internals); `build_tuner` picks one."""

import contextlib
import json
import os
import time

import keras_tuner

from tfresnet import compat, distribute, files, rundir, runlock, tune_config


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
            hold = runlock.exclusive(run_dir)
            self._held = hold_or_refuse(
                self._trial_hold, hold, TrialInUse(_trial_in_use(trial.trial_id, run_dir))
            )
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
            _append_jsonl(
                os.path.join(self.get_trial_dir(trial.trial_id), "attempts.jsonl"),
                {
                    "tuner_id": self.tuner_id,
                    "pid": os.getpid(),
                    "seconds": round(time.perf_counter() - start, 3),
                    "outcome": outcome,
                },
            )


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


def hold_or_refuse(
    stack: contextlib.ExitStack, lock: contextlib.AbstractContextManager, refusal: Exception
) -> runlock.Hold:
    """Enter `lock` (a `runlock.exclusive`) on `stack` and return its hold; raise `refusal` if
    another process holds the directory."""
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
        oracle = compat.ResumableGridSearchOracle(max_trials=max_trials, **oracle_args)
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)


def build_tuner(
    config: tune_config.TuneConfig, hypermodel: keras_tuner.HyperModel
) -> keras_tuner.Tuner:
    """The KerasTuner tuner `config.tuner` names, over `hypermodel`, in `config.directory`."""
    directory = files.absolute(config.directory)
    common = dict(
        hypermodel=hypermodel,
        objective=tune_config.make_objective(config.objective),
        seed=config.train.seed,
        max_retries_per_trial=config.max_retries_per_trial,
        max_consecutive_failed_trials=config.max_consecutive_failed_trials,
        directory=os.path.dirname(directory),
        project_name=os.path.basename(directory),
        # check_search_dir already emptied an overwritten search (the chief's or a lone
        # tuner's) and wrote its search.json, which KerasTuner's overwrite would delete again.
        overwrite=False,
        distribution_strategy=hypermodel.strategy,
        keep_trial_models=config.keep_trial_models,
    )
    if config.tuner == "hyperband":
        return Hyperband(
            max_epochs=tune_config.max_epochs(config.train),
            factor=config.hyperband_factor,
            hyperband_iterations=config.hyperband_iterations,
            **common,
        )
    if config.tuner == "grid":
        return GridSearch(max_trials=config.max_trials, **common)
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
