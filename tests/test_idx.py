"""The IDX reader on small files written here: both spellings, gzip or not, and bad files."""

import gzip
import struct

import numpy as np
import pytest

from tfresnet import idx


def write_idx(path, array, compress=None):
    """`array` as an IDX file (uint8 or int32), gzipped when `path` ends in .gz."""
    code = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C}[array.dtype]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    compress = str(path).endswith(".gz") if compress is None else compress
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(raw)


def write_mnist_folder(folder, n_train=12, n_test=6, size=7, classes=3, sep="-", gz=".gz"):
    """The four MNIST-format files of a small random set; returns the arrays written."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype="uint8")
        labels = (np.arange(n) % classes).astype("uint8")
        write_idx(folder / f"{prefix}-images{sep}idx3-ubyte{gz}", images)
        write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte{gz}", labels)
        arrays[split] = (images, labels)
    return arrays


def test_reads_uint8_and_big_endian_int32(tmp_path):
    a = np.arange(24, dtype="uint8").reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", a)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "a.idx"), a)
    b = np.asarray([1, -2, 70000], "int32")
    write_idx(tmp_path / "b.idx.gz", b)
    out = idx.read_idx(str(tmp_path / "b.idx.gz"))
    np.testing.assert_array_equal(out, b)
    assert out.dtype == np.int32 and out.dtype.byteorder in "=|<"


@pytest.mark.parametrize("sep,gz", [("-", ".gz"), (".", ""), ("-", "")])
def test_load_folder_in_either_spelling(tmp_path, sep, gz):
    arrays = write_mnist_folder(tmp_path, sep=sep, gz=gz)
    splits = idx.load_folder(str(tmp_path))
    for split in ("train", "test"):
        images, labels = splits[split]
        assert images.shape == (len(arrays[split][0]), 7, 7, 1) and images.dtype == np.uint8
        np.testing.assert_array_equal(images[..., 0], arrays[split][0])
        np.testing.assert_array_equal(labels, arrays[split][1])
        assert labels.dtype == np.int32


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x89PNG not idx")
    with pytest.raises(idx.IdxError, match="not an IDX file"):
        idx.read_idx(tmp_path / "junk")
    write_idx(tmp_path / "t.idx", np.zeros((4, 5), "uint8"))
    (tmp_path / "t.idx").write_bytes((tmp_path / "t.idx").read_bytes()[:-3])
    with pytest.raises(idx.IdxError, match="truncated"):
        idx.read_idx(tmp_path / "t.idx")
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(idx.IdxError, match="Cannot read"):
        idx.read_idx(tmp_path / "bad.gz")
    with pytest.raises(idx.IdxError, match="four MNIST-format files"):
        idx.load_folder(str(tmp_path))
    assert idx.find_files(str(tmp_path / "missing")) is None


def test_mismatched_counts_are_an_error(tmp_path):
    write_mnist_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5, "uint8"))
    with pytest.raises(idx.IdxError, match="6 images but 5 labels"):
        idx.load_folder(str(tmp_path))


def test_labels_must_be_class_numbers_and_splits_non_empty(tmp_path):
    write_mnist_folder(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(12, -1, "int32"))
    with pytest.raises(idx.IdxError, match=r"class numbers \(integers >= 0\); got int32 values"):
        idx.load_folder(str(tmp_path))
    write_mnist_folder(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((0, 7, 7), "uint8"))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(0, "uint8"))
    with pytest.raises(idx.IdxError, match="t10k-images-idx3-ubyte.gz' holds no images"):
        idx.load_folder(str(tmp_path))
