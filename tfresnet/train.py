"""Training: one `TrainConfig` in, one `model.fit` with the paper's recipe, one run directory out.

    from tfresnet.train import TrainConfig, train
    results = train(TrainConfig(model="resnet20", dataset="digits", epochs=30))

The run directory (`tfresnet.rundir`) holds `config.json`, `history.csv`, TensorBoard `logs/`,
`checkpoints/{last,best}.keras`, `backup/` while running, `model.keras`, `results.json` and
`export/` (the SavedModel for TF Serving). A run killed at any instant continues when the same
command is run again: from its last finished epoch, or, when training was over, with what was
left (evaluation, saving, export). The CLI, the tuner and the experiments all train through
`fit_model`.
"""

import dataclasses
import logging
import math
import os
import re
import sys
from collections.abc import Sequence

import keras

from tfresnet import (
    blocks,
    distribute,
    files,
    models,
    pipeline,
    precision,
    recipes,
    rundir,
    runlock,
    specs,
)
from tfresnet import config as config_lib
from tfresnet import data as data_lib
from tfresnet import results as results_lib
from tfresnet.config import at_least, setting
from tfresnet.timing import EpochTimer

log = logging.getLogger(__name__)

# Fields that do not change what a run computes; a restart may differ in them.
NON_IDENTITY_FIELDS = (
    "resume",
    "overwrite",
    "verbose",
    "export",
    "steps_per_execution",
    "peer_timeout",
    "export_test_flip",
)
# What one command asks of its run directory: never taken over from a saved config.
COMMAND_FIELDS = ("resume", "overwrite")
DEFAULT_EPOCHS = {"digits": 30}  # the embedded set's default budget: 25-60 s on 2 CPU cores
# The most training steps per tf.function call that `steps_per_execution=None` picks.
AUTO_STEPS_PER_EXECUTION = {"tpu": 32, "other": 8}
VERBOSE_CHOICES = ("auto", "0", "1", "2")  # Keras' verbose, and auto: by terminal (keras_verbose)


OVERWRITE_HINT = (
    "--overwrite deletes only what a run wrote: move those files away, or use another --run_dir"
)


class TrainingError(RuntimeError):
    """Training could not finish (diverged, or the run directory is in the way)."""


def _check_model(name, value):
    specs.resolve_spec(value)  # a table name or a spec string (specs.parse_model)


def _check_seed(name, value):
    if not 0 <= value < 2**32:
        raise ValueError(f"seed must be between 0 and 2**32 - 1; got {value}.")


def _check_peer_timeout(name, value):
    distribute.check_peer_timeout(value)


def _check_pretrained(name, value):
    if value and not files.exists(value):
        raise ValueError(
            f"pretrained weights file {value!r} does not exist (give a keras.applications ResNet "
            ".h5 file)."
        )


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved as `config.json` beside its results.

    Each field is written once, here: its default, its help (`tfresnet train --help`), its group
    and its check. The groups are the sections of the config: model, data, schedule, runtime,
    output; the config itself stays flat, one JSON object.
    """

    model: str = setting(
        "resnet20",
        "Model name, e.g. resnet20, plain56, resnet50.",
        group="model",
        check=_check_model,
    )
    dataset: str = setting(
        data_lib.EMBEDDED,
        "digits (embedded), fashion_mnist (tfds, or Debian's dataset-fashion-mnist offline), a "
        "tfds name (cifar10, imagenet2012, ...), a folder of class folders or of MNIST-format "
        "IDX files.",
        group="data",
    )
    data_dir: str | None = setting(None, "tensorflow-datasets data directory.", group="data")
    download: bool = setting(False, "Let tfds download and prepare the data set.", group="data")
    image_size: int | None = setting(
        None, "Model input size for folders/large images.", group="data", check=at_least(1)
    )
    validation_size: float = setting(
        0.0,
        "Training examples held out for validation (count, or fraction if < 1).",
        group="data",
        check=at_least(0, "a count or a fraction"),
    )
    shortcut: str | None = setting(
        None,
        "Shortcut option; default: A for CIFAR nets, B for ImageNet nets.",
        group="model",
        choices=blocks.SHORTCUTS,
    )
    preact: bool = setting(False, "Pre-activation blocks (He et al. 2016).", group="model")
    stride_placement: str = setting(
        "v1.5",
        "Bottleneck stride on the first 1x1 (v1, the paper) or the 3x3 (v1.5).",
        group="model",
        choices=blocks.STRIDE_PLACEMENTS,
    )
    zero_init_residual: bool | None = setting(
        None,
        "Start each residual branch's last BN gamma at zero; default: the recipe's (fast: on).",
        group="model",
    )
    recipe: str | None = setting(
        None,
        "Training recipe: cifar, imagenet (the paper's) or fast (8 epochs, with the tricks of "
        "docs/training.md on); default by image size.",
        group="schedule",
        choices=recipes.RECIPES,
    )
    label_smoothing: float | None = setting(
        None,
        "Label smoothing of the loss; default: the recipe's (fast: 0.1, the paper's: 0).",
        group="schedule",
        check=recipes.check_fraction,
    )
    lr_schedule: str | None = setting(
        None,
        "steps: the paper's drops by 10; cosine: linear warm-up, then cosine decay to 0; "
        "default: the recipe's (fast: cosine).",
        group="schedule",
        choices=recipes.LR_SCHEDULES,
    )
    warmup_epochs: float | None = setting(
        None,
        "Epochs of linear warm-up before the cosine decay; default: the recipe's (fast: 1).",
        group="schedule",
        check=at_least(0, "a number"),
    )
    nesterov: bool | None = setting(
        None, "Nesterov momentum; default: the recipe's (fast: on).", group="schedule"
    )
    ema_momentum: float | None = setting(
        None,
        "Momentum of a moving average of the weights, which is evaluated and saved at the end; "
        "0: none; default: the recipe's (0).",
        group="schedule",
        check=recipes.check_fraction,
    )
    test_flip: bool | None = setting(
        None,
        "The final test and validation errors average each image's prediction with its "
        "mirror's (data trained with flips only); default: the recipe's (fast: on).",
        group="schedule",
    )
    batch_size: int | None = setting(
        None,
        "Global batch size; default the recipe's (128 CIFAR, 256 ImageNet and fast).",
        group="schedule",
        check=at_least(1),
    )
    learning_rate: float | None = setting(
        None,
        "Base learning rate; default: the recipe's (0.1; fast 0.2), scaled linearly with the "
        "batch.",
        group="schedule",
        check=at_least(0, "a number", strict=True),
    )
    lr_rule: str = setting(
        "linear",
        "Learning-rate scaling with the global batch.",
        group="schedule",
        choices=distribute.LR_SCALING_RULES,
    )
    weight_decay: float | None = setting(
        None,
        "Weight decay; default the recipe's (1e-4; fast 5e-4).",
        group="schedule",
        check=config_lib.check_of(blocks.ConvSettings, "weight_decay"),
    )
    budget: float | None = setting(
        None, "Fraction of the paper's iterations (1.0 = 64k on CIFAR).", group="schedule"
    )
    epochs: int | None = setting(
        None, "Epochs (instead of --budget); digits default 30.", group="schedule"
    )
    steps: int | None = setting(
        None, "Iterations (instead of --budget/--epochs).", group="schedule"
    )
    precision: str = setting(
        "float32",
        "Keras dtype policy; auto: bfloat16 where the CPU/GPU/TPU runs it fast.",
        group="runtime",
        choices=precision.PRECISIONS,
    )
    strategy: str = setting(
        "auto", "tf.distribute strategy.", group="runtime", choices=distribute.STRATEGY_NAMES
    )
    num_replicas: int | None = setting(
        None, "Replicas for mirrored (logical CPUs on a CPU).", group="runtime"
    )
    tpu: str | None = setting(
        None, "TPU name or address for --strategy=tpu ('local' on a TPU VM).", group="runtime"
    )
    peer_timeout: float = setting(
        distribute.DEFAULT_PEER_TIMEOUT,
        "Seconds a multi-worker start waits for every other worker in TF_CONFIG to come up; "
        "then it gives up, naming the missing ones, with the retryable exit status 138.",
        group="runtime",
        check=_check_peer_timeout,
    )
    sync_bn: bool | None = setting(
        None,
        "Synchronise BatchNorm statistics across replicas; default: on with more than one.",
        group="runtime",
    )
    steps_per_execution: int | None = setting(
        None,
        "Training steps per tf.function call; default: the largest divisor of an epoch's steps "
        "up to 8 (32 on TPU), 1 under mirrored strategies.",
        group="runtime",
        check=at_least(1),
    )
    seed: int = setting(0, "Random seed.", group="schedule", check=_check_seed)
    run_dir: str | None = setting(
        None, "Where this run's files go; default runs/<model>-<data>.", group="output"
    )
    pretrained: str | None = setting(
        None,
        "keras.applications ResNet .h5 weights to start from (fine-tuning).",
        group="model",
        check=_check_pretrained,
    )
    export: bool = setting(True, "Export a SavedModel for TF Serving at the end.", group="output")
    export_test_flip: bool = setting(
        False,
        "The exported SavedModel averages each image's prediction with its mirror's (twice the "
        "compute per request).",
        group="output",
    )
    eval_test_each_epoch: bool = setting(
        True,
        "Measure the test error after every epoch: the paper's test curves (Fig. 6), never used "
        "for selection.",
        group="output",
    )
    resume: bool = setting(False, "Continue the unfinished run in --run_dir.", group="output")
    overwrite: bool = setting(False, "Replace the run in --run_dir.", group="output")
    verbose: int | str = setting(
        "auto",
        "Keras progress output: 0 none, 1 a progress bar, 2 one line per epoch; auto: the bar "
        "when stdout is a terminal, else one line per epoch (logs, CI, nohup).",
        group="runtime",
        choices=VERBOSE_CHOICES,
    )

    def __post_init__(self):
        self.verbose = str(self.verbose)  # the runs saved before kept Keras' int
        config_lib.check_fields(self)
        recipes.check_length(self.budget, self.epochs, self.steps)  # one at most, in range
        if self.resume and self.overwrite:
            raise ValueError("Give at most one of resume and overwrite.")
        if self.run_dir is None:
            self.run_dir = os.path.join("runs", f"{model_slug(self.model)}-{_slug(self.dataset)}")

    def identity(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NON_IDENTITY_FIELDS}


def keras_verbose(value, stream=None) -> int:
    """Keras' `verbose` for a `verbose` setting: "auto" is the bar on a terminal, else 2."""
    if str(value) != "auto":
        return int(value)
    return 1 if (stream or sys.stdout).isatty() else 2


def _slug(name):
    return os.path.basename(os.path.normpath(str(name))) or "data"


def model_slug(model: str) -> str:
    """A file and TF Serving name for a model name or spec string ("resnet20:width_..." ->
    "resnet20-width_multiplier-2")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(model)).strip("-.") or "model"


def check_run_dir(config):
    """The config to run in `config.run_dir`; refuses to mix runs. Writes nothing.

    `resume` takes the saved config; an identical unfinished run continues; `overwrite` is
    applied later, by `train`, once everything is validated.
    """
    files.check_output_dir(config.run_dir, "run_dir", unset="runs/<model>-<dataset>")
    path = files.join(config.run_dir, "config.json")
    if config.overwrite or not files.exists(path):
        if config.resume:
            raise TrainingError(f"--resume: there is no run to continue in {config.run_dir!r}.")
        return config
    try:
        saved = rundir.read_config(path)
    except files.CorruptFile as err:
        raise files.CorruptFile(
            f"{err}: restore it from a copy, or use --overwrite to start the run again, or "
            "another --run_dir."
        ) from err
    if config.resume:
        kept = {k: getattr(config, k) for k in NON_IDENTITY_FIELDS}
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        saved = {k: v for k, v in saved.items() if k in known and k not in kept}
        config = TrainConfig(**{**saved, **kept, "run_dir": config.run_dir})
    else:
        mine = config.identity()
        theirs = {k: v for k, v in saved.items() if k not in NON_IDENTITY_FIELDS}
        # A field added to TrainConfig since the run started compares at its default.
        defaults = TrainConfig(run_dir=config.run_dir).identity()
        differs = sorted(k for k, v in mine.items() if theirs.get(k, defaults.get(k)) != v)
        if differs:
            raise TrainingError(
                f"Run directory {config.run_dir!r} holds a different run (differs in: "
                f"{', '.join(differs)}). Use --resume to continue it, --overwrite to replace it, "
                f"or another --run_dir."
            )
    if rundir.finished(config.run_dir):
        raise TrainingError(
            f"Run directory {config.run_dir!r} holds a finished run (results.json). Use "
            "--overwrite to train it again, or another --run_dir."
        )
    rundir.load_state(config.run_dir)  # a damaged backup is refused before the data loads
    return config


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long and how fast a run trains, resolved from its config and its data."""

    recipe: str
    batch_size: int
    learning_rate: float
    weight_decay: float
    epochs: int
    steps: int
    steps_per_epoch: int
    steps_per_execution: int = 1


def _steps_per_execution(config, steps_per_epoch, replicas, tpu):
    """Training steps per tf.function call: a divisor of the epoch's steps.

    Keras 3.15 runs whole executions, so a value that does not divide an epoch would run past
    its end into the next one. More steps per call save the host's per-step round trip (the
    callbacks, the loss check); Keras cannot do it under multi-replica mirrored strategies.
    """
    multi = replicas > 1 and not tpu
    wanted = config.steps_per_execution
    if wanted is None:
        limit = 1 if multi else AUTO_STEPS_PER_EXECUTION["tpu" if tpu else "other"]
        return max(d for d in range(1, limit + 1) if steps_per_epoch % d == 0)
    if wanted > 1 and multi:
        raise ValueError(
            f"steps_per_execution={wanted} does not work with {replicas} replicas of a mirrored "
            "strategy in Keras 3.15 (keras-team/keras#19246); use 1 there (TPUs take any value)."
        )
    if steps_per_epoch % wanted:
        fits = [d for d in range(1, wanted) if steps_per_epoch % d == 0]
        raise ValueError(
            f"steps_per_execution={wanted} does not divide the {steps_per_epoch} steps of an "
            f"epoch (Keras would run past the epoch's end); use one of {fits[-3:]} or leave it "
            "unset to pick one."
        )
    return wanted


def plan_schedule(config, info, strategy) -> Schedule:
    """The run's `Schedule`; raises ValueError for settings that cannot train on this data."""
    recipe = pick_recipe(config, info)
    # Before anything is written (and before --overwrite deletes the old run), not at the build.
    specs.check_input_shape(info.image_shape, specs.resolve_spec(config.model), config.model)
    batch_size = config.batch_size or recipe.batch_size
    distribute.per_replica_batch_size(batch_size, strategy)
    replicas = strategy.num_replicas_in_sync
    tpu = distribute.is_tpu(strategy)
    if info.sizes["train"] < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {info.sizes['train']} training examples "
            f"of {info.name}; pass a smaller --batch_size."
        )
    steps_per_epoch = info.sizes["train"] // batch_size
    length = {"budget": config.budget, "epochs": config.epochs, "steps": config.steps}
    if all(v is None for v in length.values()) and recipe.epochs is None:
        length["epochs"] = DEFAULT_EPOCHS.get(config.dataset)  # None: the full paper schedule
    total = recipes.total_steps(
        recipe, steps_per_epoch=steps_per_epoch, batch_size=batch_size, **length
    )
    epochs = max(1, math.ceil(total / steps_per_epoch))
    lr = config.learning_rate or distribute.scaled_learning_rate(
        recipe.learning_rate, batch_size, recipe.batch_size, config.lr_rule
    )
    return Schedule(
        recipe=recipe.name,
        batch_size=batch_size,
        learning_rate=lr,
        weight_decay=resolved_weight_decay(config, recipe),
        epochs=epochs,
        steps=epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        steps_per_execution=_steps_per_execution(config, steps_per_epoch, replicas, tpu),
    )


class TestErrorCurve(keras.callbacks.Callback):
    """Adds `test_loss`/`test_accuracy` to each epoch's logs: the paper's test curves (Fig. 6).

    Only for plotting: model selection uses the validation split, never this.
    """

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_end(self, epoch, logs=None):
        results = self.model.evaluate(self.dataset, verbose=0, return_dict=True)
        if logs is not None:
            for key, value in results.items():
                logs[f"test_{key}"] = value


class WeightDecayTerm(keras.callbacks.Callback):
    """Adds `weight_decay_loss` to each epoch's logs: the decay term inside the training loss.

    Behind batch normalisation a kernel's scale does not change the output, so this term (the
    squared kernel norms times weight_decay / 2) tracks how large the kernels grew, and so how
    small their effective step is; Keras' `loss` mixes it with the cross-entropy.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["weight_decay_loss"] = results_lib.weight_decay_loss(self.model)


def pick_recipe(config, info):
    """The run's recipe, with the tricks its config sets (`recipes.resolve`)."""
    name = config.recipe or ("cifar" if info.style == "cifar" else "imagenet")
    return recipes.resolve(name, dataclasses.asdict(config), flips=info.flip)


def compile_model(model, recipe, schedule, steps_per_execution=1):
    """SGD + sparse cross-entropy on the softmax output; accuracy and (if > 5 classes) top-5."""
    metrics = ["accuracy"]
    if model.output_shape[-1] > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
    model.compile(
        optimizer=recipes.optimizer(recipe, schedule),
        loss=recipes.loss(recipe),
        weighted_metrics=metrics,  # padded TPU evaluation batches weigh their pads 0
        steps_per_execution=steps_per_execution,
    )


def resolved_weight_decay(config, recipe):
    return recipe.weight_decay if config.weight_decay is None else config.weight_decay


def make_model(config, info, strategy):
    """The (uncompiled) model `config` describes for data `info`, built in `strategy`'s scope.

    `fit_model` calls it unless given a model; `train` calls it first (before --overwrite
    deletes anything) and the tuner from `HyperModel.build`, and both hand the model to
    `fit_model`, so every path builds the same network the same way.
    """
    recipe = pick_recipe(config, info)
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
            weight_decay=resolved_weight_decay(config, recipe),
            zero_init_residual=recipe.zero_init_residual,
            sync_bn=strategy.num_replicas_in_sync > 1 if config.sync_bn is None else config.sync_bn,
            **kwargs,
        )
        if config.pretrained:
            report = pretrained.load_pretrained(model, config.pretrained)
            print(
                f"Pretrained weights from {config.pretrained}: {len(report.loaded)} layers "
                f"loaded, skipped {sorted(report.skipped) or 'none'}."
            )
    return model


def fit_model(
    config,
    *,
    strategy=None,
    extra_callbacks=(),
    data=None,
    model=None,
    evaluate_test=True,
):
    """Build, train and evaluate the model that `config` describes; the one training path.

    Returns `(model, results)`; `results` is what `results.json` holds. Writes into
    `config.run_dir` (only the chief, under multi-worker) and continues from the backup there,
    if any. `strategy` and `data` may be passed in by callers that already made them (the tuner
    reuses both across trials), and `model` by a caller that built it with `make_model` (`train`,
    the tuner's `HyperModel.build`). With `evaluate_test=False` the test split is never touched
    (the tuner selects on validation only; `final.test_error` is then None). The dtype policy is
    set for the run and restored afterwards; seeds are the caller's (`train` sets them).
    """
    if strategy is None:
        strategy = make_strategy(config)
    with precision.policy_scope(config.precision, strategy) as policy:
        if data is None:
            data = load_run_data(config)
        schedule = plan_schedule(config, data.info, strategy)
        model = model or make_model(config, data.info, strategy)
        # Held from reading the backup on: another process training here could replace it.
        with distribute.writable_dir(config.run_dir, strategy) as out, runlock.exclusive(out):
            with strategy.scope():
                lr = recipes.schedule(
                    pick_recipe(config, data.info),
                    schedule.steps,
                    depth=specs.resolve_spec(config.model).depth,
                    steps_per_epoch=schedule.steps_per_epoch,
                    learning_rate=schedule.learning_rate,
                )
                # --overwrite starts afresh on every worker, whenever the chief's clear lands.
                saved = rundir.RunState() if config.overwrite else rundir.load_state(config.run_dir)
                # A mid-epoch backup made under another steps_per_execution: the rest of its
                # epoch must be whole executions too (Keras runs whole ones).
                steps_per_execution = math.gcd(schedule.steps_per_execution, saved.batch)
                compile_model(model, pick_recipe(config, data.info), lr, steps_per_execution)
            distribute.multi_worker_compatible(model)
            with strategy.scope():
                state = rundir.restore(model, config.run_dir, saved, schedule.steps_per_epoch)
            for folder in (out, rundir.backup_dir(out), files.join(out, "checkpoints")):
                files.remove_stale_temps(folder)
            timer = EpochTimer()
            state = _fit_epochs(config, model, data, schedule, state, out, extra_callbacks, timer)
            results = _finish(
                config,
                model,
                data,
                schedule,
                state,
                out,
                evaluate_test,
                policy,
                strategy,
                callbacks=extra_callbacks,
            )
    return model, results


def make_strategy(config):
    """The `tf.distribute` strategy `config` asks for (`distribute.make_strategy`)."""
    return distribute.make_strategy(
        config.strategy,
        num_replicas=config.num_replicas,
        tpu=config.tpu,
        peer_timeout=config.peer_timeout,
    )


def load_run_data(config):
    return data_lib.load_data(
        config.dataset,
        data_dir=config.data_dir,
        validation_size=config.validation_size,
        image_size=config.image_size,
        download=config.download,
        seed=config.seed,
    )


def _fit_epochs(config, model, data, schedule, state, out, extra_callbacks, timer):
    """Train the epochs after `state.epoch`, committing each; returns the final state.

    A backup from the middle of an epoch (a preemption) first finishes that epoch on the
    batches it had left, then training goes on as usual.
    """
    if state.epoch >= schedule.epochs:
        return state  # training was over; a kill came while finishing
    info, batch_size = data.info, schedule.batch_size
    strategy = model.distribute_strategy
    test_ds = (
        _eval_input(data.test, info, batch_size, strategy) if config.eval_test_each_epoch else None
    )
    val_ds = (
        _eval_input(data.validation, info, batch_size, strategy)
        if data.validation is not None
        else None
    )
    recorder = rundir.EpochRecorder(
        out,
        state,
        monitor="val_accuracy" if val_ds is not None else "accuracy",
        timer=timer,
        steps_per_epoch=schedule.steps_per_epoch,
    )
    callbacks = [
        timer,
        keras.callbacks.TerminateOnNaN(raise_error=True),
        WeightDecayTerm(),
        *([TestErrorCurve(test_ds)] if test_ds is not None else []),
        keras.callbacks.TensorBoard(files.join(out, "logs")),
        *extra_callbacks,
        recorder,  # last: an epoch is committed once every other callback has seen it
    ]
    # (first epoch, last epoch + 1, batches to skip): a partial epoch first, if any.
    parts = [(state.epoch, state.epoch + 1, state.batch)] if state.batch else []
    parts.append((state.epoch + (1 if state.batch else 0), schedule.epochs, 0))
    try:
        for first, end, skip in parts:
            if first >= end:
                continue
            train_ds = pipeline.training_input(
                data,
                model.distribute_strategy,
                batch_size=batch_size,
                steps_per_epoch=schedule.steps_per_epoch,
                seed=config.seed,
                first_epoch=first,
                epochs=end,
                skip_batches=skip,
            )
            model.fit(
                train_ds,
                epochs=end,
                initial_epoch=first,
                steps_per_epoch=schedule.steps_per_epoch - skip,
                validation_data=val_ds,
                callbacks=callbacks,
                shuffle=False,  # the pipeline shuffles, seeded per epoch
                verbose=keras_verbose(config.verbose),
            )
    except (RuntimeError, FloatingPointError) as err:
        if isinstance(err, RuntimeError) and "NaN or Inf loss" not in str(err):
            raise
        good = recorder.state.epoch
        raise TrainingError(
            f"Training diverged in epoch {good + 1} ({str(err).splitlines()[0]}). "
            + (
                f"Epoch {good} was the last good one: its checkpoint and backup are kept. "
                if good
                else ""
            )
            + "Lower --learning_rate, use float32 (--precision), or check the data."
        ) from err
    finally:
        rundir.IN_TRAINING.clear()
    return recorder.state


def _finish(
    config, model, data, schedule, state, out, evaluate_test, policy, strategy, callbacks=()
):
    """Evaluate, save, export, write results.json, then drop the backup; each step redoable.

    `callbacks` (the caller's, as in `model.fit`) see the two evaluations, in this order: the
    training set's, then the test set's where the last epoch's test curve did not measure it.
    """
    recipe = pick_recipe(config, data.info)
    averaged = recipes.finalize_weights(model)  # EMA: the averaged weights from here on
    final = _final_model(model, recipe, strategy)  # or the flip-averaged model
    # fit's `accuracy` is a running mean over augmented batches in training mode while the
    # weights change; this pass measures the final weights on the training images as the test
    # images are measured (no augmentation, inference mode). Not cached: it runs once.
    train_ds = _eval_input(data.train, data.info, schedule.batch_size, strategy, cache=False)
    train_eval = model.evaluate(train_ds, verbose=0, return_dict=True, callbacks=list(callbacks))
    # The last epoch's test-curve point, if any, measured the same weights on the same images.
    same = final is model and not averaged
    test = _last_test_curve_point(state) if evaluate_test and same else None
    if evaluate_test and test is None:
        test_ds = _eval_input(data.test, data.info, schedule.batch_size, strategy)
        test = final.evaluate(test_ds, verbose=0, return_dict=True, callbacks=list(callbacks))
    results = results_lib.summarize(
        config,
        model,
        data.info,
        state,
        test,
        train_eval=train_eval,
        schedule=schedule,
        policy=policy,
        replicas=strategy.num_replicas_in_sync,
    )
    results["recipe"] = dataclasses.asdict(recipe)
    if not same and data.validation is not None:  # the final model's, as the test error is
        val_ds = _eval_input(data.validation, data.info, schedule.batch_size, strategy)
        val = final.evaluate(val_ds, verbose=0, return_dict=True)
        results["final"]["val_error"] = 1.0 - float(val["accuracy"])
    files.save_model(model, files.join(out, "model.keras"))
    if config.export:
        results["export"] = _export_once(config, model, data.info, out)
    files.write_json(files.join(out, rundir.RESULTS), results)
    files.remove(rundir.backup_dir(out))  # only now: everything it could redo is written
    return results


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


def _eval_input(split, info, batch_size, strategy, cache=True):
    """Batches of an evaluation split; under TPUStrategy the last one is padded (XLA needs one
    static batch shape; `pipeline.make_pipeline`'s `static_batches`)."""
    return pipeline.make_pipeline(
        split,
        info,
        batch_size=batch_size,
        training=False,
        cache=cache,
        static_batches=distribute.is_tpu(strategy),
    )


def _last_test_curve_point(state):
    """The last epoch's test-curve metrics ({"loss", "accuracy", ...}); None without them.

    They were measured on the final weights, so the final evaluation need not run again.
    """
    last = state.history[-1] if state.history else {}
    test = {k[len("test_") :]: v for k, v in last.items() if k.startswith("test_")}
    return test if "accuracy" in test and "loss" in test else None


def _export_once(config, model, info, out):
    """Version 1 of the run's SavedModel; a complete one from an interrupted finish is kept."""
    from tfresnet import export

    model_dir = files.join(out, "export", model_slug(config.model))
    files.remove_stale_temps(model_dir)
    final = files.join(model_dir, "1")
    if files.exists(final):
        return final
    if config.export_test_flip:  # BN folded first: the folding sees no nested model
        from tfresnet import evaluate, inference

        model = evaluate.flip_averaged(inference.fold_batch_norm(model))
    return export.export_for_serving(
        model,
        files.join(out, "export"),
        model_name=model_slug(config.model),
        class_names=list(info.class_names) or None,
        version=1,
        fold_batch_norm=not config.export_test_flip,
    )


def train(config, callbacks: Sequence[keras.callbacks.Callback] = ()):
    """Check the run directory and every setting, then save the config and train.

    Nothing is written until the config, the data and the schedule are known to work, so a
    rejected command never blocks its corrected version. Returns the results dict. `callbacks`
    join tfresnet's own in `model.fit` (before the one that commits each epoch), then see the
    final evaluations: the training set's, then the test set's if the test curve did not run.
    """
    config = check_run_dir(config)
    keras.utils.set_random_seed(config.seed)  # train() is an entry point: it owns the seeds
    strategy = make_strategy(config)
    writer = distribute.writes_run_dir(strategy)
    if writer:
        runlock.ensure_free(config.run_dir)  # refused at once, before the data loads
        if config.overwrite:
            rundir.check_clearable(config.run_dir, hint=OVERWRITE_HINT)
    data = load_run_data(config)
    plan_schedule(config, data.info, strategy)
    if not writer:
        return fit_model(config, strategy=strategy, data=data, extra_callbacks=callbacks)[1]
    files.makedirs(config.run_dir)
    with runlock.exclusive(config.run_dir):  # from the config on; fit_model holds it again
        # Built before --overwrite deletes the old run and before config.json is written: a
        # wrong --pretrained file is refused while there is still something to keep.
        with precision.policy_scope(config.precision, strategy):
            model = make_model(config, data.info, strategy)
        if config.overwrite:
            rundir.clear(config.run_dir, hint=OVERWRITE_HINT)  # the directory stays, locked
        config_path = files.join(config.run_dir, "config.json")
        new_run = not files.exists(config_path)
        if new_run:
            files.write_json(config_path, dataclasses.asdict(config))
        try:
            _, results = fit_model(
                config, strategy=strategy, data=data, model=model, extra_callbacks=callbacks
            )
        except BaseException:
            # A start that ended before an epoch was backed up (diverged in its first epoch,
            # interrupted) leaves nothing to resume: remove the config.json it wrote, which
            # would refuse the corrected command as a different run. Only that file: the
            # folder may hold other things; a finished run has no backup/.
            if new_run and not (
                rundir.resumable(config.run_dir) or rundir.finished(config.run_dir)
            ):
                files.remove(config_path)
            raise
    return results
