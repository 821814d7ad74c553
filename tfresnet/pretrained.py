"""ImageNet weights imported from Keras Applications' ResNet50/101/152, and weights copied by
layer name between tfresnet models (a classifier's into its `backbone`). Weights shipped inside
the package are `shipped`'s (`build_model("resnet20", weights="fashion_mnist")`).

    model = build_model("resnet50", num_classes=102, **keras_applications_compatible_kwargs())
    report = load_pretrained(model, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    report.skipped   # {"logits": "source has no classifier (include_top=False)"}

Layers are paired by their predictable names (`conv3_block1_2_conv` -> `stage2_block1_conv2`);
docs/serving.md ("Pretrained ImageNet weights") has the whole mapping.
"""

import collections
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
# keras.applications' ResNets by their bottleneck blocks per stage (the models' own tables).
APPLICATIONS = {(3, 4, 6, 3): "ResNet50", (3, 4, 23, 3): "ResNet101", (3, 8, 36, 3): "ResNet152"}
# keras.applications layer name -> tfresnet's, for the layers outside the blocks.
_RENAMED = {"conv1_conv": "stem_conv", "conv1_bn": "stem_bn", "predictions": "logits"}
_SOURCE_BLOCK = re.compile(r"^conv(\d+)_block(\d+)_(\d)_(conv|bn)$")
_TARGET_BLOCK = re.compile(r"^stage(\d+)_block(\d+)_(shortcut_)?(conv|bn)(\d)?$")


def keras_applications_compatible_kwargs(raw_pixels: bool = True) -> dict:
    """`build_model` arguments that give keras.applications' ResNet layout.

    Args:
      raw_pixels: bool. True: the model takes raw RGB pixels 0..255 and subtracts the caffe
        means itself; `load_pretrained` then turns the stem's BGR filters into RGB, so the model
        needs no `preprocess_input` (what the serving export expects). False: the model takes
        exactly what keras.applications takes.
    """
    kwargs = dict(stride_placement="v1", conv_bias=True, bn_epsilon=KERAS_APPLICATIONS_BN_EPSILON,
                  shortcut="B")  # fmt: skip
    if raw_pixels:
        kwargs.update(pixel_mean=CAFFE_MEAN_RGB, pixel_std=1.0)
    return kwargs


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What was loaded: target layers loaded, and skipped ones with the reason."""

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
        top), or the path of its legacy `.h5` weights (what keras.applications downloads).
      skip_mismatched_head: bool. True: a classifier the source lacks or with other classes is
        left as initialised (fine-tuning); False: that raises.

    Returns:
      ImportReport. With raw_pixels, the model maps raw RGB x to what source maps to
      `preprocess_input(x)`; without, the model equals the source on the same input.

    Raises:
      ValueError naming the first layer whose layout differs, or why the file does not load.
      Nothing is changed then.
    """
    what = "a keras.applications ResNet model or a path to its .h5 weights"
    source = _source_model(source, lambda path: load_keras_application(path, model), what)
    by_target = {_target_name(layer.name): layer for layer in source.layers if layer.weights}
    rgb_stem = _takes_raw_rgb(model)
    assignments, skipped = [], {}
    for layer in (layer for layer in model.layers if layer.weights):
        theirs = by_target.pop(layer.name, None)
        if layer.name == "logits":
            reason = _head_mismatch(layer, theirs)
            if reason is None:
                assignments.append((layer, theirs.get_weights()))
            elif not skip_mismatched_head:
                raise ValueError(f"Layer logits: {reason}; pass skip_mismatched_head=True to "
                                 f"keep it as initialised (fine-tuning).")  # fmt: skip
            else:
                skipped[layer.name] = reason
            continue
        if theirs is None:
            raise ValueError(
                f"Layer {layer.name} of {model.name} has no counterpart in the source "
                f"(expected {_source_name(layer.name)}); the layouts differ. Build the model "
                f"with the source's depth and keras_applications_compatible_kwargs()."
            )
        arrays = _checked_weights(layer, theirs)
        if rgb_stem and layer.name == "stem_conv":
            arrays = [arrays[0][:, :, ::-1, :], *arrays[1:]]
        assignments.append((layer, arrays))
    by_target.pop("logits", None)  # a headless model (include_top=False) leaves it out
    if by_target:
        name = next(iter(by_target.values())).name
        raise ValueError(
            f"Source layer {name} has no counterpart in {model.name} (expected "
            f"{_target_name(name)}); the source is deeper than the model."
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
    for layer in (layer for layer in model.layers if layer.weights):
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
    """The keras.applications ResNet of `like`'s depth with the weights of the legacy `.h5` file
    `path` (weights, with or without top, or a whole model), read by Keras' own `load_weights`,
    which checks layer counts and shapes; ValueError saying why the file does not load."""
    path = os.fspath(path)
    if path.endswith(".weights.h5"):
        raise ValueError(
            f"{path} is a Keras 3 .weights.h5 file, which Keras loads by structure without "
            f"checking that every layer matched. Load it into keras.applications.ResNet50("
            f"weights=None, ...) with load_weights() and pass that model as the source."
        )
    if not os.path.isfile(path):
        raise ValueError(f"Weights file {path} does not exist.")
    stages = collections.Counter(
        match.group(1)
        for layer in like.layers
        if (match := re.fullmatch(r"stage(\d+)_block\d+_conv1", layer.name))
    )
    blocks = tuple(stages[stage] for stage in sorted(stages, key=int))
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
    shapes = []
    try:
        with h5py.File(path, "r") as f:
            whole_model = "layer_names" not in f.attrs and "model_weights" in f  # as Keras reads
            head = (f["model_weights"] if whole_model else f).get("predictions")
            if head is not None:
                head.visititems(lambda _, item: shapes.append(getattr(item, "shape", ())))
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file: {err}") from err
    biases = [shape for shape in shapes if len(shape) == 1]  # the bias: (classes,)
    return biases[0][0] if biases else None


def _target_name(source_name):
    """keras.applications layer name -> tfresnet layer name; ValueError if not a v1 ResNet's."""
    if source_name in _RENAMED:
        return _RENAMED[source_name]
    match = _SOURCE_BLOCK.match(source_name)
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
    renamed = {target: source for source, target in _RENAMED.items()}
    match = _TARGET_BLOCK.match(target_name)
    if target_name in renamed or not match:
        return renamed.get(target_name, "nothing (no such layer in keras.applications ResNets)")
    stage, block, shortcut, kind, index = match.groups()
    return f"conv{int(stage) + 1}_block{block}_{'0' if shortcut else index}_{kind}"


def _checked_weights(layer, source):
    """`source`'s weights for `layer`; ValueError naming `layer` when the shapes, a conv's strides
    or a BN's epsilon differ from the source layer's."""
    where = f"Layer {layer.name} (from {source.name})"
    arrays = source.get_weights()
    shapes, source_shapes = _shapes(layer, arrays)
    if shapes != source_shapes:
        hint = ""
        if isinstance(layer, keras.layers.Conv2D) and len(shapes) < len(source_shapes):
            hint = " (keras.applications convs have biases: build with conv_bias=True)"
        raise ValueError(f"{where}: weight shapes {shapes} != source {source_shapes}{hint}.")
    if isinstance(layer, keras.layers.Conv2D) and layer.strides != source.strides:
        raise ValueError(
            f"{where}: strides {layer.strides}, keras.applications uses {source.strides} "
            f"(build with stride_placement='v1')."
        )
    if isinstance(layer, keras.layers.BatchNormalization):
        eps = source.epsilon
        if abs(layer.epsilon - eps) > _EPSILON_RTOL * eps:
            raise ValueError(
                f"{where}: BN epsilon {layer.epsilon:g}, keras.applications uses {eps:g} "
                f"(build with bn_epsilon={eps:g})."
            )
    return arrays


def _head_mismatch(layer, source):
    """Why the classifier cannot be copied from the `source` layer, or None when it can."""
    if source is None:
        return "source has no classifier (include_top=False)"
    shapes, source_shapes = _shapes(layer, source.get_weights())
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
