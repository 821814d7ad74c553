"""Weights shipped inside the package: `build_model("resnet20", weights="fashion_mnist")`.

Each is `tfresnet/weights/<model>-<name>.weights.h5` with a `<model>-<name>.json` beside it (how
to rebuild the model, class names, accuracy, the retraining command, sha256), written by
`python -m experiments.ship_weights`; docs/models.md lists them.
"""

import dataclasses
import hashlib
import inspect
import os

import keras
import numpy as np

from tfresnet import pretrained

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
WEIGHTS_SUFFIX = ".weights.h5"


@dataclasses.dataclass(frozen=True)
class ShippedWeights:
    """One set of shipped weights: the file, and its description (the `.json` beside it)."""

    model: str  # the table name, e.g. "resnet20"
    name: str  # what `weights=` calls it, e.g. "fashion_mnist"
    path: str  # the .weights.h5 file
    description: dict

    @property
    def arguments(self) -> dict:
        """build_model's architecture arguments the weights need (tuples, not JSON lists)."""
        args = dict(self.description["arguments"])
        args["input_shape"] = tuple(args["input_shape"])
        return args


def weights_stem(model: str, name: str) -> str:
    """`<model>-<name>`: the shared stem of the weights file and its description."""
    return f"{model}-{name}"


def shipped_weights(weights_dir: str | os.PathLike | None = None) -> dict:
    """{(model, name): ShippedWeights} of the weights in `weights_dir` (default the package's
    own `tfresnet/weights/`): every `<model>-<name>.json` with its `.weights.h5` beside it.

    Example:
      >>> ("resnet20", "fashion_mnist") in shipped_weights()
      True
    """
    folder = os.fspath(WEIGHTS_DIR if weights_dir is None else weights_dir)
    found = {}
    for file in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        stem, ext = os.path.splitext(file)
        weights_file = os.path.join(folder, stem + WEIGHTS_SUFFIX)
        if ext != ".json" or "-" not in stem or not os.path.isfile(weights_file):
            continue
        description = _read_description(os.path.join(folder, file))
        model, name = description["model"], description["name"]
        if weights_stem(model, name) != stem:
            raise ValueError(
                f"{os.path.join(folder, file)} describes {weights_stem(model, name)}, not its "
                f"own name {stem}; package the weights again (python -m experiments.ship_weights)."
            )
        found[model, name] = ShippedWeights(model, name, weights_file, description)
    return found


def _read_description(path):
    from tfresnet import untrusted

    with open(path, "rb") as f:
        text = f.read(1 << 20)  # a description is a few kB (per-pixel means: 784 numbers)
    try:
        description = untrusted.parse_json(text, path)
    except ValueError as err:
        raise ValueError(f"{path} is not readable JSON ({err}).") from err
    missing = [k for k in ("model", "name", "arguments", "sha256") if k not in description]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; it is not a weights description.")
    return description


def find_shipped(
    model: str, weights: str, weights_dir: str | os.PathLike | None = None
) -> ShippedWeights:
    """The shipped weights `weights` of `model`; ValueError listing what exists otherwise."""
    available = shipped_weights(weights_dir)
    if (model, weights) in available:
        return available[model, weights]
    listed = ", ".join(f"{m} weights={n!r}" for m, n in available) or "none"
    raise ValueError(
        f"No shipped weights {weights!r} for {model}; shipped: {listed} (or give a path to a "
        f"{WEIGHTS_SUFFIX} file, or weights=None for random initialisation)."
    )


def sha256_of(path: str | os.PathLike) -> str:
    """The hex SHA-256 of the file at `path`, read in 1 MB chunks (hashlib.file_digest is 3.11+)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_arguments(shipped: ShippedWeights, given: dict) -> dict:
    """`given` (build_model's arguments) with the architecture the weights need filled in where
    left at build_model's default; ValueError in one line listing what the weights need when a
    given value differs (num_classes and input_shape may differ with include_top=False)."""
    from tfresnet import models

    parameters = inspect.signature(models.build_model).parameters
    needed = shipped.arguments
    headless = given.get("include_top") is False
    args, conflicts = dict(given), []
    if given.get("input_tensor") is not None and given.get("input_shape") is None:
        given = {**given, "input_shape": tuple(given["input_tensor"].shape[1:])}
    for key, need in needed.items():
        value, default = given.get(key, parameters[key].default), parameters[key].default
        if headless and key == "input_shape" and value is not None:  # any size, same channels
            if value[-1] != need[-1]:
                conflicts.append(f"input_shape={tuple(value)} (the weights take {need[-1]} "
                                 f"channel(s))")  # fmt: skip
            elif tuple(value) != need and np.ndim(needed["pixel_mean"]) == 3:
                conflicts.append(f"input_shape={tuple(value)} (the weights standardise "
                                 f"each pixel of {need[0]}x{need[1]} images)")  # fmt: skip
        elif headless and key == "num_classes":
            continue
        elif _same(value, default) or _same(value, need):
            args[key] = need
        else:
            conflicts.append(f"{key}={_short(value)}")
    if conflicts:
        wants = ", ".join(
            f"{k}={_short(v)}" for k, v in needed.items() if k not in ("pixel_mean", "pixel_std")
        )
        raise ValueError(
            f"weights={shipped.name!r} are for {shipped.model} with {wants} and the training "
            f"set's pixel_mean/pixel_std; got {', '.join(conflicts)} (leave those arguments "
            f"out; include_top=False takes other num_classes and input sizes)."
        )
    return args


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=0.0))


def _short(value):
    """A value for a one-line message: arrays by their shape."""
    if isinstance(value, (list, np.ndarray)) and np.ndim(value) > 1:
        return f"<array of shape {np.shape(value)}>"
    return repr(tuple(value) if isinstance(value, list) else value)


def load_weights_file(model: keras.Model, path: str | os.PathLike) -> None:
    """`model.load_weights(path)` for a `.weights.h5` file of the same architecture; ValueError
    naming the file when it does not exist or does not fit."""
    path = os.fspath(path)
    if not path.endswith(WEIGHTS_SUFFIX) or not os.path.isfile(path):
        what = "is not a file" if path.endswith(WEIGHTS_SUFFIX) else "is not a .weights.h5 file"
        raise ValueError(
            f"weights={path!r} {what}; give a shipped name or a {WEIGHTS_SUFFIX} path."
        )
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} does not fit {model.name} ({first}); build the model with the arguments it "
            f"was saved with."
        ) from err


def build_with_weights(name, weights: str, arguments: dict, weights_dir=None) -> keras.Model:
    """`build_model(name, **arguments)` with trained weights: a shipped name of `name`'s (its
    architecture filled in, its checksum checked) or a `.weights.h5` path. build_model's
    `weights=` lands here."""
    from tfresnet import models, specs

    if str(weights).endswith(WEIGHTS_SUFFIX):
        model = models.build_model(name, **arguments)
        load_weights_file(model, weights)
        return model
    model_name = specs.canonical_name(name) if isinstance(name, str) else None
    if model_name is None:
        raise ValueError(
            f"weights={weights!r} needs a model name from the table (such as 'resnet20'), not "
            f"{name!r}; a .weights.h5 path loads into any architecture."
        )
    shipped = find_shipped(model_name, weights, weights_dir)
    model = models.build_model(model_name, **build_arguments(shipped, arguments))
    actual = sha256_of(shipped.path)
    if actual != shipped.description["sha256"]:
        raise ValueError(
            f"{shipped.path} has sha256 {actual}, but its description says "
            f"{shipped.description['sha256']}: the file is damaged or was replaced; reinstall "
            f"tfresnet (a maintainer: python -m experiments.ship_weights)."
        )
    if arguments.get("include_top") is False:  # all but the classifier, by layer name
        whole = models.build_model(model_name, **shipped.arguments)
        load_weights_file(whole, shipped.path)
        pretrained.load_weights_by_name(model, whole)
    else:
        load_weights_file(model, shipped.path)
    return model


def shipped_model(
    name: str, weights: str, weights_dir: str | os.PathLike | None = None
) -> tuple[keras.Model, list[str] | None]:
    """(`build_model(name, weights=weights)`, the class names its description gives, or None
    for a `.weights.h5` path): what `tfresnet predict` and `tfresnet export --weights` serve."""
    from tfresnet import models

    model = models.build_model(name, weights=weights, weights_dir=weights_dir)
    if str(weights).endswith(WEIGHTS_SUFFIX):
        return model, None
    shipped = find_shipped(model.name, weights, weights_dir)
    return model, list(shipped.description.get("class_names") or []) or None
