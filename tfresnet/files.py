"""Files that survive a kill at any instant, on local disks and on object stores (gs://, ram://).

Every path goes through `tf.io.gfile`. A file is written to a temporary name beside its target
and renamed over it (atomic locally; a server-side copy, visible all at once, on an object
store), so a reader sees the old file or the new one, never half. Multi-file records are made
atomic one level up, by a marker file written last (`tfresnet.rundir`).
"""

import json
import math
import os
import stat
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tfresnet import untrusted

if TYPE_CHECKING:
    import keras

TEMP_MARK = ".tmp-"  # starts the names of temporary files and folders; left ones are stale


def is_remote(path: str) -> bool:
    """True for `scheme://...` paths (gs://, s3://, ram://), where rename is not atomic."""
    return "://" in str(path)


def absolute(path: str) -> str:
    """An absolute local path; remote paths (gs://, ram://) as they are (`os.path.abspath` would
    turn `gs://b/r` into `<cwd>/gs:/b/r`)."""
    return str(path) if is_remote(path) else os.path.abspath(path)


def join(*parts: str) -> str:
    return os.path.join(*[str(p) for p in parts])


def check_output_dir(path: str, name: str, unset: str | None = None) -> None:
    """ValueError unless `path` can be a folder to write into: not empty, and (locally) neither
    it nor a folder above it is a file. `name` is the setting, `unset` what leaving it means."""
    if not str(path):
        raise ValueError(
            f"{name} is empty: give a folder path (it is made if missing)"
            + (f", or leave it unset for {unset}." if unset else ".")
        )
    if is_remote(path):
        return
    here = os.path.abspath(path)
    while not os.path.lexists(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    if not os.path.isdir(here):
        where = "is" if here == os.path.abspath(path) else f"is under {here!r}, which is"
        raise ValueError(f"{name} {str(path)!r} {where} a file, not a folder; give a folder path.")


def exists(path: str) -> bool:
    return tf.io.gfile.exists(str(path))


def makedirs(path: str) -> None:
    tf.io.gfile.makedirs(str(path))


def remove(path: str) -> None:
    """Remove a file or a folder tree; nothing if it is not there."""
    path = str(path)
    try:
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        elif tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    except tf.errors.NotFoundError:  # gone meanwhile (or ram://'s listing of a phantom entry)
        pass


def listdir(folder: str) -> list:
    """The names in `folder` (without the trailing "/" object stores give folders)."""
    return [name.rstrip("/") for name in tf.io.gfile.listdir(str(folder))]


def read_text(path: str) -> str:
    with tf.io.gfile.GFile(str(path), "r") as f:
        return f.read()


_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def special_file(path: str) -> str | None:
    """What kind of special file `path` is ("FIFO (named pipe)", "socket", "character device",
    "block device"), symlinks followed; None for a regular file, a folder, a missing or remote
    path. Readers of untrusted folders ask before opening: opening a FIFO blocks until some
    other process writes to it, and a device can be read forever."""
    if is_remote(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing, a dangling link, a NUL in the name
        return None
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), None)


def temp_name(path: str) -> str:
    """A fresh temporary name beside `path` (same folder, so a rename stays on one disk)."""
    folder, name = os.path.split(str(path))
    return join(folder, f"{TEMP_MARK}{uuid.uuid4().hex[:8]}-{name}")


def write_atomically(path: str, write: Callable[[str], object]) -> None:
    """Make `path` by calling `write(temporary name beside it)`, then renaming that over it, so
    `path` is either old or whole."""
    path = str(path)
    folder = os.path.dirname(path)
    if folder:
        makedirs(folder)
    temp = temp_name(path)
    try:
        write(temp)
        tf.io.gfile.rename(temp, path, overwrite=True)
    except BaseException:
        remove(temp)
        raise


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically."""

    def write(target):
        with tf.io.gfile.GFile(target, "w") as f:
            f.write(text)

    write_atomically(path, write)


def write_json(path: str, obj: Any) -> None:
    """Write strict JSON atomically: NaN and infinities become null, numpy values plain numbers."""
    write_text(path, json.dumps(_strict(obj), indent=2, allow_nan=False) + "\n")


class CorruptFile(ValueError):
    """A file we read does not parse: bad input, like a bad flag (the CLI's exit status 2). The
    message names the file and says what is wrong."""


def read_json(path: str) -> Any:
    """The JSON document at `path`, its nesting checked before it is parsed
    (`untrusted.parse_json`); `CorruptFile` if it is not one (cut short, not UTF-8, too deep)."""
    try:
        return untrusted.parse_json(read_text(path), "it")
    except ValueError as err:  # json.JSONDecodeError, UnicodeDecodeError, untrusted.FileRefused
        raise CorruptFile(f"{path} is not readable JSON ({err})") from err


def append_line(path: str, line: str) -> None:
    """Add `line` to the text file at `path` (made if missing), atomically: the whole file is
    rewritten, since object stores cannot append. For small logs with one writer at a time."""
    old = read_text(path) if exists(path) else ""
    write_text(path, f"{old}{line}\n")


def save_model(model: "keras.Model", path: str) -> None:
    """`model.save(path)` (a .keras file) atomically."""
    from tfresnet.models import recursion_headroom

    with recursion_headroom(50 * len(model.layers)):  # Keras serialises the graph recursively
        write_atomically(path, lambda target: _save_via_local(model.save, target, ".keras"))


def save_weights(model: "keras.Model", path: str) -> None:
    """`model.save_weights(path)` (a .weights.h5 file, optimizer state included) atomically."""
    suffix = ".weights.h5"
    write_atomically(path, lambda target: _save_via_local(model.save_weights, target, suffix))


def _save_via_local(save, target, suffix):
    """Keras' savers need a name ending in `suffix` and (h5) a local file; copy up if remote."""
    if not is_remote(target):
        local = f"{target}{suffix}" if not target.endswith(suffix) else target
        save(local)
        if local != target:
            os.replace(local, target)
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, f"file{suffix}")
        save(local)
        tf.io.gfile.copy(local, target, overwrite=True)


def remove_stale_temps(folder: str) -> list[str]:
    """Delete temporary files and folders left in `folder` by a killed write; returns them."""
    folder = str(folder)
    if not tf.io.gfile.isdir(folder):
        return []
    stale = [join(folder, name) for name in listdir(folder) if name.startswith(TEMP_MARK)]
    for path in stale:
        remove(path)
    return stale


def _strict(value):
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if isinstance(value, np.ndarray):
        return _strict(value.tolist())
    if isinstance(value, np.generic):
        return _strict(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
