"""Trained weights for tfresnet models: the ones shipped inside the package, and ImageNet weights
imported from Keras Applications ResNet50/101/152.

    model = build_model("resnet20", weights="fashion_mnist")   # shipped, offline (`load_shipped`)

    model = build_model("resnet50", num_classes=102, **keras_applications_compatible_kwargs())
    report = load_pretrained(model, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    report.skipped   # {"logits": "source has no classifier (include_top=False)"}

Layers are paired by their predictable names (`conv3_block1_2_conv` -> `stage2_block1_conv2`);
docs/serving.md ("Pretrained ImageNet weights") has the whole mapping. `load_weights_by_name`
copies a trained tfresnet model's weights into another of the same spec (e.g. its `backbone`).
Shipped weights are `tfresnet/weights/<model>-<name>.weights.h5` with a `<model>-<name>.json`
beside it (how to rebuild the model, class names, accuracy, the retraining command, sha256),
written by `python -m experiments.ship_weights`; docs/models.md lists them.
"""

import dataclasses
import functools
import hashlib
import os
import re

import h5py
import keras
import numpy as np

# keras.applications.resnet.preprocess_input ("caffe"): BGR order, minus these means, no scale.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
KERAS_APPLICATIONS_BN_EPSILON = 1.001e-5
_EPSILON_RTOL = 0.01  # 1e-5 vs 1.001e-5 changes outputs by ~1e-8; 1e-3 would not be a match
_HEAD = "logits"
_SOURCE_HEAD = "predictions"
_BLOCK = re.compile(r"^conv(\d+)_block(\d+)_(\d)_(conv|bn)$")
_STAGE_BLOCK = re.compile(r"^stage(\d+)_block(\d+)_")
# keras.applications' ResNets by their bottleneck blocks per stage (the models' own tables).
APPLICATIONS = {(3, 4, 6, 3): "ResNet50", (3, 4, 23, 3): "ResNet101", (3, 8, 36, 3): "ResNet152"}


def keras_applications_compatible_kwargs(raw_pixels: bool = True) -> dict:
    """`build_model` arguments that give keras.applications' ResNet layout.

    Args:
      raw_pixels: bool. True: the model takes raw RGB pixels 0..255 and standardises them
        itself (mean subtraction as in caffe preprocessing); `load_pretrained` then turns the
        stem's BGR filters into RGB, so the model needs no `preprocess_input` (what the serving
        export expects). False: the model takes exactly what keras.applications takes.
    """
    kwargs = {
        "stride_placement": "v1",
        "conv_bias": True,
        "bn_epsilon": KERAS_APPLICATIONS_BN_EPSILON,
        "shortcut": "B",
    }
    if raw_pixels:
        kwargs.update(pixel_mean=CAFFE_MEAN_RGB, pixel_std=1.0)
    return kwargs


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What `load_pretrained` did: target layers loaded, and skipped ones with the reason."""

    loaded: tuple
    skipped: dict
    rgb_stem: bool  # the stem filters were reordered BGR -> RGB for raw-pixel input


def load_pretrained(
    model: keras.Model,
    source: keras.Model | str | os.PathLike,
    *,
    skip_mismatched_head: bool = True,
) -> ImportReport:
    """Copy keras.applications ResNet weights from `source` into `model`.

    Args:
      model: a tfresnet ResNet-50/101/152 built with `keras_applications_compatible_kwargs()`,
        with or without its top (a headless model or `backbone` takes all but the classifier).
      source: a keras.applications ResNet50/101/152 model (any input size, with or without
        top), or the path to its legacy `.h5` weights file (what keras.applications downloads),
        read by `load_keras_application`.
      skip_mismatched_head: bool. True: a classifier the source lacks (include_top=False) or
        with another number of classes is left as initialised, for fine-tuning on a new data
        set. False: that raises.

    Returns:
      ImportReport. With raw_pixels (a "standardize" layer with the caffe means), the model
      then maps raw RGB x to what source maps to `preprocess_input(x)`; without, the model
      equals the source on the same input.

    Raises:
      ValueError naming the first layer whose layout differs, or saying why the file does not
      load. Nothing is changed then.
    """
    what = "a keras.applications ResNet model or a path to its .h5 weights"
    source = _source_model(source, lambda path: load_keras_application(path, model), what)
    weights = {layer.name: layer.get_weights() for layer in source.layers if layer.weights}
    by_target = {_target_name(name): (name, arrays) for name, arrays in weights.items()}
    rgb_stem = _takes_raw_rgb(model)
    assignments, skipped = [], {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name == _HEAD:
            reason = _head_mismatch(layer, by_target.pop(_HEAD, None))
            if reason is None:
                assignments.append((layer, weights[_SOURCE_HEAD]))
            elif skip_mismatched_head:
                skipped[layer.name] = reason
            else:
                raise ValueError(
                    f"Layer {_HEAD}: {reason}; pass skip_mismatched_head=True to keep it as "
                    f"initialised (fine-tuning)."
                )
            continue
        if layer.name not in by_target:
            raise ValueError(
                f"Layer {layer.name} of {model.name} has no counterpart in the source "
                f"(expected {_source_name(layer.name)}); the layouts differ. Build the model "
                f"with the source's depth and keras_applications_compatible_kwargs()."
            )
        source_name, arrays = by_target.pop(layer.name)
        _check_layer(layer, source_name, arrays)
        if rgb_stem and layer.name == "stem_conv":
            arrays = [arrays[0][:, :, ::-1, :], *arrays[1:]]
        assignments.append((layer, arrays))
    by_target.pop(_HEAD, None)  # a headless model (include_top=False) leaves it out
    if by_target:
        source_name = next(iter(by_target.values()))[0]
        raise ValueError(
            f"Source layer {source_name} has no counterpart in {model.name} (expected "
            f"{_target_name(source_name)}); the source is deeper than the model."
        )
    return _assign(assignments, skipped, rgb_stem)


def load_weights_by_name(
    model: keras.Model, source: keras.Model | str | os.PathLike
) -> ImportReport:
    """Copy weights into each layer of `model` from the layer of `source` with the same name
    (a classifier's into the headless model or `backbone` of the same spec, and back).

    Args:
      model: keras.Model to load into.
      source: keras.Model, or the path of a `.keras` file (loaded in safe mode, its sizes
        checked first: `untrusted.load_keras_model`).

    Returns:
      ImportReport: the layers loaded; skipped {name: reason} for layers of `model` with
      weights that `source` lacks (a new classifier).

    Raises:
      ValueError naming the first layer whose weight shapes differ; nothing is changed then.

    Example:
      >>> from tfresnet import build_model
      >>> trained = build_model("resnet8", input_shape=(8, 8, 3))
      >>> features = build_model("resnet8", input_shape=(8, 8, 3), include_top=False)
      >>> len(load_weights_by_name(features, trained).loaded)
      14
    """
    from tfresnet import untrusted

    load = functools.partial(untrusted.load_keras_model, compile=False, safe_mode=True)
    source = _source_model(source, load, "a keras.Model or a .keras file path")
    by_name = {layer.name: layer for layer in source.layers}
    assignments, skipped = [], {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in by_name:
            skipped[layer.name] = f"{source.name} has no layer {layer.name}"
            continue
        arrays = by_name[layer.name].get_weights()
        shapes, source_shapes = _shapes(layer, arrays)
        if shapes != source_shapes:
            raise ValueError(
                f"Layer {layer.name}: weight shapes {shapes} != {source.name}'s "
                f"{source_shapes}; build both models from the same spec and arguments."
            )
        assignments.append((layer, arrays))
    return _assign(assignments, skipped, rgb_stem=False)


def _source_model(source, load, what):
    """`source` as a keras.Model, `load`ed when it is a path; ValueError if it is neither."""
    if isinstance(source, (str, os.PathLike)):
        source = load(source)
    if not isinstance(source, keras.Model):
        raise ValueError(f"source must be {what}; got {type(source).__name__}.")
    return source


def _assign(assignments, skipped, rgb_stem):
    """Set every (layer, arrays) pair, once all were checked; the report of what was done."""
    for layer, arrays in assignments:
        layer.set_weights(arrays)
    return ImportReport(tuple(layer.name for layer, _ in assignments), skipped, rgb_stem)


def _shapes(layer, arrays):
    """(the shapes of `layer`'s weights, the shapes of `arrays`), as lists of tuples."""
    return [tuple(w.shape) for w in layer.weights], [tuple(a.shape) for a in arrays]


def load_keras_application(path: str | os.PathLike, like: keras.Model) -> keras.Model:
    """The keras.applications ResNet of `like`'s depth, with the weights of the `.h5` file `path`,
    read by Keras' own `load_weights` (which checks layer counts and shapes).

    Args:
      path: a legacy Keras `.h5` weights file of keras.applications' ResNet50/101/152 (what
        `weights="imagenet"` downloads, with or without top), or a whole model saved as `.h5`.
      like: keras.Model, the tfresnet ResNet-50/101/152 the weights are for.

    Raises:
      ValueError saying which file could not be read as what, and why.
    """
    path = os.fspath(path)
    if path.endswith(".weights.h5"):
        raise ValueError(
            f"{path} is a Keras 3 .weights.h5 file, which Keras loads by structure without "
            f"checking that every layer matched. Load it into keras.applications.ResNet50("
            f"weights=None, ...) with load_weights() and pass that model as the source."
        )
    if not os.path.isfile(path):
        raise ValueError(f"Weights file {path} does not exist.")
    blocks = _blocks_per_stage(like)
    if blocks not in APPLICATIONS:
        allowed = ", ".join(f"{name} {b}" for b, name in APPLICATIONS.items())
        raise ValueError(
            f"{like.name} has {blocks} blocks per stage; a .h5 file loads only into a "
            f"keras.applications ResNet ({allowed}). Build the model with the file's depth "
            f"and keras_applications_compatible_kwargs()."
        )
    name = APPLICATIONS[blocks]
    classes = _saved_classes(path)
    top = {"include_top": False} if classes is None else {"classes": classes}
    application = getattr(keras.applications, name)(weights=None, **top)
    try:
        application.load_weights(path)
    except ValueError as err:
        what = "no top" if classes is None else f"a {classes}-class top"
        raise ValueError(
            f"{path} does not hold keras.applications {name} weights (the depth of "
            f"{like.name}) with {what}: {err}"
        ) from err
    return application


def _saved_classes(path):
    """The classes of the file's classifier ("predictions"), or None when it has none."""
    try:
        with h5py.File(path, "r") as f:
            whole_model = "layer_names" not in f.attrs and "model_weights" in f  # as Keras reads
            group = f["model_weights"] if whole_model else f
            if _SOURCE_HEAD not in group:
                return None
            shapes = []
            group[_SOURCE_HEAD].visititems(
                lambda _, item: (
                    shapes.append(item.shape) if isinstance(item, h5py.Dataset) else None
                )
            )
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file: {err}") from err
    return min(shapes, key=len)[-1] if shapes else None  # the bias: (classes,)


def _blocks_per_stage(model):
    """(blocks of stage 1, of stage 2, ...) from tfresnet's layer names."""
    blocks = {}
    for layer in model.layers:
        match = _STAGE_BLOCK.match(layer.name)
        if match:
            stage, block = (int(g) for g in match.groups())
            blocks[stage] = max(blocks.get(stage, 0), block)
    return tuple(blocks[stage] for stage in sorted(blocks))


def _target_name(source_name):
    """keras.applications layer name -> tfresnet layer name; ValueError if not a v1 ResNet."""
    if source_name in ("conv1_conv", "conv1_bn"):
        return "stem_" + source_name.split("_")[1]
    if source_name == _SOURCE_HEAD:
        return _HEAD
    match = _BLOCK.match(source_name)
    if not match:
        raise ValueError(
            f"Source layer {source_name} is not part of a keras.applications ResNet50/101/152 "
            f"(v1) layout; only those can be imported."
        )
    stage, block, index, kind = match.groups()
    prefix = f"stage{int(stage) - 1}_block{block}"
    return f"{prefix}_shortcut_{kind}" if index == "0" else f"{prefix}_{kind}{index}"


def _source_name(target_name):
    """tfresnet layer name -> the keras.applications name it would be loaded from."""
    if target_name in ("stem_conv", "stem_bn"):
        return "conv1_" + target_name.split("_")[1]
    match = re.match(r"^stage(\d+)_block(\d+)_(shortcut_)?(conv|bn)(\d)?$", target_name)
    if not match:
        return "nothing (no such layer in keras.applications ResNets)"
    stage, block, shortcut, kind, index = match.groups()
    return f"conv{int(stage) + 1}_block{block}_{'0' if shortcut else index}_{kind}"


def _expected_strides(source_name):
    """keras.applications v1 strides: the stem, and the first 1x1 + shortcut of stages 3-5."""
    if source_name == "conv1_conv":
        return (2, 2)
    match = _BLOCK.match(source_name)
    if match and match.group(2) == "1" and match.group(3) in "01" and int(match.group(1)) > 2:
        return (2, 2)
    return (1, 1)


def _check_layer(layer, source_name, arrays):
    """Raise naming `layer` when its weights or settings differ from the source layer's."""
    where = f"Layer {layer.name} (from {source_name})"
    shapes, source_shapes = _shapes(layer, arrays)
    if shapes != source_shapes:
        hint = ""
        if isinstance(layer, keras.layers.Conv2D) and len(shapes) < len(source_shapes):
            hint = " (keras.applications convs have biases: build with conv_bias=True)"
        raise ValueError(f"{where}: weight shapes {shapes} != source {source_shapes}{hint}.")
    if isinstance(layer, keras.layers.Conv2D):
        strides = tuple(layer.strides)
        if strides != _expected_strides(source_name):
            raise ValueError(
                f"{where}: strides {strides}, keras.applications uses "
                f"{_expected_strides(source_name)} (build with stride_placement='v1')."
            )
    elif isinstance(layer, keras.layers.BatchNormalization):
        eps = KERAS_APPLICATIONS_BN_EPSILON
        if abs(layer.epsilon - eps) > _EPSILON_RTOL * eps:
            raise ValueError(
                f"{where}: BN epsilon {layer.epsilon:g}, keras.applications uses {eps:g} "
                f"(build with bn_epsilon={eps:g})."
            )


def _head_mismatch(layer, source):
    """Why the classifier cannot be copied, or None when it can."""
    if source is None:
        return "source has no classifier (include_top=False)"
    shapes, source_shapes = _shapes(layer, source[1])
    if shapes != source_shapes:
        return f"classifier weight shapes {shapes} != source {source_shapes}"
    return None


def _takes_raw_rgb(model):
    """True when the model standardises raw pixels with the caffe means (see kwargs helper)."""
    try:
        layer = model.get_layer("standardize")
    except ValueError:
        return False
    mean = keras.ops.convert_to_numpy(layer.mean).reshape(-1)
    variance = keras.ops.convert_to_numpy(layer.variance).reshape(-1)
    caffe = mean.size in (1, 3) and np.allclose(mean, CAFFE_MEAN_RGB, atol=1e-3)
    if not (caffe and np.allclose(variance, 1.0)):
        raise ValueError(
            f"{model.name} standardises inputs with mean {mean.tolist()} and variance "
            f"{np.unique(variance).tolist()}; keras.applications weights expect caffe "
            f"preprocessing: build with pixel_mean={CAFFE_MEAN_RGB}, pixel_std=1 "
            f"(keras_applications_compatible_kwargs()) or without pixel_mean/pixel_std."
        )
    return True


# --- shipped weights: build_model(name, weights="fashion_mnist") -------------------------------

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
WEIGHTS_SUFFIX = ".weights.h5"
# The build_model arguments that trained weights fix (the others only shape training), with
# build_model's defaults: a default is taken to mean "what the weights need".
ARCHITECTURE_DEFAULTS = {
    "num_classes": None,
    "input_shape": None,
    "shortcut": None,
    "preact": False,
    "stride_placement": "v1.5",
    "conv_bias": False,
    "bn_epsilon": None,  # build_model's default, filled in by `build_arguments`
    "pixel_mean": None,
    "pixel_std": None,
}
_HEADLESS_FREE = ("num_classes", "input_shape")  # include_top=False takes any input size


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
    own `tfresnet/weights/`): every `<model>-<name>.json` with its `.weights.h5` beside it."""
    folder = os.fspath(WEIGHTS_DIR if weights_dir is None else weights_dir)
    found = {}
    if not os.path.isdir(folder):
        return found
    for file in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(file)
        if ext != ".json" or "-" not in stem:
            continue
        weights_file = os.path.join(folder, stem + WEIGHTS_SUFFIX)
        if not os.path.isfile(weights_file):
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
    """The hex SHA-256 of the file at `path`, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_arguments(shipped: ShippedWeights, given: dict) -> dict:
    """`given` (build_model's arguments) with the architecture the weights need filled in where
    left at its default; ValueError in one line listing what the weights need when a given
    value differs (num_classes and input_shape may differ with include_top=False)."""
    from tfresnet import blocks

    defaults = {**ARCHITECTURE_DEFAULTS, "bn_epsilon": blocks.layers.BN_EPSILON}
    needed = shipped.arguments
    headless = given.get("include_top") is False
    args, conflicts = dict(given), []
    if given.get("input_tensor") is not None and given.get("input_shape") is None:
        given = {**given, "input_shape": tuple(given["input_tensor"].shape[1:])}
    for key, need in needed.items():
        value = given.get(key, defaults[key])
        if headless and key in _HEADLESS_FREE:
            if key == "input_shape" and value is not None and value[-1] != need[-1]:
                conflicts.append(f"input_shape={tuple(value)} (the weights take {need[-1]} "
                                 f"channel(s))")  # fmt: skip
            elif key == "input_shape" and value is not None and tuple(value) != need:
                if np.ndim(needed["pixel_mean"]) == 3:  # per-pixel means fit one size only
                    conflicts.append(f"input_shape={tuple(value)} (the weights standardise "
                                     f"each pixel of {need[0]}x{need[1]} images)")  # fmt: skip
            if key == "input_shape" and value is None:
                args[key] = need
            continue
        if _same(value, defaults[key]) or _same(value, need):
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


def load_shipped(model: keras.Model, shipped: ShippedWeights, headless: bool = False) -> None:
    """Load `shipped`'s weights into `model`, built with `build_arguments`, once the file's
    SHA-256 matches its description's. `headless`: copy by layer name from the whole model."""
    actual = sha256_of(shipped.path)
    if actual != shipped.description["sha256"]:
        raise ValueError(
            f"{shipped.path} has sha256 {actual}, but its description says "
            f"{shipped.description['sha256']}: the file is damaged or was replaced; reinstall "
            f"tfresnet (a maintainer: python -m experiments.ship_weights)."
        )
    if not headless:
        load_weights_file(model, shipped.path)
        return
    from tfresnet import models

    whole = models.build_model(shipped.model, **shipped.arguments)
    load_weights_file(whole, shipped.path)
    load_weights_by_name(model, whole)


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
    headless = arguments.get("include_top") is False
    model = models.build_model(model_name, **build_arguments(shipped, arguments))
    load_shipped(model, shipped, headless=headless)
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
