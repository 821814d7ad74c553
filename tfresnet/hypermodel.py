"""The KerasTuner hypermodel over the one training path: a trial's model from `train.make_model`,
trained by `train.fit_model`."""

import dataclasses
import math
import os
import time

import keras
import keras_tuner
import tensorflow as tf

from tfresnet import compat, files, rundir, specs, tune_config
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

    def trial_config(
        self, values: dict, run_dir: str | None = None, epochs: int | None = None
    ) -> train_lib.TrainConfig:
        """The base TrainConfig with one trial's hyperparameter values filled in."""
        base = self.base_config
        depth = values["depth"]
        shortcut = values.get("shortcut", base.shortcut)
        if shortcut is None:
            shortcut = specs.get_spec(
                tune_config.model_name(self.family, depth, "A")
            ).default_shortcut
        model = tune_config.model_name(self.family, depth, shortcut)
        if values.get("width_multiplier") is not None:
            model = f"{model}:width_multiplier={values['width_multiplier']:g}"
        overrides = dict(
            model=model,
            shortcut=shortcut,
            preact=bool(values.get("preact", base.preact)),
            learning_rate=values.get("learning_rate", base.learning_rate),
            weight_decay=values.get("weight_decay", base.weight_decay),
            **{n: values.get(n, getattr(base, n)) for n in tune_config.RECIPE_DIMENSIONS},
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
                held=held,  # the tuner's hold of the trial's run directory (`tuners`)
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
