"""The IDX file format of MNIST and its relatives (Fashion-MNIST, KMNIST), read into numpy.

An IDX file is a big-endian header (two zero bytes, a type code, the number of dimensions, one
uint32 per dimension) followed by the array; an MNIST-format folder holds four, `.gz` optional.
The files are untrusted: the header is checked first, then exactly the bytes it promises are
read, so a gzip bomb or absurd dimensions are refused before anything is allocated.
"""

import dataclasses
import gzip
import math
import os
import struct
import zlib

import numpy as np

from tfresnet import files

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_PREFIXES = {"train": "train", "test": "t10k"}
_KINDS = {"images": "idx3-ubyte", "labels": "idx1-ubyte"}
MAX_DEFLATE_RATIO = 1032  # deflate's best case: a 258-byte match in 2 bits
# Labels are below this unless the data set says: far above EMNIST's 62, far below a label that
# would make the classifier outgrow memory.
IMAGE_CHANNELS = (1, 3)  # what tfresnet.images decodes to (not imported: it loads TensorFlow)
MAX_CLASSES = 65_536


class IdxError(ValueError):
    """A file or folder that is not valid IDX data."""


@dataclasses.dataclass(frozen=True)
class IdxHeader:
    """What an IDX file's header promises: the array's type and shape, and where it starts."""

    path: str
    dtype: np.dtype  # big-endian, as stored
    shape: tuple
    offset: int  # header bytes before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: no overflow


def _open(path):
    """The file at `path` for reading (inflating when it ends in .gz); refuses special files,
    which could block the reader forever."""
    kind = files.special_file(path)
    if kind:
        raise IdxError(f"{path!r} is a {kind}, not a regular file; an IDX file must be one.")
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _parse_header(f, path):
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
        raise IdxError(f"{path!r} is not an IDX file (bad magic number).")
    ndim = head[3]
    dims = f.read(4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise IdxError(f"{path!r} is not an IDX file (header of {ndim} dimensions).")
    shape = struct.unpack(f">{ndim}I", dims)
    header = IdxHeader(path, np.dtype(_DTYPES[head[2]]), shape, 4 + 4 * ndim)
    if 0 in shape:
        raise IdxError(
            f"{path!r} holds an empty array: its header says shape {shape}; every dimension "
            "must be at least 1."
        )
    size = os.stat(path).st_size
    if not path.endswith(".gz"):
        if size - header.offset != header.nbytes:
            raise _size_error(header, size - header.offset)
    elif header.nbytes > MAX_DEFLATE_RATIO * size:
        raise IdxError(
            f"{path!r} cannot hold what its header says: shape {shape} is {header.nbytes:,} "
            f"bytes, more than a {size:,}-byte .gz file can inflate to ({MAX_DEFLATE_RATIO}x)."
        )
    return header


def _size_error(header, got):
    return IdxError(
        f"{header.path!r} is truncated or padded: the header says {header.shape} "
        f"({header.nbytes} bytes of data), the file has {got}."
    )


def _read_error(path, err):
    return IdxError(f"Cannot read IDX file {path!r}: {err}.")


def read_header(path: str) -> IdxHeader:
    """The checked header of the IDX file at `path`; reads only the header's bytes."""
    path = os.fspath(path)
    try:
        with _open(path) as f:
            return _parse_header(f, path)
    except (OSError, EOFError, zlib.error) as err:
        raise _read_error(path, err) from err


def read_idx(path: str) -> np.ndarray:
    """The array stored in the IDX file at `path` (gzipped when it ends in .gz): exactly the
    bytes the header promises; fewer or more is an `IdxError`."""
    path = os.fspath(path)
    try:
        with _open(path) as f:
            header = _parse_header(f, path)
            data = np.empty(header.nbytes, np.uint8)  # writable, filled in place: no copy
            got = f.readinto(data)
            if got < header.nbytes:
                raise _size_error(header, got)
            if f.read(1):
                raise _size_error(header, "more than that")
    except (OSError, EOFError, zlib.error) as err:
        raise _read_error(path, err) from err
    array = data.view(header.dtype).reshape(header.shape)
    return array.astype(header.dtype.newbyteorder("="), copy=False)


def find_files(folder: str) -> dict | None:
    """{(split, kind): path} for the four MNIST-format files in `folder` (split "train" or
    "test", kind "images" or "labels"), or None if any is missing."""
    if not os.path.isdir(folder):
        return None
    present = set(os.listdir(folder))
    found = {}
    for split, prefix in _PREFIXES.items():
        for kind, suffix in _KINDS.items():
            names = [
                f"{prefix}-{kind}{sep}{suffix}{gz}" for sep in ("-", ".") for gz in (".gz", "")
            ]
            match = next((n for n in names if n in present), None)
            if match is None:
                return None
            found[split, kind] = os.path.join(folder, match)
    return found


def _check_headers(headers, folder):
    """Refuses, before any data is read, a folder whose files cannot make a data set: images
    not uint8 (N, H, W) or (N, H, W, 1 or 3), labels not a vector of integers, counts that
    differ, or train and test images of different shapes."""
    for split in _PREFIXES:
        images, labels = headers[split, "images"], headers[split, "labels"]
        shape = images.shape
        if images.dtype != np.uint8 or len(shape) not in (3, 4):
            raise IdxError(
                f"{images.path!r} must hold uint8 images (N, H, W) or (N, H, W, C); it holds "
                f"{images.dtype.name} {shape}."
            )
        if len(shape) == 4 and shape[3] not in IMAGE_CHANNELS:
            raise IdxError(
                f"{images.path!r} holds images of {shape[3]} channels {shape}; allowed: "
                f"{' or '.join(map(str, IMAGE_CHANNELS))} (grey or RGB)."
            )
        if labels.dtype.kind not in "iu" or len(labels.shape) != 1:
            raise IdxError(
                f"{labels.path!r} must hold a vector of integer class numbers; it holds "
                f"{labels.dtype.name} {labels.shape}."
            )
        if shape[0] != labels.shape[0]:
            raise IdxError(
                f"{split}: {shape[0]} images but {labels.shape[0]} labels in {folder!r}."
            )
    train, test = (headers[s, "images"].shape[1:] for s in _PREFIXES)
    if (train + (1,))[:3] != (test + (1,))[:3]:
        raise IdxError(
            f"The train images of {folder!r} are {train} but the test images {test}; both splits "
            "must have one image shape."
        )


def _check_labels(labels, path, num_classes):
    """Refuses a label outside 0..num_classes-1 (0..MAX_CLASSES-1 when not given), naming it."""
    limit = MAX_CLASSES if num_classes is None else num_classes
    outside = np.flatnonzero((labels < 0) | (labels >= limit))
    if outside.size:
        i = int(outside[0])
        why = f"{limit} classes" if num_classes is not None else f"at most {limit:,} classes"
        raise IdxError(
            f"{path!r} holds label {int(labels[i])} at index {i}; labels must be class numbers "
            f"0..{limit - 1} ({why})."
        )


def load_folder(
    folder: str, num_classes: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images, labels), "test": (images, labels)} from an MNIST-format folder:
    uint8 (N, H, W, C) images and int32 labels in 0..num_classes-1 (default MAX_CLASSES), all
    four headers checked against each other before any data is read."""
    paths = find_files(folder)
    if paths is None:
        raise IdxError(
            f"{folder!r} does not hold the four MNIST-format files (train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, .gz "
            "optional)."
        )
    _check_headers({key: read_header(path) for key, path in paths.items()}, folder)
    splits = {}
    for split in _PREFIXES:
        labels = read_idx(paths[split, "labels"])
        _check_labels(labels, paths[split, "labels"], num_classes)
        images = read_idx(paths[split, "images"])
        splits[split] = (images[..., None] if images.ndim == 3 else images, labels.astype("int32"))
    return splits
