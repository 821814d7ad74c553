"""Package a finished `tfresnet train` run as weights that ship inside tfresnet (a maintainer's
tool, not part of the installed package):

    python -m experiments.ship_weights --run_dir=/work/runs/fast-s0 --name=fashion_mnist

writes `tfresnet/weights/resnet20-fashion_mnist.weights.h5` (float32 weights only) and
`resnet20-fashion_mnist.json` beside it: the build_model arguments that rebuild the network
exactly, the class names, the test and validation accuracy the run measured (results.json), how
it measured them, the command and config that retrain it, the date and the file's sha256. Then
`build_model("resnet20", weights="fashion_mnist")` loads them offline. It prints the line that
docs/models.md carries for these weights (tests/test_shipped_weights.py checks it is there).
"""

import dataclasses
import datetime
import glob
import os
import sys

import numpy as np
from absl import app, flags

from tfresnet import data as data_lib
from tfresnet import files, models, pretrained, shipped, specs, untrusted

COMMAND_FIELDS = ("run_dir", "resume", "overwrite", "verbose")  # how, not what, a run trains
SAID_ALWAYS = ("model", "dataset")  # in the retraining command even at their defaults
_FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "A finished tfresnet train run directory.")
flags.DEFINE_string("name", None, "What weights= calls them, e.g. fashion_mnist.")
flags.DEFINE_string("weights_dir", None, "Where to write; default the package's tfresnet/weights.")


def ship(run_dir: str, name: str, weights_dir: str | None = None) -> dict:
    """Write `<model>-<name>.weights.h5` and its `.json` description for the run in `run_dir`
    into `weights_dir` (default the package's); returns the description.

    Raises ValueError when the run is not finished, its model is not a table name, or the
    rebuilt model does not reproduce the run's.
    """
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(
            f"--name must be letters, digits and '_' (e.g. fashion_mnist); got {name!r}."
        )
    weights_dir = shipped.WEIGHTS_DIR if weights_dir is None else weights_dir
    results_path = os.path.join(run_dir, "results.json")
    if not os.path.isfile(results_path):
        raise ValueError(f"{run_dir} has no results.json: the run has not finished.")
    results = files.read_json(results_path)
    config = results["config"]
    model_name = specs.canonical_name(config["model"])
    if model_name is None:
        raise ValueError(
            f"The run trained {config['model']!r}; only table names (resnet20, ...) ship, "
            f"so that weights= can find them by the name build_model takes."
        )
    source = untrusted.load_keras_model(
        os.path.join(run_dir, "model.keras"), compile=False, safe_mode=True
    )
    arguments = architecture(source, config)
    model = models.build_model(model_name, **arguments)  # float32: the global policy's
    report = pretrained.load_weights_by_name(model, source)
    if report.skipped:
        raise ValueError(f"The rebuilt {model_name} has layers the run's lacks: {report.skipped}.")
    _check_same_outputs(model, source, tolerance=_tolerance(source))

    stem = shipped.weights_stem(model_name, name)
    weights_path = os.path.join(weights_dir, stem + shipped.WEIGHTS_SUFFIX)
    files.save_weights(model, weights_path)
    final = results["final"]
    description = {
        "model": model_name,
        "name": name,
        "weights_file": os.path.basename(weights_path),
        "sha256": shipped.sha256_of(weights_path),
        "bytes": os.path.getsize(weights_path),
        "arguments": arguments,
        "class_names": class_names(run_dir, config, arguments["num_classes"]),
        "dataset": config["dataset"],
        "test_accuracy": _accuracy(final.get("test_error")),
        "val_accuracy": _accuracy(final.get("val_error")),
        "test_examples": results.get("data", {}).get("sizes", {}).get("test"),
        # How results.json measured them: averaged with the mirror images (the fast recipe's
        # test_flip) or not, and in which precision.
        "evaluation": {
            "test_flip": bool(results.get("recipe", {}).get("test_flip", False)),
            "precision": results.get("precision"),
        },
        "params": models.count_params(model),
        "command": retrain_command(config, results.get("schedule", {}).get("epochs")),
        "config": config,
        "versions": results.get("versions"),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
    }
    files.write_json(os.path.join(weights_dir, stem + ".json"), description)
    # What users get: the packaged files, loaded the way build_model(weights=) loads them.
    entry = shipped.find_shipped(model_name, name, weights_dir)
    loaded = models.build_model(model_name, weights=name, weights_dir=weights_dir)
    _check_same_outputs(loaded, model, tolerance=0.0)
    return entry.description


def architecture(source, config: dict) -> dict:
    """build_model's architecture arguments (the keys of a description's "arguments") that
    rebuild the run's model `source`, from its config and its layers."""
    spec = specs.resolve_spec(config["model"])
    convs = [layer for layer in source.layers if hasattr(layer, "kernel_size")]
    norms = [layer for layer in source.layers if layer.name.endswith("_bn")]
    arguments = {
        "num_classes": int(source.output_shape[-1]),
        "input_shape": [int(d) for d in source.input_shape[1:]],
        "shortcut": config.get("shortcut") or spec.default_shortcut,
        "preact": bool(config.get("preact", False)),
        "stride_placement": config.get("stride_placement", "v1.5"),
        "conv_bias": any(layer.use_bias for layer in convs),
        "bn_epsilon": float(norms[0].epsilon),
        "pixel_mean": None,
        "pixel_std": None,
    }
    try:
        standardize = source.get_layer("standardize").get_config()
    except ValueError:  # the model takes standardised inputs
        return arguments
    arguments["pixel_mean"] = np.asarray(standardize["mean"], "float32").tolist()
    std = np.sqrt(np.asarray(standardize["variance"], "float32"))
    # One std for all pixels (the CIFAR recipe's) is written once, not once per pixel.
    arguments["pixel_std"] = float(std.flat[0]) if np.all(std == std.flat[0]) else std.tolist()
    return arguments


def class_names(run_dir: str, config: dict, num_classes: int) -> list[str]:
    """The run's class names: its export's class_names.txt, else its data set's."""
    for path in sorted(glob.glob(os.path.join(run_dir, "export", "*", "*", "assets.extra",
                                              "class_names.txt"))):  # fmt: skip
        names = files.read_text(path).splitlines()
        if len(names) == num_classes:
            return names
    info = data_lib.load_data(
        config["dataset"], data_dir=config.get("data_dir"), image_size=config.get("image_size")
    ).info
    return list(info.class_names)


def retrain_command(config: dict, epochs: int | None = None) -> str:
    """`tfresnet train` with the flags that set `config` (fields at their defaults left out);
    the run's length as `--epochs` where the config left it to a default that may change."""
    from tfresnet import train

    defaults = {
        field.name: field.default
        for field in dataclasses.fields(train.TrainConfig)
        if field.default is not dataclasses.MISSING
    }
    parts = ["tfresnet train"]
    for key, value in config.items():
        if key in COMMAND_FIELDS or value is None:  # None: the default (the recipe's)
            continue
        if key not in SAID_ALWAYS and value == defaults.get(key, False):  # unknown: off
            continue
        if isinstance(value, bool):
            parts.append(f"--{key}" if value else f"--no{key}")
        elif isinstance(value, float):
            parts.append(f"--{key}={value:g}")
        else:
            parts.append(f"--{key}={value}")
    if epochs is not None and all(config.get(k) is None for k in ("budget", "epochs", "steps")):
        parts.append(f"--epochs={epochs}")
    return " ".join(parts)


def docs_line(description: dict) -> str:
    """The line docs/models.md carries for a set of shipped weights."""
    flip = (
        " (each image averaged with its mirror)" if description["evaluation"]["test_flip"] else ""
    )
    val = description["val_accuracy"]
    val_text = f", {100 * val:.2f}% on its held-out validation images" if val is not None else ""
    return (
        f"| `{description['model']}` | `{description['name']}` | "
        f"{100 * description['test_accuracy']:.2f}% test accuracy{flip}{val_text} | "
        f"`{description['command']}` |"
    )


def _accuracy(error):
    return None if error is None else 1.0 - float(error)


def _tolerance(source):
    """How far float32 outputs may be from the run's model's: exact in float32, bfloat16's
    rounding (about 3 significant digits per op) under a mixed policy."""
    dtypes = {getattr(layer, "compute_dtype", "float32") for layer in source.layers}
    return 1e-5 if dtypes <= {"float32"} else 0.05


def _check_same_outputs(model, reference, tolerance):
    """ValueError unless `model` and `reference` give the same outputs (mean absolute difference
    of the probabilities within `tolerance`) on random images in the pixel range."""
    images = np.random.default_rng(0).uniform(0, 255, (8, *model.input_shape[1:]))
    images = images.astype("float32")
    got = np.asarray(model(images, training=False), "float64")
    want = np.asarray(reference(images, training=False), "float64")
    difference = float(np.abs(got - want).mean())
    if difference > tolerance:
        raise ValueError(
            f"The rebuilt {model.name} differs from the run's model by {difference:.3g} on "
            f"average (allowed {tolerance:g}); its build arguments are not the run's."
        )


def main(argv):
    del argv
    if not _FLAGS.run_dir or not _FLAGS.name:
        print("error: give --run_dir=RUN and --name=NAME (e.g. fashion_mnist).", file=sys.stderr)
        return 2
    try:
        description = ship(_FLAGS.run_dir, _FLAGS.name, _FLAGS.weights_dir)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stem = shipped.weights_stem(description["model"], description["name"])
    folder = _FLAGS.weights_dir or shipped.WEIGHTS_DIR
    print(f"wrote {os.path.join(folder, stem)}{{{shipped.WEIGHTS_SUFFIX},.json}}")
    print(f"docs/models.md line:\n{docs_line(description)}")
    return 0


if __name__ == "__main__":
    app.run(main)
