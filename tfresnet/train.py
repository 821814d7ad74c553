"""Training: one `TrainConfig` in, one `model.fit` with the paper's recipe, one run directory out.

    from tfresnet.train import TrainConfig, train
    results = train(TrainConfig(model="resnet20", dataset="digits", epochs=30))

The run directory holds `config.json` (the whole run, re-runnable), `history.csv`, TensorBoard
`logs/`, `checkpoints/{last,best}.keras`, `backup/` while running (a killed run restarts where it
stopped when the same command is run again), `model.keras`, `results.json` and `export/` (the
SavedModel for TF Serving). The CLI, the tuner and the experiments all train through `fit_model`.
"""

import dataclasses
import json
import math
import os
import platform
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tfresnet import data as data_lib
from tfresnet import distribute, inference, models, precision, recipes

# Fields that do not change what a run computes; a restart may differ in them.
NON_IDENTITY_FIELDS = ("resume", "overwrite", "verbose", "export")
DEFAULT_EPOCHS = {"digits": 30}  # the embedded set's default budget: 25-60 s on 2 CPU cores


class TrainingError(RuntimeError):
    """Training could not finish (diverged, or the run directory is in the way)."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved as `config.json` beside its results."""

    model: str = "resnet20"  # any name build_model knows
    dataset: str = data_lib.EMBEDDED  # "digits", a tfds name, or a folder of class folders
    data_dir: str | None = None  # tfds data directory
    download: bool = False  # let tfds download and prepare the data set
    image_size: int | None = None  # model input size for folders / large-image data sets
    validation_size: float = 0.0  # held out from train for model selection (count or fraction)
    shortcut: str | None = None  # A | B | C | none; None: the paper's default for the family
    preact: bool = False  # pre-activation blocks (He et al. 2016)
    stride_placement: str = "v1.5"
    zero_init_residual: bool = False
    recipe: str | None = None  # "cifar" | "imagenet"; None: by the data set's image size
    batch_size: int | None = None  # global batch; None: the recipe's (128 CIFAR, 256 ImageNet)
    learning_rate: float | None = None  # None: the recipe's, scaled by `lr_rule` for the batch
    lr_rule: str = "linear"
    weight_decay: float | None = None  # None: the recipe's 1e-4
    budget: float | None = None  # fraction of the paper's iterations
    epochs: int | None = None  # or a number of epochs
    steps: int | None = None  # or a number of iterations
    precision: str = "float32"  # float32 | mixed_bfloat16 | mixed_float16 | auto (precision.py)
    strategy: str = "auto"  # auto | one_device | mirrored | multi_worker | tpu
    num_replicas: int | None = None
    tpu: str | None = None
    sync_bn: bool | None = None  # None: synchronised BN whenever there is more than one replica
    steps_per_execution: int = 1
    seed: int = 0
    run_dir: str | None = None  # None: runs/<model>-<dataset>
    pretrained: str | None = None  # keras.applications .h5 weights to start from
    export: bool = True  # write a SavedModel for TF Serving at the end
    eval_test_each_epoch: bool = True  # test-error curves (the paper's Fig. 6); not for selection
    resume: bool = False  # continue the unfinished run in run_dir with its saved config
    overwrite: bool = False  # replace whatever run is in run_dir
    verbose: int | str = "auto"  # Keras progress: "auto" (bar on a terminal), 0, 1 or 2

    def __post_init__(self):
        precision.check(self.precision)
        if self.strategy not in distribute.STRATEGY_NAMES:
            raise ValueError(
                f"Unknown strategy {self.strategy!r}; allowed: "
                f"{', '.join(distribute.STRATEGY_NAMES)}."
            )
        if self.recipe is not None:
            recipes.get_recipe(self.recipe)
        models.get_spec(self.model)
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}.")
        if self.steps_per_execution < 1:
            raise ValueError(f"steps_per_execution must be >= 1; got {self.steps_per_execution}.")
        if self.resume and self.overwrite:
            raise ValueError("Give at most one of resume and overwrite.")
        if self.run_dir is None:
            self.run_dir = os.path.join("runs", f"{self.model}-{_slug(self.dataset)}")

    def identity(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NON_IDENTITY_FIELDS}


def _slug(name):
    return os.path.basename(os.path.normpath(str(name))) or "data"


def write_json(path, obj):
    """Write JSON atomically: a temp file beside `path`, then rename."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)


def save_model_atomically(model, path):
    tmp = f"{path}.tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)


def prepare_run_dir(config):
    """Refuse to mix runs: a run dir holds one config; an identical unfinished run continues."""
    path = os.path.join(config.run_dir, "config.json")
    if config.overwrite and os.path.exists(config.run_dir):
        shutil.rmtree(config.run_dir)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if config.resume:
            kept = {k: getattr(config, k) for k in NON_IDENTITY_FIELDS}
            config = TrainConfig(**{**saved, **kept, "run_dir": config.run_dir})
        elif {k: v for k, v in saved.items() if k not in NON_IDENTITY_FIELDS} != config.identity():
            differs = sorted(k for k, v in config.identity().items() if saved.get(k) != v)
            raise TrainingError(
                f"Run directory {config.run_dir!r} holds a different run (differs in: "
                f"{', '.join(differs)}). Use --resume to continue it, --overwrite to replace it, "
                f"or another --run_dir."
            )
        if os.path.exists(os.path.join(config.run_dir, "results.json")):
            raise TrainingError(
                f"Run directory {config.run_dir!r} holds a finished run (results.json). Use "
                "--overwrite to train it again, or another --run_dir."
            )
    elif config.resume:
        raise TrainingError(f"--resume: there is no run to continue in {config.run_dir!r}.")
    return config


def package_versions():
    import keras_tuner
    import tensorflow_datasets

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tensorflow_datasets": tensorflow_datasets.__version__,
        "keras_tuner": keras_tuner.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


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


class Throughput(keras.callbacks.Callback):
    """Training images/s over the epochs after the first (which includes tracing)."""

    def __init__(self, batch_size, steps_per_epoch):
        super().__init__()
        self.images_per_epoch = batch_size * steps_per_epoch
        self.epoch_times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._pause = time.perf_counter()

    def on_test_end(self, logs=None):
        if hasattr(self, "_start") and hasattr(self, "_pause"):
            self._start += time.perf_counter() - self._pause

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_times.append(time.perf_counter() - self._start)

    def images_per_second(self):
        times = self.epoch_times[1:] or self.epoch_times
        return self.images_per_epoch * len(times) / sum(times) if times else None


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss and remembers where, for a clear error."""

    bad_step = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_step = (self.epoch, batch, float(loss))
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


def pick_recipe(config, info):
    return recipes.get_recipe(config.recipe or ("cifar" if info.style == "cifar" else "imagenet"))


def compile_model(model, recipe, schedule, steps_per_execution=1):
    """SGD + sparse cross-entropy on the softmax output; accuracy and (if > 5 classes) top-5."""
    metrics = ["accuracy"]
    if model.output_shape[-1] > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
    model.compile(
        optimizer=recipes.optimizer(recipe, schedule),
        loss="sparse_categorical_crossentropy",
        metrics=metrics,
        steps_per_execution=steps_per_execution,
    )


def resolved_weight_decay(config, recipe):
    return recipe.weight_decay if config.weight_decay is None else config.weight_decay


def make_model(config, info, strategy):
    """The (uncompiled) model `config` describes for data `info`, built in `strategy`'s scope.

    `fit_model` calls it; the tuner calls it from `HyperModel.build` and hands the model back
    to `fit_model`, so both build the same network the same way.
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
            zero_init_residual=config.zero_init_residual,
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
    config, *, strategy=None, extra_callbacks=(), data=None, model=None, evaluate_test=True
):
    """Build, train and evaluate the model that `config` describes; the one training path.

    Returns `(model, results)`; `results` is what `results.json` holds. Writes into
    `config.run_dir` (only the chief, under multi-worker). `strategy` and `data` may be passed in
    by callers that already made them (the tuner reuses both across trials), and `model` by a
    caller that built it with `make_model` (the tuner's `HyperModel.build`). With
    `evaluate_test=False` the test split is never touched (the tuner selects on validation
    only; `final.test_error` is then None).
    """
    keras.utils.set_random_seed(config.seed)
    if strategy is None:
        strategy = distribute.make_strategy(
            config.strategy, num_replicas=config.num_replicas, tpu=config.tpu
        )
    policy = precision.set_policy(config.precision, strategy)
    if data is None:
        data = data_lib.load_data(
            config.dataset,
            data_dir=config.data_dir,
            validation_size=config.validation_size,
            image_size=config.image_size,
            download=config.download,
            seed=config.seed,
        )
    info = data.info
    spec = models.get_spec(config.model)
    recipe = pick_recipe(config, info)
    batch_size = config.batch_size or recipe.batch_size
    distribute.per_replica_batch_size(batch_size, strategy)
    replicas = strategy.num_replicas_in_sync
    if config.steps_per_execution > 1 and replicas > 1:
        raise ValueError(
            f"steps_per_execution={config.steps_per_execution} does not work with {replicas} "
            "replicas in Keras 3.15 (keras-team/keras#19246); use 1 under a multi-replica strategy."
        )
    if info.sizes["train"] < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {info.sizes['train']} training examples "
            f"of {info.name}; pass a smaller --batch_size."
        )
    steps_per_epoch = info.sizes["train"] // batch_size
    length = {"budget": config.budget, "epochs": config.epochs, "steps": config.steps}
    if all(v is None for v in length.values()):
        length["epochs"] = DEFAULT_EPOCHS.get(config.dataset)  # None: the full paper schedule
    total = recipes.total_steps(
        recipe, steps_per_epoch=steps_per_epoch, batch_size=batch_size, **length
    )
    epochs = max(1, math.ceil(total / steps_per_epoch))
    lr = config.learning_rate or distribute.scaled_learning_rate(
        recipe.learning_rate, batch_size, recipe.batch_size, config.lr_rule
    )
    weight_decay = resolved_weight_decay(config, recipe)

    if model is None:
        model = make_model(config, info, strategy)
    with strategy.scope():
        schedule = recipes.paper_schedule(
            recipe, epochs * steps_per_epoch, depth=spec.depth, learning_rate=lr
        )
        compile_model(model, recipe, schedule, config.steps_per_execution)
    distribute.multi_worker_compatible(model)

    train_ds = data_lib.make_pipeline(
        data.train, info, batch_size=batch_size, training=True, seed=config.seed
    )
    test_ds = (
        data_lib.make_pipeline(data.test, info, batch_size=batch_size, training=False)
        if evaluate_test or config.eval_test_each_epoch
        else None
    )
    val_ds = (
        data_lib.make_pipeline(data.validation, info, batch_size=batch_size, training=False)
        if data.validation is not None
        else None
    )

    with distribute.writable_dir(config.run_dir, strategy) as out:
        throughput = Throughput(batch_size, steps_per_epoch)
        nan_guard = StopOnNaN()
        monitor = "val_accuracy" if val_ds is not None else "accuracy"
        os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
        callbacks = [
            *([TestErrorCurve(test_ds)] if config.eval_test_each_epoch else []),
            throughput,
            nan_guard,
            distribute.MultiWorkerBackupAndRestore(os.path.join(config.run_dir, "backup")),
            keras.callbacks.ModelCheckpoint(os.path.join(out, "checkpoints", "last.keras")),
            keras.callbacks.ModelCheckpoint(
                os.path.join(out, "checkpoints", "best.keras"),
                monitor=monitor,
                mode="max",
                save_best_only=True,
            ),
            keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=True),
            keras.callbacks.TensorBoard(os.path.join(out, "logs")),
            *extra_callbacks,
        ]
        start = time.perf_counter()
        history = model.fit(
            train_ds,
            epochs=epochs,
            validation_data=val_ds,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles, seeded
            verbose=config.verbose,
        )
        wall = time.perf_counter() - start
        if nan_guard.bad_step is not None:
            epoch, batch, loss = nan_guard.bad_step
            raise TrainingError(
                f"Training diverged: loss became {loss} at epoch {epoch + 1}, batch {batch + 1}. "
                "Lower --learning_rate, use float32 (--precision), or check the data."
            )
        test = model.evaluate(test_ds, verbose=0, return_dict=True) if evaluate_test else None
        # The CSV log spans restarts; fit's own history only the epochs since the last one.
        curves = read_history(os.path.join(out, "history.csv")) or history.history
        results = summarize(config, model, info, curves, test, wall, throughput, strategy)
        results["precision"] = policy  # what "auto" became on this machine
        results["schedule"] = {
            "recipe": recipe.name,
            "batch_size": batch_size,
            "learning_rate": lr,
            "weight_decay": weight_decay,
            "epochs": epochs,
            "steps": epochs * steps_per_epoch,
            "steps_per_epoch": steps_per_epoch,
        }
        save_model_atomically(model, os.path.join(out, "model.keras"))
        if config.export:
            from tfresnet import export

            results["export"] = export.export_for_serving(
                model,
                os.path.join(out, "export"),
                model_name=config.model,
                class_names=list(info.class_names) or None,
            )
        write_json(os.path.join(out, "results.json"), results)
    return model, results


def read_history(path):
    """The per-epoch logs of `CSVLogger` as {key: [values]}; {} if there is no log."""
    import csv

    if not os.path.exists(path):
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    # CSVLogger writes "NA" for a key an epoch did not log (e.g. the epoch a restart resumed).
    as_float = lambda v: float(v) if v not in (None, "", "NA") else float("nan")  # noqa: E731
    return {key: [as_float(row.get(key)) for row in rows] for key in rows[0]} if rows else {}


def summarize(config, model, info, history, test, wall, throughput, strategy):
    """The results JSON: final errors, per-epoch curves, speed, configuration and versions."""

    def errors(key):
        return [1.0 - float(a) for a in history.get(key, [])]

    curves = {
        "epoch": list(range(1, len(history.get("loss", [])) + 1)),
        "train_loss": [float(v) for v in history.get("loss", [])],
        "train_error": errors("accuracy"),
        "test_error": errors("test_accuracy"),
        "val_error": errors("val_accuracy"),
    }
    test = test or {}  # None: the caller did not evaluate on the test split
    final = {
        "train_error": curves["train_error"][-1] if curves["train_error"] else None,
        "test_error": 1.0 - float(test["accuracy"]) if "accuracy" in test else None,
        "test_top5_error": 1.0 - float(test["top5_accuracy"]) if "top5_accuracy" in test else None,
        "test_loss": float(test["loss"]) if "loss" in test else None,
        "val_error": curves["val_error"][-1] if curves["val_error"] else None,
    }
    return {
        "config": dataclasses.asdict(config),
        "final": final,
        "curves": curves,
        "model": {
            "name": model.name,
            "depth": models.get_spec(config.model).depth,
            "params": models.count_params(model),
            "multiply_adds": models.count_flops(model),
        },
        "data": {"name": info.name, "image_shape": list(info.image_shape), "sizes": info.sizes},
        "wall_time_s": wall,
        "train_images_per_s": throughput.images_per_second(),
        "replicas": strategy.num_replicas_in_sync,
        "versions": package_versions(),
    }


def train(config):
    """Check the run directory, save the config, train; returns the results dict."""
    config = prepare_run_dir(config)
    os.makedirs(config.run_dir, exist_ok=True)
    write_json(os.path.join(config.run_dir, "config.json"), dataclasses.asdict(config))
    _, results = fit_model(config)
    return results


def evaluate(
    model_path,
    dataset=data_lib.EMBEDDED,
    *,
    data_dir=None,
    batch_size=128,
    image_size=None,
    ten_crop=False,
):
    """Top-1 and top-5 error of a saved `.keras` model (or a run directory) on a test split.

    The model runs in its inference form, BN folded into the convs (as exports serve it).
    """
    if os.path.isdir(model_path):
        model_path = os.path.join(model_path, "model.keras")
    if not os.path.exists(model_path):
        raise ValueError(f"No model at {model_path!r}: give a .keras file or a run directory.")
    model = inference.fold_batch_norm(keras.saving.load_model(model_path))
    data = data_lib.load_data(dataset, data_dir=data_dir, image_size=image_size)
    info = data.info
    if tuple(model.input_shape[1:]) != tuple(info.image_shape):
        raise ValueError(
            f"The model takes {model.input_shape[1:]} images but {info.name} gives "
            f"{info.image_shape}; pass --image_size or the data set it was trained on."
        )
    if ten_crop:
        return _ten_crop_errors(model, data.test, info, batch_size)
    compile_model(model, recipes.get_recipe("cifar"), 0.0)
    test_ds = data_lib.make_pipeline(data.test, info, batch_size=batch_size, training=False)
    result = model.evaluate(test_ds, verbose=0, return_dict=True)
    return {
        "top1_error": 1.0 - float(result["accuracy"]),
        "top5_error": 1.0 - float(result["top5_accuracy"]) if "top5_accuracy" in result else None,
        "examples": info.sizes["test"],
    }


def _ten_crop_errors(model, dataset, info, batch_size):
    """The paper's 10-crop protocol: average the softmax over 4 corners, centre and mirrors."""
    size = info.image_shape[:2]
    top1 = top5 = n = 0
    views = dataset.map(lambda x, y: (data_lib.ten_crops(x, size), y)).batch(batch_size)
    for crops, labels in views:
        b = tf.shape(crops)[0]
        flat = tf.reshape(tf.cast(crops, tf.float32), (-1, *info.image_shape))
        probs = tf.reduce_mean(tf.reshape(model(flat, training=False), (b, 10, -1)), axis=1)
        top1 += int(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probs, 1), tf.int32)))
        top5 += int(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probs, 5), tf.int32)))
        n += int(b)
    return {"top1_error": 1 - top1 / n, "top5_error": 1 - top5 / n, "examples": n}
