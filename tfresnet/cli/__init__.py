"""The `tfresnet` command: thin subcommands over the library, flags parsed by absl.

    tfresnet train [--model=resnet20 --dataset=digits ...]   train with the paper's recipe
    tfresnet evaluate --model_path=RUN_DIR_OR_KERAS          top-1/top-5 test error
    tfresnet tune --tuner=grid --shortcut=A,B,C,none ...      KerasTuner search
    tfresnet export --model_path=M.keras --export_dir=DIR    SavedModel for TF Serving
    tfresnet predict --model=EXPORT_DIR image.jpg ...        top-k classes of image files
    tfresnet bench [--models=resnet20 ...]                   throughput benchmark
    tfresnet models                                          the model table

`tfresnet <command> --help` lists a command's flags. Every error is one line on stderr
(`--traceback` adds the Python traceback) and an exit status: 2 bad input (the message says what
was wrong and what is allowed), 1 a run that failed, 130 interrupted (run the command again to
resume), 138 a lost peer worker (retryable: restart every worker with the same command).
"""

import dataclasses
import json
import os
import sys

from absl import flags

COMMANDS = ("train", "evaluate", "tune", "export", "predict", "bench", "models")


def _split(value):
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def define_train_flags(fv, *, for_tune=False):
    """Flags that fill a `TrainConfig` (shared by train and tune); defaults from the dataclass."""
    from tfresnet.precision import PRECISIONS
    from tfresnet.train import TrainConfig

    d = TrainConfig.__dataclass_fields__
    flags.DEFINE_string(
        "model", d["model"].default, "Model name, e.g. resnet20, plain56, resnet50.", flag_values=fv
    )
    flags.DEFINE_string(
        "dataset",
        d["dataset"].default,
        "digits (embedded), a tfds name (cifar10, imagenet2012, ...) or a folder of class folders.",
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
        0.1 if for_tune else 0.0,
        "Training examples held out for validation (count, or fraction if < 1).",
        flag_values=fv,
    )
    if not for_tune:
        flags.DEFINE_enum(
            "shortcut",
            None,
            ["A", "B", "C", "none"],
            "Shortcut option; default: A for CIFAR nets, B for ImageNet nets.",
            flag_values=fv,
        )
        flags.DEFINE_bool(
            "preact", False, "Pre-activation blocks (He et al. 2016).", flag_values=fv
        )
        flags.DEFINE_float(
            "learning_rate",
            None,
            "Base learning rate; default: the recipe's 0.1, scaled linearly with the batch.",
            flag_values=fv,
        )
        flags.DEFINE_float("weight_decay", None, "Weight decay; default 1e-4.", flag_values=fv)
    flags.DEFINE_enum(
        "stride_placement",
        "v1.5",
        ["v1", "v1.5"],
        "Bottleneck stride on the first 1x1 (v1, the paper) or the 3x3 (v1.5).",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "zero_init_residual", False, "Start residual branches at zero.", flag_values=fv
    )
    flags.DEFINE_enum(
        "recipe",
        None,
        ["cifar", "imagenet"],
        "Training recipe; default by image size.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "batch_size", None, "Global batch size; default the recipe's (128).", flag_values=fv
    )
    flags.DEFINE_enum(
        "lr_rule",
        "linear",
        ["linear", "none"],
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
        d["precision"].default,
        list(PRECISIONS),
        "Keras dtype policy; auto: bfloat16 where the CPU/GPU/TPU runs it fast.",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "strategy",
        "auto",
        ["auto", "one_device", "mirrored", "multi_worker", "tpu"],
        "tf.distribute strategy.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_replicas", None, "Replicas for mirrored (logical CPUs on a CPU).", flag_values=fv
    )
    flags.DEFINE_string(
        "tpu", None, "TPU name or address for --strategy=tpu ('local' on a TPU VM).", flag_values=fv
    )
    flags.DEFINE_bool(
        "sync_bn",
        None,
        "Synchronise BatchNorm statistics across replicas; default: on with more than one.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "steps_per_execution", 1, "Training steps per tf.function call.", flag_values=fv
    )
    flags.DEFINE_integer("seed", 0, "Random seed.", flag_values=fv)
    flags.DEFINE_string(
        "run_dir", None, "Where this run's files go; default runs/<model>-<data>.", flag_values=fv
    )
    flags.DEFINE_string(
        "pretrained",
        None,
        "keras.applications ResNet .h5 weights to start from (fine-tuning).",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "export", True, "Export a SavedModel for TF Serving at the end.", flag_values=fv
    )
    flags.DEFINE_bool("resume", False, "Continue the unfinished run in --run_dir.", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace the run in --run_dir.", flag_values=fv)
    flags.DEFINE_enum(
        "verbose", "auto", ["auto", "0", "1", "2"], "Keras progress output.", flag_values=fv
    )


def config_from_flags(fv, **overrides):
    from tfresnet.train import TrainConfig

    values = {f.name: fv[f.name].value for f in dataclasses.fields(TrainConfig) if f.name in fv}
    values["verbose"] = "auto" if values.get("verbose") == "auto" else int(values["verbose"])
    values.update(overrides)
    return TrainConfig(**values)


def cmd_train(fv, args):
    from tfresnet.train import train

    results = train(config_from_flags(fv))
    final = results["final"]
    print(
        f"\n{results['model']['name']} on {results['data']['name']}: "
        f"test error {100 * final['test_error']:.2f}%"
        + (
            f", top-5 {100 * final['test_top5_error']:.2f}%"
            if final["test_top5_error"] is not None
            else ""
        )
        + f", train error {100 * final['train_error']:.2f}%, {results['wall_time_s']:.0f} s, "
        f"{results['train_images_per_s'] or 0:.0f} images/s"
    )
    print(f"run directory: {results['config']['run_dir']}")
    return 0


def define_evaluate_flags(fv):
    flags.DEFINE_string("model_path", None, "A .keras file or a run directory.", flag_values=fv)
    flags.DEFINE_string(
        "dataset",
        None,
        "Data set to evaluate on; default the run's own (else digits).",
        flag_values=fv,
    )
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.", flag_values=fv)
    flags.DEFINE_integer(
        "image_size", None, "Model input size for folders/large images.", flag_values=fv
    )
    flags.DEFINE_integer("batch_size", 128, "Evaluation batch size.", flag_values=fv)
    flags.DEFINE_bool("ten_crop", False, "The paper's 10-crop testing.", flag_values=fv)
    flags.mark_flag_as_required("model_path", flag_values=fv)


def cmd_evaluate(fv, args):
    from tfresnet.evaluate import evaluate

    result = evaluate(
        fv.model_path,
        fv.dataset,
        data_dir=fv.data_dir,
        batch_size=fv.batch_size,
        image_size=fv.image_size,
        ten_crop=fv.ten_crop,
    )
    print(json.dumps(result, indent=2))
    return 0


def define_models_flags(fv):
    flags.DEFINE_list("names", None, "Models to list; default the paper's.", flag_values=fv)


def cmd_models(fv, args):
    from tfresnet import models

    return models.main(["--list", *(fv.names or [])])


DEFINERS = {
    "train": define_train_flags,
    "evaluate": define_evaluate_flags,
    "models": define_models_flags,
}
RUNNERS = {"train": cmd_train, "evaluate": cmd_evaluate, "models": cmd_models}


def _register_optional_commands():
    """Commands whose modules define their own flags and runner (`define_flags`, `run_command`)."""
    import importlib

    for command, module in (
        ("tune", "tuning"),
        ("export", "export"),
        ("predict", "predict"),
        ("bench", "bench"),
    ):
        try:
            mod = importlib.import_module(f"tfresnet.{module}")
        except ImportError:
            continue
        if hasattr(mod, "define_flags") and hasattr(mod, "run_command"):
            DEFINERS[command] = mod.define_flags
            RUNNERS[command] = mod.run_command


def usage():
    return __doc__.strip() + "\n"


EXIT_USAGE = 2  # bad flags or input: fix the command
EXIT_FAILED = 1  # the run failed for a reason a retry will not fix
EXIT_RETRY = 138  # a peer worker was lost: retryable (Kubeflow's code for user retryable errors)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT: the run resumes when the command is run again


def main(argv):
    """Run one subcommand; returns the exit status (see the EXIT_* codes)."""
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        return 0 if len(argv) >= 2 else EXIT_USAGE
    command = argv[1]
    _register_optional_commands()
    if command not in DEFINERS:
        print(
            f"error: unknown command {command!r}; allowed: {', '.join(DEFINERS)}.", file=sys.stderr
        )
        return EXIT_USAGE
    fv = flags.FlagValues()
    DEFINERS[command](fv)
    flags.DEFINE_bool("help", False, "Show this command's flags.", flag_values=fv, short_name="h")
    flags.DEFINE_bool(
        "traceback", False, "On an error, print the Python traceback too.", flag_values=fv
    )
    try:
        args = fv([f"tfresnet {command}", *argv[2:]])
    except flags.Error as err:
        print(
            f"error: tfresnet {command}: {err} (see `tfresnet {command} --help`)", file=sys.stderr
        )
        return EXIT_USAGE
    if fv.help:
        print(f"tfresnet {command} flags:\n{fv.get_help()}")
        return 0
    try:
        return RUNNERS[command](fv, args[1:])
    except BaseException as err:  # noqa: BLE001 -- every failure becomes one line and a code
        status, message = classify_error(err, fv)
        if fv.traceback:
            import traceback

            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        return status


def classify_error(err, fv=None):
    """(exit status, one-line message) for an exception that ended a command."""
    import tensorflow as tf

    from tfresnet.train import TrainingError

    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted; run the same command again to resume the run."
    if isinstance(err, tf.errors.UnavailableError | tf.errors.DeadlineExceededError):
        return EXIT_RETRY, _lost_worker_message(first, fv)
    if isinstance(err, TrainingError):
        return EXIT_FAILED, first
    if isinstance(err, PermissionError | IsADirectoryError | NotADirectoryError):
        return EXIT_FAILED, f"cannot write or read {err.filename!r}: {err.strerror}."
    if isinstance(err, ValueError | FileNotFoundError):
        return EXIT_USAGE, first
    if isinstance(err, OSError):
        return EXIT_FAILED, first
    if isinstance(err, tf.errors.OpError):
        # TensorFlow's own words, without its {{function_node ...}} prefix.
        text = (err.message or first).split("}}")[-1].strip().splitlines()[0]
        return EXIT_FAILED, f"{type(err).__name__}: {text}"
    hint = "" if fv is not None and fv.traceback else " (--traceback shows where)"
    return EXIT_FAILED, f"{type(err).__name__}: {first}{hint}"


def _lost_worker_message(detail, fv):
    """Which worker was lost, and the epoch every worker resumes from when restarted."""
    import re

    from tfresnet import rundir

    peer = re.search(r"/job:(\w+)/replica:\d+/task:(\d+)", detail)
    who = f"worker {peer.group(1)}:{peer.group(2)}" if peer else "a peer worker"
    resume = ""
    run_dir = getattr(fv, "run_dir", None) if fv is not None and "run_dir" in fv else None
    if run_dir:
        resume = f" from epoch {rundir.load_state(run_dir).epoch + 1}"
    return (
        f"lost contact with {who} ({detail[:200]}). Restart every worker with the same "
        f"command: the run resumes{resume}."
    )


def run():
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
