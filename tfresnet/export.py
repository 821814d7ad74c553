"""SavedModel export for TF Serving: `<base_dir>/<model_name>/<version>/`, plus `models.config`.

    path = export_for_serving(model, "exports", class_names=names)   # exports/resnet20/1
    tensorflow_model_server --model_config_file=exports/models.config --rest_api_port=8501

Two signatures, `serving_default` (uint8 images [N, H, W, C] of any H, W) and `serving_bytes`
(encoded images [N]), decode, cast and resize only: the model standardises raw pixels itself.
docs/serving.md describes the outputs and the files beside the SavedModel.
"""

import numbers
import os
import re
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfresnet import data as data_lib
from tfresnet import files, inference, runlock
from tfresnet import images as images_lib

RESIZE_MODES = ("stretch", "crop", "auto")
CROP_MIN_SIZE = 128  # "auto" crops when the model input is at least this large (ImageNet-like)
CONFIG_FILE = "models.config"
EXTRA_DIR = "assets.extra"  # TF Serving reads warm-up requests from here
WARMUP_FILE = "tf_serving_warmup_requests"
CLASS_NAMES_FILE = "class_names.txt"
MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a folder name TF Serving accepts


def export_for_serving(
    model: keras.Model,
    base_dir: str | os.PathLike,
    *,
    model_name: str | None = None,
    version: int | None = None,
    class_names: list[str] | None = None,
    top_k: int = 5,
    resize: str = "auto",
    warmup: bool = True,
    fold_batch_norm: bool = True,
    max_pixels: int = images_lib.MAX_PIXELS,
) -> str:
    """Export `model` for TF Serving into `<base_dir>/<model_name>/<version>/` and list it.

    Written to a temporary folder and renamed into place: TF Serving never sees half a version,
    and a failed export leaves nothing behind.

    Args:
      model: keras.Model with one image input [None, H, W, C] (C = 1 or 3) taking raw pixel
        values 0..255, and one probability output [None, num_classes].
      base_dir: str or path; holds one folder per model and the TF Serving `models.config`.
      model_name: str, the served name; default `model.name`.
      version: int >= 0; default the next free version (1 for a new model). An existing
        version is refused: TF Serving may already be serving it.
      class_names: optional sequence of num_classes strings; adds the `top_k_names` output.
      top_k: int >= 1, how many best classes the signatures return (at most num_classes).
      resize: "stretch" (plain resize to H x W; small CIFAR-like inputs), "crop" (shorter side
        to size*256/224, then the central H x W crop; ImageNet-like) or "auto" (crop when
        H and W are at least 128).
      warmup: bool, write `assets.extra/tf_serving_warmup_requests` (one small request).
      fold_batch_norm: bool, serve `inference.fold_batch_norm(model)` (same outputs, faster).
      max_pixels: int, `serving_bytes` refuses images with more pixels, read from the headers
        before decoding (`images.decode_image`).

    Returns:
      str, the version directory that was written.

    Example:
      >>> path = export_for_serving(build_model("resnet20"), "/tmp/exports")
    """
    height, width, channels = _image_input_shape(model)
    num_classes = _num_classes(model)
    model_name = model.name if model_name is None else model_name
    _check_model_name(model_name)
    class_names = _check_class_names(class_names, num_classes)
    top_k = min(check_int("top_k", top_k, 1), num_classes)
    mode = resize_mode(resize, (height, width))

    files.check_output_dir(os.fspath(base_dir), "export_dir")
    model_dir = os.path.join(files.absolute(os.fspath(base_dir)), model_name)
    version = _check_version(model_dir, version)
    final_dir = os.path.join(model_dir, str(version))
    _read_models_config(os.path.join(os.path.dirname(model_dir), CONFIG_FILE))  # before writing
    created_model_dir = not tf.io.gfile.isdir(model_dir)
    tf.io.gfile.makedirs(model_dir)
    temp_dir = files.temp_name(final_dir)  # TF Serving ignores non-integer folder names
    tf.io.gfile.mkdir(temp_dir)  # not mkdtemp: 0700, and TF Serving may run as another user
    try:
        served = inference.fold_batch_norm(model) if fold_batch_norm else model
        archive = _build_archive(served, mode, top_k, class_names, max_pixels)
        archive.write_out(temp_dir, verbose=False)
        _write_assets_extra(temp_dir, model_name, (height, width, channels), class_names, warmup)
        update_models_config(
            os.path.dirname(model_dir),
            model_name,
            model_dir,
            publish=lambda: _rename_into_place(temp_dir, final_dir),
        )
    except BaseException:
        files.remove(temp_dir)
        if created_model_dir and not tf.io.gfile.listdir(model_dir):
            files.remove(model_dir)
        raise
    return final_dir


def resize_mode(resize: str, size: tuple[int, int]) -> str:
    """The resize actually used for a model input `size` (height, width): "stretch" or "crop"."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"Unknown resize {resize!r}; allowed: {', '.join(RESIZE_MODES)}.")
    if resize == "auto":
        return "crop" if min(size) >= CROP_MIN_SIZE else "stretch"
    return resize


def model_versions(model_dir: str) -> list[int]:
    """Integer version folders of a model directory, ascending (what TF Serving would load)."""
    if not tf.io.gfile.isdir(model_dir):
        return []
    names = [n for n in files.listdir(model_dir) if n.isdigit()]
    return sorted(int(n) for n in names if tf.io.gfile.isdir(os.path.join(model_dir, n)))


def update_models_config(
    base_dir: str, model_name: str, model_dir: str, publish: Any = None
) -> str:
    """Add or update `model_name` in `<base_dir>/models.config` (TF Serving's text proto),
    keeping the other models; replaced atomically, under a lock. `publish()` runs once the file
    has been read, so an export refused for an unreadable file leaves no version behind."""
    from google.protobuf import text_format

    base_dir = os.fspath(base_dir)
    path = os.path.join(base_dir, CONFIG_FILE)
    with runlock.serialized(base_dir):  # concurrent exports take turns
        config = _read_models_config(path)
        entries = config.model_config_list.config
        entry = next((e for e in entries if e.name == model_name), None) or entries.add()
        entry.name = model_name
        entry.base_path = files.absolute(model_dir)
        entry.model_platform = "tensorflow"
        if publish is not None:
            publish()
        files.write_text(path, text_format.MessageToString(config))
    return path


def _read_models_config(path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    if files.exists(path):
        try:
            text_format.Parse(files.read_text(path), config)
        except (text_format.ParseError, UnicodeDecodeError) as e:
            raise files.CorruptFile(
                f"{path} is not a TF Serving ModelServerConfig text proto ({e}); fix or "
                f"remove it, tfresnet will not overwrite it."
            ) from e
        if config.WhichOneof("config") == "custom_model_config":
            raise ValueError(f"{path} uses custom_model_config; only model_config_list is allowed.")
    return config


# --- checks at the boundary ---------------------------------------------------------------


def _one_shape(model, kind, rank, need):
    """The shape of `model`'s one input or output ("inputs", "outputs") of `rank` and known
    sizes, or a ValueError saying it `need`s one."""
    tensors = getattr(model, kind)
    shape = tuple(tensors[0].shape) if len(tensors) == 1 else None
    if shape is None or len(shape) != rank or any(d is None for d in shape[1:]):
        got = [tuple(x.shape) for x in tensors]
        raise ValueError(f"export_for_serving needs {need}; {model.name} has {kind} {got}.")
    return shape


def _image_input_shape(model):
    need = "a model with one image input (None, height, width, channels) of known size"
    shape = _one_shape(model, "inputs", 4, need)
    if shape[3] not in images_lib.IMAGE_CHANNELS:
        raise ValueError(
            f"Model input has {shape[3]} channels; exports decode images to one of "
            f"{images_lib.IMAGE_CHANNELS} channels (grey or RGB)."
        )
    return int(shape[1]), int(shape[2]), int(shape[3])


def _num_classes(model):
    return int(_one_shape(model, "outputs", 2, "one probability output (None, num_classes)")[1])


def _check_model_name(name):
    if not isinstance(name, str) or not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise ValueError(
            f"model_name must be letters, digits, '_', '.' or '-' (a folder name TF Serving "
            f"accepts), starting with a letter or digit; got {name!r}."
        )


def _check_class_names(class_names, num_classes):
    if class_names is None:
        return None
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(
            f"class_names has {len(names)} entries; the model predicts {num_classes} classes."
        )
    for name in names:
        data_lib.check_class_name(name, "class_names")
    return names


def check_int(name: str, value: Any, minimum: int) -> int:
    """`value` as an int; ValueError unless it is an integer >= `minimum` (numpy's too, no bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _check_version(model_dir, version):
    existing = model_versions(model_dir)
    next_free = existing[-1] + 1 if existing else 1
    if version is None:
        return next_free
    version = check_int("version", version, 0)
    if tf.io.gfile.exists(os.path.join(model_dir, str(version))):
        raise ValueError(
            f"Version {version} of {os.path.basename(model_dir)} already exists in {model_dir}; "
            f"versions are immutable once served. Use version={next_free} (the next free one) "
            f"or leave version unset."
        )
    return version


# --- the serving graph --------------------------------------------------------------------


def _build_archive(model, mode, top_k, class_names, max_pixels):
    """An ExportArchive with both signatures; serving_default first (TF Serving's default)."""
    height, width, channels = _image_input_shape(model)
    size = (height, width)
    input_dtype = model.inputs[0].dtype
    names = None if class_names is None else tf.constant(class_names)

    def outputs(pixels):
        probabilities = tf.cast(model(tf.cast(pixels, input_dtype), training=False), tf.float32)
        scores, classes = tf.math.top_k(probabilities, k=top_k)
        result = {
            "probabilities": probabilities,
            "top_k_classes": classes,
            "top_k_scores": scores,
        }
        if names is not None:
            result["top_k_names"] = tf.gather(names, classes)
        return result

    def serve_images(images):
        images = _checked_batch(images, "images", channels)
        return outputs(fit_to_size(tf.cast(images, tf.float32), size, mode))

    def serve_bytes(image_bytes):
        image_bytes = _checked_batch(image_bytes, "image_bytes")
        pixels = tf.map_fn(
            lambda data: decode_and_fit(data, size, channels, mode, max_pixels),
            image_bytes,
            fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32),
        )
        return outputs(pixels)

    archive = keras.export.ExportArchive()
    archive.track(model)
    # Unknown-rank specs: a wrong rank or channel count then reaches our assertions (with a
    # message) instead of failing inside resize or a conv. Names are explicit (keras#19458).
    archive.add_endpoint(
        "serving_default",
        serve_images,
        input_signature=[tf.TensorSpec(None, tf.uint8, name="images")],
    )
    archive.add_endpoint(
        "serving_bytes",
        serve_bytes,
        input_signature=[tf.TensorSpec(None, tf.string, name="image_bytes")],
    )
    return archive


def _checked_batch(tensor, name, channels=None):
    """`tensor` gated on assertions that it is a batch of >= 1 item: [N] encoded images, or with
    `channels` [N, H, W, channels]; the clear error a client sees. Reshape-to-own-shape (not
    Identity/EnsureShape) keeps grappler from folding the rank assertion away."""
    rank = 1 if channels is None else 4
    layout = "[N] of encoded JPEG/PNG strings" if rank == 1 else f"[N, height, width, {channels}]"
    rank_check = tf.debugging.assert_equal(
        tf.rank(tensor), rank, message=f"{name} must be a batch {layout} (rank {rank})"
    )
    with tf.control_dependencies([rank_check]):
        shape = tf.shape(tensor)
        checks = [rank_check]
        if channels is not None:
            message = f"{name} must have {channels} channel(s) (the model's) in the last axis"
            checks.append(tf.debugging.assert_equal(shape[3], channels, message=message))
        checks.append(
            tf.debugging.assert_positive(shape[0], message=f"{name} must hold >= 1 image")
        )
    with tf.control_dependencies(checks):
        out = tf.reshape(tensor, tf.shape(tensor))
    out.set_shape([None] if channels is None else [None, None, None, channels])
    return out


def decode_and_fit(
    data: tf.Tensor,
    size: tuple[int, int],
    channels: int,
    mode: str,
    max_pixels: int = images_lib.MAX_PIXELS,
) -> tf.Tensor:
    """One encoded image (JPEG, PNG, GIF, BMP, WebP) -> float32 [height, width, channels]."""
    image = images_lib.decode_image(data, channels, max_pixels)
    return fit_to_size(tf.cast(image[tf.newaxis], tf.float32), size, mode)[0]


def fit_to_size(images: tf.Tensor, size: tuple[int, int], mode: str) -> tf.Tensor:
    """A float batch [N, h, w, C] resized to `size`: "stretch" straight to it, "crop" the
    ImageNet evaluation view (`images.center_crop`); `mode` is checked by `resize_mode`."""
    if mode == "crop":
        out = images_lib.center_crop(images, size)
    elif mode == "stretch":
        out = tf.image.resize(images, size, antialias=True)
    else:
        raise ValueError(f"resize mode must be 'stretch' or 'crop'; got {mode!r}.")
    out.set_shape([None, *size, images.shape[-1]])
    return out


# --- files beside the SavedModel ----------------------------------------------------------


def _write_assets_extra(export_dir, model_name, input_shape, class_names, warmup):
    extra = os.path.join(export_dir, EXTRA_DIR)
    tf.io.gfile.makedirs(extra)
    if class_names is not None:
        files.write_text(
            os.path.join(extra, CLASS_NAMES_FILE), "".join(f"{n}\n" for n in class_names)
        )
    if warmup:
        write_warmup_requests(os.path.join(extra, WARMUP_FILE), model_name, input_shape)


def write_warmup_requests(path: str, model_name: str, input_shape: tuple[int, int, int]) -> None:
    """One PredictionLog (a black image to serving_default) as a TFRecord: TF Serving replays
    it at load, so the first real request does not pay for graph initialisation."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
    )
    image = np.zeros((1, *input_shape), np.uint8)
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(log.SerializeToString())


def _rename_into_place(temp_dir, final_dir):
    """Move the finished export to its version folder, never over one that appeared meanwhile.
    Object stores cannot rename a folder: the files are copied, saved_model.pb last."""
    if tf.io.gfile.exists(final_dir):
        raise ValueError(
            f"Version folder {final_dir} appeared while exporting (another export?); "
            "nothing was overwritten."
        )
    if not files.is_remote(final_dir):
        os.rename(temp_dir, final_dir)
        return
    copies = []
    for folder, _, names in tf.io.gfile.walk(temp_dir):
        target = final_dir + folder[len(temp_dir) :]
        tf.io.gfile.makedirs(target)
        copies += [(os.path.join(folder, n), os.path.join(target, n)) for n in names]
    # ram:// lists "assets.extra/x" also as "assets/.extra": keep only real files.
    copies = [(a, b) for a, b in copies if tf.io.gfile.exists(a) and not tf.io.gfile.isdir(a)]
    copies.sort(key=lambda pair: os.path.basename(pair[0]) == "saved_model.pb")
    for source, target in copies:
        tf.io.gfile.copy(source, target, overwrite=False)
    files.remove(temp_dir)
