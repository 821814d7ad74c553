"""Import ImageNet weights from Keras Applications ResNet50/101/152 into a tfresnet model.

    model = build_model("resnet50", num_classes=102, **keras_applications_compatible_kwargs())
    report = load_pretrained(model, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    report.skipped   # {"logits": "source has no classifier (include_top=False)"}

Layers are paired by their predictable names (`conv3_block1_2_conv` -> `stage2_block1_conv2`);
docs/serving.md ("Pretrained ImageNet weights") has the whole mapping. `load_weights_by_name`
copies a trained tfresnet model's weights into another of the same spec (e.g. its `backbone`).
"""

import dataclasses
import functools
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
