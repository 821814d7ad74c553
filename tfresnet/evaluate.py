"""Test error of a saved model: top-1 and top-5, single view, averaged with the mirror image
(`flip`, as the `fast` recipe's final test) or the paper's 10-crop protocol.

The model runs in its inference form, BN folded into the convs (as exports serve it). Given a
run directory (or a model inside one), the data set and input settings come from the run's
`config.json` unless they are passed.
"""

import os

import keras
import tensorflow as tf
from keras import ops

from tfresnet import data as data_lib
from tfresnet import export, files, inference, pipeline, rundir, untrusted


def run_config_of(model_path: str) -> dict:
    """The `config.json` of the run a model belongs to ({} when there is none); a damaged one
    is refused (`files.CorruptFile`) rather than evaluated on a data set it may not name."""
    folder = model_path if tf.io.gfile.isdir(model_path) else os.path.dirname(model_path)
    for candidate in (folder, os.path.dirname(folder)):  # run dir, or run dir/checkpoints
        path = os.path.join(candidate, "config.json")
        if candidate and files.exists(path):
            return rundir.read_config(
                path,
                "it names the data set of the run this model belongs to; restore it from a copy.",
            )
    return {}


@keras.saving.register_keras_serializable(package="tfresnet")
class HorizontalFlip(keras.layers.Layer):
    """Every image of a channels-last batch mirrored left to right, always (Keras' RandomFlip
    flips at random, and only in training)."""

    def call(self, inputs):
        return ops.flip(inputs, axis=-2)

    def compute_output_shape(self, input_shape):
        return input_shape


def flip_averaged(model, name: str | None = None) -> keras.Model:
    """A model whose output is the mean of `model`'s outputs (probabilities) for each image and
    for its mirror image: test-time flip averaging, as airbench evaluates. Worth it only where
    a mirrored image keeps its label and training flips them (clothes, objects; not digits).
    The two views and their mean are computed in float32 whatever the dtype policy.

    Example:
      >>> probs = flip_averaged(build_model("resnet20"))(images)
    """
    inputs = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype)
    mirrored = HorizontalFlip(dtype="float32", name="mirror")(inputs)
    views = [model(inputs), model(mirrored)]
    mean = keras.layers.Average(dtype="float32", name="flip_average")(views)
    return keras.Model(inputs, mean, name=name or model.name)


def resolve_model_path(model_path: str) -> str:
    return os.path.join(model_path, "model.keras") if tf.io.gfile.isdir(model_path) else model_path


def evaluate(
    model_path: str,
    dataset: str | None = None,
    *,
    data_dir: str | None = None,
    batch_size: int = 128,
    image_size: int | None = None,
    ten_crop: bool = False,
    flip: bool = False,
) -> dict:
    """{"top1_error", "top5_error", "examples", "dataset"} of a `.keras` model or a run directory.

    `dataset`, `data_dir` and `image_size` default to the run's own (its config.json), else to
    the embedded digits. `flip` averages each image's prediction with its mirror's
    (`flip_averaged`); `ten_crop` already includes the mirrors.
    """
    if flip and ten_crop:
        raise ValueError("Give at most one of flip and ten_crop (the 10 crops include mirrors).")
    export.check_int("batch_size", batch_size, 1)
    if image_size is not None:
        export.check_int("image_size", image_size, 1)
    path = resolve_model_path(model_path)
    run = run_config_of(model_path)
    dataset = dataset or run.get("dataset") or data_lib.EMBEDDED
    data_dir = data_dir or run.get("data_dir")
    image_size = image_size or run.get("image_size")
    model = inference.fold_batch_norm(untrusted.load_keras_model(path))
    want = tuple(model.input_shape[1:])
    try:
        data = data_lib.load_data(dataset, data_dir=data_dir, image_size=image_size)
    except data_lib.ImageSizeError as err:
        advice = "leave --image_size out" if want == err.stored_shape else _TRAINED_ON
        raise data_lib.DataError(
            f"{err.reason}; the model takes {data_lib.describe_shape(want)} images: {advice}."
        ) from err
    info = data.info
    _check_model_fits(model, info)
    if flip:
        model = flip_averaged(model)
    if ten_crop:  # the paper's protocol: the softmax averaged over 4 corners, centre, mirrors
        crops = keras.Input((10, *model.input_shape[1:]))
        views = keras.layers.TimeDistributed(model)(crops)
        model = keras.Model(crops, keras.layers.GlobalAveragePooling1D()(views))
        size = info.image_shape[:2]
        test_ds = data.test.map(lambda x, y: (pipeline.ten_crops(x, size), y)).batch(batch_size)
    else:
        test_ds = pipeline.make_pipeline(data.test, info, batch_size=batch_size, training=False)
    metrics = ["accuracy"]
    if model.output_shape[-1] > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
    model.compile(loss="sparse_categorical_crossentropy", metrics=metrics)
    out = model.evaluate(test_ds, verbose=0, return_dict=True)
    return {
        "top1_error": 1.0 - float(out["accuracy"]),
        "top5_error": 1.0 - float(out["top5_accuracy"]) if "top5_accuracy" in out else None,
        "examples": info.sizes["test"],
        "dataset": info.name,
    }


_TRAINED_ON = "evaluate it on the data set it was trained on"


def _check_model_fits(model, info: data_lib.DataInfo) -> None:
    """Refuses, before anything is evaluated, data the model cannot take: images of another
    shape, or another number of classes (labels past the model's outputs would fail inside
    TensorFlow's loss with an unreadable error). The advice fits the data set: --image_size
    only where it resizes (folders, tensorflow-datasets sets), never for a channel count."""
    want, got = tuple(model.input_shape[1:]), tuple(info.image_shape)
    fits = len(want) == len(got) and all(w in (None, g) for w, g in zip(want, got, strict=True))
    if not fits:
        if want[-1:] != got[-1:]:
            advice = f"; the channels differ and no flag changes them: {_TRAINED_ON}"
        elif not info.resizable:
            advice = f", used as stored (--image_size does not resize them): {_TRAINED_ON}"
        elif want[0] is not None and want[0] == want[1]:
            advice = f"; pass --image_size={want[0]}, or {_TRAINED_ON}"
        else:
            advice = f"; {_TRAINED_ON}"
        raise data_lib.DataError(
            f"The model takes {data_lib.describe_shape(want)} images but {info.name}'s are "
            f"{data_lib.describe_shape(got)}{advice}."
        )
    outputs = model.output_shape[-1]
    if outputs != info.num_classes:
        raise data_lib.DataError(
            f"The model has {outputs} outputs (classes) but {info.name} has "
            f"{info.num_classes} classes; evaluate it on data of its {outputs} classes (the "
            "data set it was trained on)."
        )


__all__ = ["evaluate", "flip_averaged"]
