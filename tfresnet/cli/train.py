"""`tfresnet train`: flags fill a `train.TrainConfig`, then `train.train(config)`."""

import dataclasses
import sys

from absl import flags

from tfresnet import blocks, distribute, precision, recipes
from tfresnet import train as train_lib

VERBOSE_CHOICES = ("auto", "0", "1", "2")


def define_shared_flags(fv, *, validation_size):
    """The `TrainConfig` flags `tfresnet tune` shares (data, recipe, length, strategy)."""
    d = {f.name: f.default for f in dataclasses.fields(train_lib.TrainConfig)}
    flags.DEFINE_string(
        "dataset",
        d["dataset"],
        "digits (embedded), fashion_mnist (tfds, or Debian's dataset-fashion-mnist offline), a "
        "tfds name (cifar10, imagenet2012, ...), a folder of class folders or of MNIST-format "
        "IDX files.",
        flag_values=fv,
    )
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.", flag_values=fv)
    flags.DEFINE_bool(
        "download", False, "Let tfds download and prepare the data set.", flag_values=fv
    )
    flags.DEFINE_integer(
        "image_size", None, "Model input size for folders/large images.", flag_values=fv
    )
    flags.DEFINE_float(
        "validation_size",
        validation_size,
        "Training examples held out for validation (count, or fraction if < 1).",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "stride_placement",
        d["stride_placement"],
        blocks.STRIDE_PLACEMENTS,
        "Bottleneck stride on the first 1x1 (v1, the paper) or the 3x3 (v1.5).",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "zero_init_residual", False, "Start residual branches at zero.", flag_values=fv
    )
    flags.DEFINE_enum(
        "recipe",
        None,
        list(recipes.RECIPES),
        "Training recipe; default by image size.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "batch_size", None, "Global batch size; default the recipe's (128).", flag_values=fv
    )
    flags.DEFINE_enum(
        "lr_rule",
        d["lr_rule"],
        distribute.LR_SCALING_RULES,
        "Learning-rate scaling with the global batch.",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "budget", None, "Fraction of the paper's iterations (1.0 = 64k on CIFAR).", flag_values=fv
    )
    flags.DEFINE_integer(
        "epochs", None, "Epochs (instead of --budget); digits default 30.", flag_values=fv
    )
    flags.DEFINE_integer(
        "steps", None, "Iterations (instead of --budget/--epochs).", flag_values=fv
    )
    flags.DEFINE_enum(
        "precision",
        d["precision"],
        precision.PRECISIONS,
        "Keras dtype policy; auto: bfloat16 where the CPU/GPU/TPU runs it fast.",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "strategy",
        d["strategy"],
        distribute.STRATEGY_NAMES,
        "tf.distribute strategy.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_replicas", None, "Replicas for mirrored (logical CPUs on a CPU).", flag_values=fv
    )
    flags.DEFINE_string(
        "tpu", None, "TPU name or address for --strategy=tpu ('local' on a TPU VM).", flag_values=fv
    )
    flags.DEFINE_float(
        "peer_timeout",
        d["peer_timeout"],
        "Seconds a multi-worker start waits for every other worker in TF_CONFIG to come up; "
        "then it gives up, naming the missing ones, with the retryable exit status 138.",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "sync_bn",
        None,
        "Synchronise BatchNorm statistics across replicas; default: on with more than one.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "steps_per_execution",
        d["steps_per_execution"],
        "Training steps per tf.function call; default: the largest divisor of an epoch's steps "
        "up to 8 (32 on TPU), 1 under mirrored strategies.",
        flag_values=fv,
    )
    flags.DEFINE_integer("seed", d["seed"], "Random seed.", flag_values=fv)
    flags.DEFINE_string(
        "pretrained",
        None,
        "keras.applications ResNet .h5 weights to start from (fine-tuning).",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "verbose",
        "auto",
        VERBOSE_CHOICES,
        "Keras progress output: 0 none, 1 a progress bar, 2 one line per epoch; auto: the bar "
        "when stdout is a terminal, else one line per epoch (logs, CI, nohup).",
        flag_values=fv,
    )


def define_flags(fv):
    """`tfresnet train` flags; defaults from `TrainConfig`."""
    flags.DEFINE_string(
        "model",
        train_lib.TrainConfig.model,
        "Model name, e.g. resnet20, plain56, resnet50.",
        flag_values=fv,
    )
    define_shared_flags(fv, validation_size=train_lib.TrainConfig.validation_size)
    flags.DEFINE_enum(
        "shortcut",
        None,
        blocks.SHORTCUTS,
        "Shortcut option; default: A for CIFAR nets, B for ImageNet nets.",
        flag_values=fv,
    )
    flags.DEFINE_bool("preact", False, "Pre-activation blocks (He et al. 2016).", flag_values=fv)
    flags.DEFINE_float(
        "learning_rate",
        None,
        "Base learning rate; default: the recipe's 0.1, scaled linearly with the batch.",
        flag_values=fv,
    )
    flags.DEFINE_float("weight_decay", None, "Weight decay; default 1e-4.", flag_values=fv)
    flags.DEFINE_string(
        "run_dir", None, "Where this run's files go; default runs/<model>-<data>.", flag_values=fv
    )
    flags.DEFINE_bool(
        "export", True, "Export a SavedModel for TF Serving at the end.", flag_values=fv
    )
    flags.DEFINE_bool("resume", False, "Continue the unfinished run in --run_dir.", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace the run in --run_dir.", flag_values=fv)


def keras_verbose(value, stream=None):
    """Keras' `verbose` for a --verbose value: "auto" is the bar on a terminal, else 2."""
    if value != "auto":
        return int(value)
    return 1 if (stream or sys.stdout).isatty() else 2


def config_from_flags(fv, skip=()):
    """The `TrainConfig` of the flags `fv` defines (the others, and `skip`, keep the dataclass
    defaults)."""
    values = {
        f.name: fv[f.name].value
        for f in dataclasses.fields(train_lib.TrainConfig)
        if f.name in fv and f.name not in skip
    }
    values["verbose"] = keras_verbose(values["verbose"])
    return train_lib.TrainConfig(**values)


def run(fv, args):
    results = train_lib.train(config_from_flags(fv))
    final = results["final"]
    top5 = final["test_top5_error"]
    print(
        f"\n{results['model']['name']} on {results['data']['name']}: "
        f"test error {100 * final['test_error']:.2f}%"
        + (f", top-5 {100 * top5:.2f}%" if top5 is not None else "")
        + f", train error {100 * final['train_error_eval']:.2f}% (unaugmented, inference mode; "
        f"running over the last epoch {100 * final['train_error']:.2f}%), "
        f"{results['wall_time_s']:.0f} s, "
        f"{results['train_images_per_s'] or 0:.0f} images/s"
    )
    print(f"run directory: {results['config']['run_dir']}")
    return 0
