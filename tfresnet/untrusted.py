"""The bounded reader for untrusted `.keras` archives and JSON (images: `tfresnet.images`).

A small file can ask for a huge allocation (a zip bomb, JSON nested 200,000 deep), so the sizes
a file declares are checked before anything of that size is allocated. TensorFlow is not
imported (only for gs:// paths), so these checks work on every backend.
"""

import io
import math
import os
import re
import sys
import zipfile
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

MAX_JSON_DEPTH = 100  # a Keras model config nests 11 levels (ResNet-1202's included)
MAX_CONFIG_BYTES = 32 << 20  # a .keras config.json; ResNet-1202's (4209 layers) is 4 MB
MAX_ARCHIVE_MEMBERS = 1000  # Keras writes config.json, metadata.json, model.weights.h5 (+assets)
# Keras stores members uncompressed: above the floor, declared sizes <= MAX_EXPANSION x stored.
ARCHIVE_FLOOR_BYTES = 64 << 20
MAX_EXPANSION = 10
FRAMES_PER_LAYER = 5  # Python frames Keras needs per layer to rebuild a graph (ResNet-1202: ~1)


_CONFIG, _WEIGHTS = "config.json", "model.weights.h5"


class FileRefused(ValueError):
    """A file refused from its declared sizes, before they were allocated."""


# --- JSON ---------------------------------------------------------------------------------

# A JSON string, possessive (linear even on an unterminated string full of escaped quotes).
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(text: bytes | str, stop_above: int = MAX_JSON_DEPTH) -> int:
    """How deep `text`'s arrays and objects nest, counted without parsing (strings skipped).

    Stops counting once past `stop_above`; linear in the text and a megabyte of memory.
    """
    data = text.encode() if isinstance(text, str) else bytes(text)
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    level = peak = 0
    for start in range(0, len(brackets), 1 << 20):
        chunk = np.frombuffer(brackets[start : start + (1 << 20)], np.uint8)
        steps = np.where((chunk & 0x0F) == 0x0B, 1, -1).astype(np.int32)  # [ { vs ] }
        levels = level + np.cumsum(steps, dtype=np.int64)
        peak, level = max(peak, int(levels.max())), int(levels[-1])
        if peak > stop_above:
            break
    return peak


def parse_json(text: bytes | str, what: str = "JSON", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads(text)` once its nesting is checked: Python's parser recurses per level, and
    under a raised recursion limit a deep file overflows the C stack instead of raising."""
    import json

    depth = json_depth(text, max_depth)
    if depth > max_depth:
        raise FileRefused(
            f"{what} nests deeper than {max_depth} levels (a Keras model config nests 11); "
            "refused before parsing."
        )
    return json.loads(text)


# --- .keras archives ----------------------------------------------------------------------


def read_keras_config(path: str) -> dict:
    """The parsed config.json of the `.keras` archive at `path`, its bounds checked first.

    `FileRefused` for too many members, a zip or HDF5 bomb, or a config too large or too deep
    (zipfile never returns more than a member's declared size, so this bounds Keras' read too).
    Other damage raises what zipfile or json raise.
    """
    with _open_binary(path) as raw, zipfile.ZipFile(raw) as archive:
        raw.seek(0, io.SEEK_END)
        stored = raw.tell()
        members = archive.infolist()
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise FileRefused(
                f"{path!r} holds {len(members)} files; a .keras archive holds a few (config, "
                f"metadata, weights, assets), at most {MAX_ARCHIVE_MEMBERS}."
            )
        declared = sum(m.file_size for m in members)
        _check_expansion(path, declared, stored, "its members")
        config = archive.getinfo(_CONFIG)
        if config.file_size > MAX_CONFIG_BYTES:
            raise FileRefused(
                f"config.json in {path!r} is {config.file_size:,} bytes; at most "
                f"{MAX_CONFIG_BYTES:,} (ResNet-1202's is 4 MB)."
            )
        parsed = parse_json(archive.read(config), f"config.json in {path!r}")
        if _WEIGHTS in archive.namelist():
            with archive.open(_WEIGHTS) as weights:
                _check_weights(path, weights.read())
    if not isinstance(parsed, dict):
        raise FileRefused(f"config.json in {path!r} is not a JSON object: not a Keras model.")
    return parsed


def load_keras_model(path: str, **kwargs) -> "keras.Model":
    """`keras.saving.load_model(path, **kwargs)` once `read_keras_config` accepts the file,
    under a recursion limit raised by FRAMES_PER_LAYER per layer (Keras rebuilds recursively).
    A missing, truncated, corrupt or refused file is one `FileRefused` that says so."""
    import keras

    from tfresnet.models import recursion_headroom

    if not _exists(path):
        raise FileRefused(f"No model at {path!r}: give a .keras file or a run directory.")
    if not str(path).endswith(".keras"):
        raise FileRefused(f"{path!r} is not a .keras file.")
    try:
        config = read_keras_config(path)
        with recursion_headroom(sys.getrecursionlimit() + FRAMES_PER_LAYER * count_layers(config)):
            return keras.saving.load_model(path, **kwargs)
    except (FileRefused, MemoryError, PermissionError):
        raise  # not the file's fault: the CLI's own exit status for each (1)
    except Exception as err:  # zipfile.BadZipFile, OSError, ValueError...: all "unreadable"
        if type(err).__module__.startswith("tensorflow"):
            raise  # tf.errors.OpError from storage (gs://): 138 when it is worth a retry
        detail = str(err).splitlines()[0] if str(err) else "no detail"
        raise FileRefused(
            f"{path!r} is not a readable .keras file ({type(err).__name__}: {detail}); it may be "
            "truncated or corrupt. Use another checkpoint, e.g. checkpoints/last.keras of its run."
        ) from err


def count_layers(config: Any) -> int:
    """Layers in a Keras config, nested models' included (no recursion: any depth is safe)."""
    count, stack = 0, [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            layers = item.get("layers")
            if isinstance(layers, list):
                count += len(layers)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _open_binary(path):
    if "://" in str(path):  # gs://, ram://: TensorFlow's file systems
        import tensorflow as tf

        return tf.io.gfile.GFile(str(path), "rb")
    return open(path, "rb")


def _exists(path):
    if "://" in str(path):
        import tensorflow as tf

        return tf.io.gfile.exists(str(path))
    return os.path.exists(path)


def _check_expansion(path, declared, stored, what):
    if declared > ARCHIVE_FLOOR_BYTES and declared > MAX_EXPANSION * stored:
        raise FileRefused(
            f"{path!r}: {what} declare {declared:,} bytes but {stored:,} are stored, more "
            f"than {MAX_EXPANSION}x (Keras stores them uncompressed); refused as a "
            "decompression bomb."
        )


def _check_weights(path, data):
    """Refuse HDF5 datasets (compressed chunks) that declare far more than the file holds."""
    import h5py

    declared = 0

    def add(_, item):
        nonlocal declared
        if isinstance(item, h5py.Dataset):
            declared += math.prod(item.shape or ()) * item.dtype.itemsize

    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            h5.visititems(add)
    except OSError as err:
        raise FileRefused(f"{_WEIGHTS} in {path!r} is not an HDF5 file ({err}).") from err
    _check_expansion(path, declared, len(data), f"the weight arrays in {_WEIGHTS}")
