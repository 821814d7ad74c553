"""The IDX file format of MNIST and its relatives (Fashion-MNIST, KMNIST), read into numpy.

An IDX file is a big-endian header (two zero bytes, a type code, the number of dimensions, one
uint32 per dimension) followed by the array. MNIST-format folders hold four of them, plain or
gzipped: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
`t10k-labels-idx1-ubyte` (`.gz` optional; `-` or `.` before `idx`, as both spellings circulate).
"""

import gzip
import os
import struct

import numpy as np

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_PREFIXES = {"train": "train", "test": "t10k"}
_KINDS = {"images": "idx3-ubyte", "labels": "idx1-ubyte"}


class IdxError(ValueError):
    """A file or folder that is not valid IDX data."""


def read_idx(path: str) -> np.ndarray:
    """The array stored in the IDX file at `path` (gzipped when it ends in .gz)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise IdxError(f"Cannot read IDX file {str(path)!r}: {err}.") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise IdxError(f"{str(path)!r} is not an IDX file (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise IdxError(f"{str(path)!r} is not an IDX file (header of {ndim} dimensions).")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IdxError(
            f"{str(path)!r} is truncated or padded: the header says {shape} "
            f"({expected} bytes of data), the file has {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_files(folder: str) -> dict | None:
    """{(split, kind): path} for the four MNIST-format files in `folder`, or None if any is missing.

    `split` is "train" or "test", `kind` "images" or "labels".
    """
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


def load_folder(folder: str) -> dict:
    """{"train": (images, labels), "test": (images, labels)} from an MNIST-format folder.

    Images come back as uint8 (N, H, W, 1) (or (N, H, W, C) for 4-D files), labels as int32.
    """
    files = find_files(folder)
    if files is None:
        raise IdxError(
            f"{folder!r} does not hold the four MNIST-format files (train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, .gz "
            "optional)."
        )
    splits = {}
    for split in _PREFIXES:
        images = read_idx(files[split, "images"])
        labels = read_idx(files[split, "labels"])
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.dtype != np.uint8 or labels.ndim != 1:
            raise IdxError(
                f"{files[split, 'images']!r} must hold uint8 images (N, H, W) and its labels file "
                f"a vector; got {images.dtype} {images.shape} and {labels.shape}."
            )
        if len(images) != len(labels):
            raise IdxError(f"{split}: {len(images)} images but {len(labels)} labels in {folder!r}.")
        if not len(images):
            raise IdxError(f"{files[split, 'images']!r} holds no images.")
        if labels.dtype.kind not in "iu" or labels.min() < 0:
            raise IdxError(
                f"{files[split, 'labels']!r} must hold class numbers (integers >= 0); got "
                f"{labels.dtype} values from {labels.min()} to {labels.max()}."
            )
        splits[split] = (images, labels.astype("int32"))
    return splits
