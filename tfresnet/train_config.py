"""What a run is: `TrainConfig`, every setting written once with its default, help and check, and
validated where it is made; `check_run_dir` resolves it against what its run directory holds.

The config is flat (one JSON object, `config.json`); each field's `group` is its section.
"""

import dataclasses
import os

from tfresnet import blocks, cluster, distribute, files, precision, recipes, rundir, specs
from tfresnet import config as config_lib
from tfresnet import data as data_lib
from tfresnet.config import at_least, setting

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
VERBOSE_CHOICES = ("auto", "0", "1", "2")  # Keras' verbose, and auto: by terminal (keras_verbose)


class TrainingError(RuntimeError):
    """Training could not finish (diverged, or the run directory is in the way)."""


def _check_model(name, value):
    specs.resolve_spec(value)  # a table name or a spec string (specs.parse_model)


def _check_seed(name, value):
    if not 0 <= value < 2**32:
        raise ValueError(f"seed must be between 0 and 2**32 - 1; got {value}.")


def _check_pretrained(name, value):
    if value and not files.exists(value):
        raise ValueError(
            f"pretrained weights file {value!r} does not exist (give a keras.applications ResNet "
            ".h5 file)."
        )


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved as `config.json` beside its results. Groups: model,
    data, schedule, runtime, output."""

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
        "Training recipe: cifar, imagenet (the paper's) or fast (12 epochs, with the tricks of "
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
        cluster.DEFAULT_PEER_TIMEOUT,
        "Seconds a multi-worker start waits for every other worker in TF_CONFIG to come up; "
        "then it gives up, naming the missing ones, with the retryable exit status 138.",
        group="runtime",
        check=cluster.check_peer_timeout,
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
    eval_test_each_epoch: bool | None = setting(
        None,
        "Measure the test error after every epoch: the paper's test curves (Fig. 6), never used "
        "for selection; default: the recipe's (on; fast: off, as its time is the point).",
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
            self.run_dir = os.path.join(
                "runs", f"{rundir.model_slug(self.model)}-{rundir.data_slug(self.dataset)}"
            )

    def identity(self) -> dict:
        """The fields that say what the run computes (a restart must match them)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NON_IDENTITY_FIELDS}


def comparable(identity: dict) -> dict:
    """A run's identity with each trick left to the recipe (None) written as the recipe's value:
    a run saved before a field became a recipe setting holds that value (zero_init_residual:
    False), the same run as None under the paper's recipes. With the recipe unset (picked by
    the data's style, unknown here) only a value both paper recipes share is filled in; a
    recipe's test_flip=True holds only for data that flips, so there None stays None."""
    named = identity.get("recipe")
    rows = [recipes.RECIPES[n] for n in ([named] if named else ["cifar", "imagenet"])]
    filled = {}
    for k in recipes.OVERRIDES:
        values = {getattr(row, k) for row in rows}
        if k in identity and identity[k] is None and len(values) == 1:
            value = values.pop()
            if not (k == "test_flip" and value):
                filled[k] = value
    return {**identity, **filled}


def check_run_dir(config: TrainConfig) -> TrainConfig:
    """The config to run in `config.run_dir`; refuses to mix runs. Writes nothing. `resume` takes
    the saved config; an identical unfinished run continues; `overwrite` is applied later, by
    `train`, once everything is validated."""
    files.check_output_dir(config.run_dir, "run_dir", unset="runs/<model>-<dataset>")
    path = files.join(config.run_dir, "config.json")
    if config.overwrite or not files.exists(path):
        if config.resume:
            raise TrainingError(f"--resume: there is no run to continue in {config.run_dir!r}.")
        return config
    saved = rundir.read_config(
        path,
        "restore it from a copy, or use --overwrite to start the run again, or another --run_dir.",
    )
    if config.resume:
        kept = {k: getattr(config, k) for k in NON_IDENTITY_FIELDS}
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        saved = {k: v for k, v in saved.items() if k in known and k not in kept}
        config = TrainConfig(**{**saved, **kept, "run_dir": config.run_dir})
    else:
        # A field added to TrainConfig since the run started compares at its default (before
        # `comparable` reads it); fields it no longer has are left out.
        defaults = TrainConfig(run_dir=config.run_dir).identity()
        theirs = comparable({**defaults, **{k: saved[k] for k in defaults if k in saved}})
        differs = rundir.differences(theirs, comparable(config.identity()))
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
