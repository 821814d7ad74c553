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
    images = idx.read_idx(tmp_path / "a.idx")
    images[0, 0, 0] = 255  # an ordinary array: a caller may change it in place
    assert images[0, 0, 0] == 255


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
    with pytest.raises(idx.IdxError, match=r"label -1 at index 0; labels must be class numbers"):
        idx.load_folder(str(tmp_path))
    write_mnist_folder(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((0, 7, 7), "uint8"))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(0, "uint8"))
    with pytest.raises(idx.IdxError, match="t10k-images-idx3-ubyte.gz' holds an empty array"):
        idx.load_folder(str(tmp_path))


def write_header(path, dims, code=0x08, body=b""):
    """A hand-written IDX file: magic, `dims` as they are (zeros and all), then `body`."""
    raw = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + body
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(raw)


def write_gzip_bomb(path, dims, inflated):
    """A .gz IDX file whose header promises `dims` of uint8 but that inflates to `inflated`
    bytes of data (zeros, a thousandth of that on disk)."""
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims))
        for _ in range(inflated >> 20):
            f.write(bytes(1 << 20))


def unblock_later(fifo, seconds=3.0):
    """A daemon thread that, for `seconds`, tries to open `fifo` for writing and writes junk:
    a reader that (wrongly) opened the FIFO gets data and ends instead of hanging the suite,
    and the test then fails on what it read. A reader that refused the FIFO leaves it be."""
    import errno
    import os
    import threading
    import time

    def feed():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as err:
                if err.errno != errno.ENXIO:  # ENXIO: no reader yet
                    return
                time.sleep(0.05)
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(b"junk, not an image or IDX data")
            return

    threading.Thread(target=feed, daemon=True).start()


def test_a_dimension_of_zero_is_refused(tmp_path):
    write_header(tmp_path / "z.idx.gz", (6, 0, 8))
    with pytest.raises(idx.IdxError, match=r"holds an empty array: its header says shape \(6, 0"):
        idx.read_idx(tmp_path / "z.idx.gz")


def test_a_gzip_bomb_is_refused_reading_no_more_than_the_header_promises(tmp_path):
    import tracemalloc

    write_gzip_bomb(tmp_path / "bomb.gz", (6, 8, 8), 64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(idx.IdxError, match=r"says \(6, 8, 8\) \(384 bytes.*has more than"):
            idx.read_idx(tmp_path / "bomb.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the 64 MiB it inflates to are never held


def test_a_header_larger_than_its_file_can_hold_is_refused_before_reading(tmp_path):
    write_header(tmp_path / "huge.gz", (4_000_000_000, 4_000_000_000, 8))
    with pytest.raises(idx.IdxError, match=r"cannot hold what its header says: .* more than a"):
        idx.read_idx(tmp_path / "huge.gz")
    write_header(tmp_path / "plain.idx", (2**32 - 1, 2**32 - 1), body=bytes(10))
    with pytest.raises(idx.IdxError, match="18446744065119617025 bytes of data.*has 10"):
        idx.read_header(tmp_path / "plain.idx")  # the size alone decides: no data is read


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    import os

    os.mkfifo(tmp_path / "train-images-idx3-ubyte")
    unblock_later(tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(idx.IdxError, match=r"is a FIFO \(named pipe\), not a regular file"):
        idx.read_idx(tmp_path / "train-images-idx3-ubyte")


def test_labels_outside_the_classes_are_refused_naming_the_first(tmp_path):
    write_mnist_folder(tmp_path)
    labels = (np.arange(12) % 3).astype("int32")
    labels[7] = 2**31 - 1
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(idx.IdxError, match=r"label 2147483647 at index 7; .* 0\.\.65535 \(at most"):
        idx.load_folder(str(tmp_path))
    write_mnist_folder(tmp_path, classes=3)
    assert idx.load_folder(str(tmp_path), num_classes=3)["test"][1].max() == 2
    with pytest.raises(idx.IdxError, match=r"label 2 at index 2; .* 0\.\.1 \(2 classes\)"):
        idx.load_folder(str(tmp_path), num_classes=2)


@pytest.mark.parametrize(
    "name, array, message",
    [
        ("t10k-images-idx3-ubyte.gz", np.zeros((6, 7, 7, 2), "uint8"), "images of 2 channels"),
        (
            "t10k-images-idx3-ubyte.gz",
            np.zeros((6, 7, 7, 1, 1), "uint8"),
            r"holds uint8 \(6, 7, 7, 1, 1\)",
        ),
        ("t10k-images-idx3-ubyte.gz", np.zeros((6, 7, 7), "int32"), "int32 \\(6, 7, 7\\)"),
        ("t10k-images-idx3-ubyte.gz", np.zeros((6, 9, 9), "uint8"), "one image shape"),
        ("t10k-labels-idx1-ubyte.gz", np.zeros((6, 2), "uint8"), "a vector of integer class"),
        ("t10k-labels-idx1-ubyte.gz", np.zeros(4, "uint8"), "6 images but 4 labels"),
    ],
)
def test_headers_that_cannot_make_a_data_set_are_refused_before_the_data(
    tmp_path, monkeypatch, name, array, message
):
    write_mnist_folder(tmp_path)
    write_idx(tmp_path / name, array)
    monkeypatch.setattr(idx, "read_idx", None)  # any data read would be a TypeError
    with pytest.raises(idx.IdxError, match=message):
        idx.load_folder(str(tmp_path))
