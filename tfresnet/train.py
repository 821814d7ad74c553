"""Training: one `TrainConfig` in, one run directory (`tfresnet.rundir`) out. `train(config)`
reads as the data flows:

    resolve -> data -> schedule -> model -> compile -> fit (callbacks) -> results -> export

    from tfresnet.train import TrainConfig, train
    results = train(TrainConfig(model="resnet20", dataset="digits", epochs=30))

A run killed at any instant continues when the same command runs again: from its last committed
epoch, or, when training was over, with what was left (evaluation, saving, export).
"""

import contextlib
import math
import random
import sys
import types
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfresnet import callbacks as callbacks_lib
from tfresnet import data as data_lib
from tfresnet import (
    distribute,
    models,
    pipeline,
    precision,
    preemption,
    recipes,
    rundir,
    runlock,
    schedule,
)
from tfresnet import results as results_lib

# Where callers have always found these names:
from tfresnet.rundir import data_slug as _slug  # noqa: F401
from tfresnet.schedule import DEFAULT_EPOCHS, pick_recipe, plan_schedule  # noqa: F401
from tfresnet.train_config import (  # noqa: F401
    COMMAND_FIELDS,
    NON_IDENTITY_FIELDS,
    TrainConfig,
    TrainingError,
    check_run_dir,
)


def train(
    config: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    *,
    stop: preemption.StopRequest | None = None,
) -> dict:
    """Train the run `config` describes, or continue it; returns what results.json holds.

    Nothing is written until the config, the data, the schedule and the model are known to work,
    so a rejected command never blocks its corrected version. `callbacks` join tfresnet's own in
    `model.fit`, then see the final evaluations. Seeds (here) and the dtype policy (`fit_model`)
    are set and put back after; `stop` (default: the SIGTERM handler's) stops training after a
    backup."""
    config = check_run_dir(config)  # resolve: the run its directory holds
    strategy = make_strategy(config)
    with seeded(config.seed):
        _, results = fit_model(config, strategy=strategy, extra_callbacks=callbacks, stop=stop,
                               starts_run=True)  # fmt: skip
    return results


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Every random seed set to `seed` inside the block (`keras.utils.set_random_seed`); Python's
    and NumPy's generators and TensorFlow's global seed put back after it."""
    python, numpy, tf_seed = random.getstate(), np.random.get_state(), tf.compat.v1.get_seed(None)
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        tf.random.set_seed(tf_seed[0])


def fit_model(
    config: TrainConfig,
    *,
    strategy: tf.distribute.Strategy | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    data: data_lib.Data | None = None,
    model: keras.Model | None = None,
    evaluate_test: bool = True,
    held: runlock.Hold | None = None,
    stop: preemption.StopRequest | None = None,
    starts_run: bool = False,
) -> tuple[keras.Model, dict]:
    """Build, train and evaluate the model `config` describes: the one training path (`train`'s
    and the tuner's); returns `(model, results)`. Writes into `config.run_dir` (the chief only),
    continuing from its backup: `starts_run` (`train`) starts the run there (`rundir.started`);
    the tuner passes its hold (`held`) instead, and the `strategy`, `data` and `model` (from
    `make_model`) it made. With `evaluate_test=False` the test split is never touched. The dtype
    policy is set inside and restored; seeds are the caller's."""
    strategy = strategy or make_strategy(config)
    writer = starts_run and distribute.writes_run_dir(strategy)
    with precision.policy_scope(config.precision, strategy) as policy:
        if writer:  # refused at once, before the data loads
            rundir.check_startable(config.run_dir, config.overwrite)
        data = data or load_run_data(config)
        plan = schedule.plan_schedule(config, data.info, strategy)
        lr = schedule.learning_rate_schedule(config, plan)
        # Before --overwrite deletes the old run: a wrong --pretrained file keeps it.
        model = model or make_model(config, data.info, strategy, plan)
        with model.distribute_strategy.scope():  # a caller's model may bring its own
            compile_model(model, plan.recipe, lr, plan.steps_per_execution)
        start = rundir.started(config.run_dir, config) if writer else contextlib.nullcontext(held)
        with start as held:  # started writes config.json
            results = _fit(
                config, model, data, plan, lr, policy, extra_callbacks, evaluate_test,
                held=held, stop=stop,
            )  # fmt: skip
    return model, results


def _fit(
    config, model, data, plan, lr, policy, callbacks, evaluate_test=True, *, held, stop
) -> dict:
    """restore -> fit -> results -> export of the compiled `model` (learning rate `lr`), in
    `config.run_dir` held (`runlock`) from reading the backup on: another process could replace
    it."""
    with rundir.writing(config.run_dir, model.distribute_strategy, held) as out:
        state = _restore(config, model, lr, plan, out)
        inputs = _inputs(config, data, plan, state, model.distribute_strategy, evaluate_test)
        state = _fit_epochs(config, model, inputs, plan, state, out, callbacks, stop)
        return _finish(
            config, model, data.info, inputs, plan, state, out, policy, callbacks, evaluate_test
        )


def make_strategy(config: TrainConfig) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy `config` asks for (`distribute.make_strategy`)."""
    return distribute.make_strategy(
        config.strategy,
        num_replicas=config.num_replicas,
        tpu=config.tpu,
        peer_timeout=config.peer_timeout,
    )


def load_run_data(config: TrainConfig) -> data_lib.Data:
    return data_lib.load_data(
        config.dataset,
        data_dir=config.data_dir,
        validation_size=config.validation_size,
        image_size=config.image_size,
        download=config.download,
        seed=config.seed,
    )


def make_model(
    config: TrainConfig,
    info: data_lib.DataInfo,
    strategy: tf.distribute.Strategy,
    plan: schedule.Schedule | None = None,
) -> keras.Model:
    """The (uncompiled) model `config` describes for data `info`, built in `strategy`'s scope and
    the dtype policy in force (`fit_model`'s; the tuner's `HyperModel.build` sets its own) and
    made to train there (`distribute.multi_worker_compatible`); every path (`train`,
    `fit_model`, the tuner's build) builds it here, with the recipe and weight decay of `plan`
    (made here for the tuner's build)."""
    plan = plan or schedule.plan_schedule(config, info, strategy)
    kwargs = dict(
        shortcut=config.shortcut,
        stride_placement=config.stride_placement,
        pixel_mean=info.pixel_mean,
        pixel_std=info.pixel_std,
    )
    if config.pretrained:
        from tfresnet import pretrained

        if info.image_shape[-1] != 3:
            raise ValueError(
                f"--pretrained weights are for RGB images, but {info.name} has "
                f"{info.image_shape[-1]} channel(s)."
            )

        # keras.applications' layout (v1 strides, conv biases, its BN epsilon, option B) and
        # its caffe pixel means, so the transplanted weights see the inputs they were trained on.
        kwargs.update(pretrained.keras_applications_compatible_kwargs())
    with strategy.scope():
        model = models.build_model(
            config.model,
            num_classes=info.num_classes,
            input_shape=info.image_shape,
            preact=config.preact,
            weight_decay=plan.weight_decay,
            zero_init_residual=plan.recipe.zero_init_residual,
            sync_bn=strategy.num_replicas_in_sync > 1 if config.sync_bn is None else config.sync_bn,
            **kwargs,
        )
        if config.pretrained:
            report = pretrained.load_pretrained(model, config.pretrained)
            print(
                f"Pretrained weights from {config.pretrained}: {len(report.loaded)} layers "
                f"loaded, skipped {sorted(report.skipped) or 'none'}."
            )
    return distribute.multi_worker_compatible(model)


def compile_model(model, recipe, schedule, steps_per_execution=1, *, optimizer=None):
    """SGD + sparse cross-entropy on the softmax output; accuracy and (if > 5 classes) top-5.
    An `optimizer` given (the model's own, restored) is kept instead of a new one."""
    metrics = ["accuracy"]
    if model.output_shape[-1] > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
    model.compile(
        optimizer=recipes.optimizer(recipe, schedule) if optimizer is None else optimizer,
        loss=recipes.loss(recipe),
        weighted_metrics=metrics,  # padded TPU evaluation batches weigh their pads 0
        steps_per_execution=steps_per_execution,
    )


def _restore(config, model, lr, plan, out) -> rundir.RunState:
    """Load the run's last backup into the compiled `model`; returns the state it continues from.
    Temporary files a kill left are removed."""
    with model.distribute_strategy.scope():
        # --overwrite starts afresh on every worker, whenever the chief's clear lands.
        saved = rundir.RunState() if config.overwrite else rundir.load_state(config.run_dir)
        state = rundir.restore(model, config.run_dir, saved, plan.steps_per_epoch)
        rundir.remove_stale_temps(out)
        if state.batch % plan.steps_per_execution:
            # A mid-epoch backup made under another steps_per_execution: the rest of its epoch
            # must be whole executions too (Keras runs whole ones). The restored optimizer stays.
            steps = math.gcd(plan.steps_per_execution, state.batch)
            compile_model(model, plan.recipe, lr, steps, optimizer=model.optimizer)
    return state


def _inputs(config, data, plan, state, strategy, evaluate_test) -> types.SimpleNamespace:
    """Every dataset the run reads, made in one place: the training `parts` (a partial epoch
    first, if any: first epoch, end epoch, batches skipped, dataset) and the evaluation splits,
    whose batches TPUStrategy pads to one static shape (XLA)."""
    static = distribute.is_tpu(strategy)

    def evaluation(split, cache=True):
        return pipeline.make_pipeline(
            split, data.info, batch_size=plan.batch_size, training=False, cache=cache,
            static_batches=static,
        )  # fmt: skip

    def training(first, end, skip):
        return pipeline.training_input(
            data, strategy, batch_size=plan.batch_size, steps_per_epoch=plan.steps_per_epoch,
            seed=config.seed, first_epoch=first, epochs=end, skip_batches=skip,
        )  # fmt: skip

    bounds = [(state.epoch, state.epoch + 1, state.batch)] if state.batch else []
    bounds.append((state.epoch + (1 if state.batch else 0), plan.epochs, 0))
    return types.SimpleNamespace(
        parts=[(first, end, skip, training(first, end, skip)) for first, end, skip in bounds
               if first < end],
        validation=None if data.validation is None else evaluation(data.validation),
        test=evaluation(data.test) if evaluate_test or plan.recipe.eval_test_each_epoch else None,
        train_eval=evaluation(data.train, cache=False),  # runs once: not cached
    )  # fmt: skip


def _fit_epochs(config, model, inputs, plan, state, out, callbacks, stop) -> rundir.RunState:
    """Train the epochs after `state.epoch`, committing each; returns the final state. A backup
    from the middle of an epoch first finishes that epoch on the batches it had left."""
    if not inputs.parts:
        return state  # training was over; a kill came while finishing
    monitor = "val_accuracy" if inputs.validation is not None else "accuracy"
    test_curve = inputs.test if plan.recipe.eval_test_each_epoch else None
    recorder, everything = callbacks_lib.training_callbacks(
        out, state, monitor, plan.steps_per_epoch, stop, test_curve, callbacks
    )
    verbose = keras_verbose(config.verbose)
    try:
        for first, end, skip, train_ds in inputs.parts:
            model.fit(
                train_ds,
                epochs=end,
                initial_epoch=first,
                steps_per_epoch=plan.steps_per_epoch - skip,
                validation_data=inputs.validation,
                callbacks=everything,
                shuffle=False,  # the pipeline shuffles, seeded per epoch
                verbose=verbose,
            )
    except (RuntimeError, FloatingPointError) as err:
        if isinstance(err, RuntimeError) and "NaN or Inf loss" not in str(err):
            raise
        raise _diverged(err, recorder.state.epoch) from err
    finally:
        recorder.stop.in_training.clear()
    return recorder.state


def _diverged(err: Exception, good: int) -> TrainingError:
    kept = f"Epoch {good} was the last good one: its checkpoint and backup are kept. "
    kept = kept if good else ""
    return TrainingError(
        f"Training diverged in epoch {good + 1} ({str(err).splitlines()[0]}). {kept}Lower "
        "--learning_rate, use float32 (--precision), or check the data."
    )


def _finish(config, model, info, inputs, plan, state, out, policy, callbacks, evaluate_test):
    """Evaluate, save, export, write results.json, then drop the backup; each step redoable.
    The training set is measured as the test set is (unaugmented, inference mode); the test set
    only where the last test-curve point did not. With the recipe's EMA the averaged weights,
    and with `test_flip` the flip-averaged model, are measured."""
    strategy = model.distribute_strategy
    averaged = recipes.finalize_weights(model)  # EMA: the averaged weights from here on
    final = _final_model(model, plan.recipe, strategy)
    evaluate = dict(verbose=0, return_dict=True, callbacks=list(callbacks))
    train_eval = model.evaluate(inputs.train_eval, **evaluate)
    same = final is model and not averaged  # the last test-curve point measured this model
    test = _last_test_curve_point(state) if evaluate_test and same else None
    if evaluate_test and test is None:
        test = final.evaluate(inputs.test, **evaluate)
    results = results_lib.summarize(
        config,
        model,
        info,
        state,
        test,
        train_eval=train_eval,
        schedule=plan,
        policy=policy,
        replicas=strategy.num_replicas_in_sync,
    )
    if not same and inputs.validation is not None:  # the final model's, as the test error is
        val = final.evaluate(inputs.validation, verbose=0, return_dict=True)
        results["final"]["val_error"] = 1.0 - float(val["accuracy"])
    export_as = config.model if config.export else None
    return rundir.finish(
        out,
        model,
        results,
        export_as=export_as,
        class_names=info.class_names,
        flip=config.export_test_flip,
    )


def _final_model(model, recipe, strategy):
    """What the final test measures: `model`, or with the recipe's `test_flip` a model that
    averages the prediction of each image and of its mirror (`evaluate.flip_averaged`)."""
    if not recipe.test_flip:
        return model
    from tfresnet import evaluate

    with strategy.scope():
        averaged = evaluate.flip_averaged(model)
        compile_model(averaged, recipe, 0.0)
    return averaged


def _last_test_curve_point(state):
    """The last epoch's test-curve metrics ({"loss", "accuracy", ...}), measured on the final
    weights, so the final evaluation need not run again; None without them."""
    last = state.history[-1] if state.history else {}
    test = {k[len("test_") :]: v for k, v in last.items() if k.startswith("test_")}
    return test if "accuracy" in test and "loss" in test else None


def keras_verbose(value, stream=None) -> int:
    """Keras' `verbose` for a `verbose` setting: "auto" is the bar on a terminal, else 2."""
    if str(value) != "auto":
        return int(value)
    return 1 if (stream or sys.stdout).isatty() else 2
