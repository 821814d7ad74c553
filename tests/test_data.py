import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import test_untrusted
from PIL import Image

from tfresnet import data, export, images, pipeline


def test_digits_split_is_deterministic_and_complete():
    a = data.load_data("digits")
    b = data.load_data("digits", validation_size=100)
    assert a.info.sizes == {"train": 1438, "validation": 0, "test": 359}
    assert b.info.sizes == {"train": 1338, "validation": 100, "test": 359}
    test_a = np.stack([x for x, _ in a.test.as_numpy_iterator()])
    test_b = np.stack([x for x, _ in b.test.as_numpy_iterator()])
    np.testing.assert_array_equal(test_a, test_b)  # the held-out set never touches test
    assert a.info.image_shape == (8, 8, 1) and a.info.num_classes == 10
    assert not a.info.flip and a.info.style == "cifar"
    images = np.stack([x for x, _ in a.train.as_numpy_iterator()]).astype("float64")
    np.testing.assert_allclose(a.info.pixel_mean, images.mean(axis=0), rtol=1e-5)
    assert images.max() == 255


def test_cifar_augmentation_pads_by_an_eighth_and_crops_back():
    image = tf.reshape(tf.range(8 * 8, dtype=tf.int32), (8, 8, 1))
    out = pipeline.cifar_augment(image, tf.constant([1, 2], tf.int64), (8, 8), flip=False)
    assert out.shape == (8, 8, 1)
    # A 1-pixel pad: the crop is the image shifted by at most one pixel, zeros at the border.
    values = set(np.unique(out.numpy())) - {0}
    assert values <= set(range(64)) and len(values) >= 49


def test_training_pipeline_is_seeded_and_changes_every_epoch():
    d = data.load_data("digits")
    ds = pipeline.make_pipeline(d.train, d.info, batch_size=32, training=True, seed=3)
    first = [x.numpy() for x, _ in ds.take(2)]
    second = [x.numpy() for x, _ in ds.take(2)]
    again = [
        x.numpy()
        for x, _ in pipeline.make_pipeline(
            d.train, d.info, batch_size=32, training=True, seed=3
        ).take(2)
    ]
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], second[0])
    assert first[0].shape == (32, 8, 8, 1) and first[0].dtype == np.float32


def test_evaluation_pipeline_keeps_every_example_unaugmented():
    d = data.load_data("digits")
    ds = pipeline.make_pipeline(d.test, d.info, batch_size=100, training=False)
    images = np.concatenate([x.numpy() for x, _ in ds])
    raw = np.stack([x for x, _ in d.test.as_numpy_iterator()])
    np.testing.assert_array_equal(images, raw.astype("float32"))


def test_tfds_path_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=24):
        with pytest.raises(data.DataError, match="not prepared.*--download.*--data_dir"):
            data.load_data("cifar10", data_dir=str(tmp_path))
        d = data.load_data("cifar10", data_dir=str(tmp_path), download=True)
        assert d.info.image_shape == (32, 32, 3) and d.info.num_classes == 10
        assert d.info.style == "cifar" and d.info.flip
        assert d.info.sizes["train"] == 24 and d.info.pixel_mean.shape == (32, 32, 3)
        x, y = next(iter(pipeline.make_pipeline(d.train, d.info, batch_size=8, training=True)))
        assert x.shape == (8, 32, 32, 3) and y.dtype == tf.int32


def test_an_unprepared_tfds_set_is_one_error_without_tfds_warning(tmp_path, caplog):
    filters = list(logging.getLogger("absl").filters)
    with pytest.raises(data.DataError, match="'cifar10' is not prepared in"):
        data.load_data("cifar10", data_dir=str(tmp_path))
    assert not [r for r in caplog.records if "dataset_info.json" in r.getMessage()]
    assert logging.getLogger("absl").filters == filters  # the filter was only for the call
    logging.getLogger("absl").warning("Variant folder x has no dataset_info.json")
    assert "Variant folder x" in caplog.text  # and other such warnings still show


def test_unknown_tfds_name_is_a_clear_error():
    with pytest.raises(data.DataError, match="Unknown data set 'no_such_set'.*cifar10"):
        data.load_data("no_such_set")


def _png(path, value, size=(10, 12), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)


def test_image_folder_skips_corrupt_files_with_a_warning(tmp_path, caplog):
    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(5):
            _png(tmp_path / cls / f"{i}.png", value)
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    with caplog.at_level(logging.WARNING):
        d = data.load_data(str(tmp_path), image_size=16)
    assert "broken.png" in caplog.text and "notes.txt" in caplog.text
    assert d.info.class_names == ("cat", "dog")
    assert d.info.sizes == {"train": 8, "validation": 0, "test": 2}
    assert d.info.image_shape == (16, 16, 3)
    batch = next(iter(pipeline.make_pipeline(d.test, d.info, batch_size=2, training=False)))
    assert batch[0].shape == (2, 16, 16, 3)
    assert sorted(batch[1].numpy().tolist()) == [0, 1]


def test_image_folder_errors(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_data(str(tmp_path / "missing"))
    _png(tmp_path / "only" / "a.png", 1)
    with pytest.raises(data.DataError, match="one sub-folder per class"):
        data.load_data(str(tmp_path))


def test_imagenet_style_views():
    # Pixel value = column: where a crop comes from shows in its values.
    image = tf.cast(tf.tile(tf.range(400)[None, :, None] * 255 // 399, [300, 1, 3]), tf.uint8)
    crop = images.center_crop(tf.cast(image, tf.float32), (224, 224)).numpy()
    assert crop.shape == (224, 224, 3)
    # Shorter side 300 -> 256 (scale 0.853), width 400 -> 341, columns 58..281 kept: the centre.
    np.testing.assert_allclose(crop[:, 112, 0].mean(), 255 * 199.5 / 399, atol=2)
    np.testing.assert_allclose(crop[:, 0, 0].mean(), 255 * 58 / 0.8533 / 399, atol=2)
    served = export.fit_to_size(tf.cast(image[None], tf.float32), (224, 224), "crop")[0]
    np.testing.assert_array_equal(served.numpy(), crop)  # training and serving see one view
    aug = pipeline.imagenet_augment(image, tf.constant([4, 5], tf.int64), (224, 224), flip=True)
    assert aug.shape == (224, 224, 3)
    crops = pipeline.ten_crops(image, (64, 64)).numpy()
    assert crops.shape == (10, 64, 64, 3)
    assert crops[0].mean() < crops[4].mean() < crops[1].mean()  # left corner, centre, right
    np.testing.assert_array_equal(crops[5], crops[0][:, ::-1])  # the mirrored views


def test_mnist_format_folder_is_read_as_idx(tmp_path):
    from test_idx import write_mnist_folder

    arrays = write_mnist_folder(tmp_path / "kmnist", n_train=20, n_test=6)
    d = data.load_data(str(tmp_path / "kmnist"), validation_size=5)
    assert d.info.sizes == {"train": 15, "validation": 5, "test": 6}
    assert d.info.image_shape == (7, 7, 1) and d.info.num_classes == 3
    assert d.info.style == "cifar" and not d.info.flip  # written symbols: no mirror images
    train = np.stack([x for x, _ in d.train.as_numpy_iterator()])
    np.testing.assert_array_equal(train[..., 0], arrays["train"][0][5:])
    np.testing.assert_allclose(d.info.pixel_mean[..., 0], train[..., 0].mean(axis=0), rtol=1e-5)
    expected_std = np.sqrt(((train - train.mean(axis=0)) ** 2).mean())
    np.testing.assert_allclose(d.info.pixel_std, expected_std, rtol=1e-5)
    write_mnist_folder(tmp_path / "my-fashion-mnist")
    assert data.load_data(
        str(tmp_path / "my-fashion-mnist")
    ).info.flip  # clothes: flips keep labels


def test_fashion_mnist_falls_back_to_debian_files_then_to_a_clear_error(tmp_path, monkeypatch):
    from test_idx import write_mnist_folder

    debian = tmp_path / "debian"
    write_mnist_folder(debian, classes=10, n_train=30, n_test=10)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(debian))
    d = data.load_data("fashion_mnist", data_dir=str(tmp_path / "tfds"))
    assert d.info.name == "fashion_mnist" and d.info.flip
    assert d.info.class_names[0] == "T-shirt/top" and d.info.num_classes == 10
    assert d.info.sizes == {"train": 30, "validation": 0, "test": 10}
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "none"))
    with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist.*--download"):
        data.load_data("fashion_mnist", data_dir=str(tmp_path / "tfds"))


def test_fashion_mnist_uses_tfds_when_prepared(tmp_path):
    with tfds.testing.mock_data(num_examples=16):
        d = data.load_data("fashion_mnist", data_dir=str(tmp_path), download=True)
    assert d.info.image_shape == (28, 28, 1) and d.info.sizes["train"] == 16 and d.info.flip


@pytest.mark.skipif(
    not os.path.isdir(data.DEBIAN_FASHION_MNIST),
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_debian():
    d = data.load_data("fashion_mnist")
    assert d.info.sizes == {"train": 60_000, "validation": 0, "test": 10_000}
    assert d.info.image_shape == (28, 28, 1) and d.info.flip
    assert 70 < float(d.info.pixel_std) < 95  # real images, not zeros
    labels = np.concatenate([y for _, y in d.test.batch(10_000).as_numpy_iterator()])
    assert np.bincount(labels).tolist() == [1000] * 10


def test_image_folder_skips_truncated_and_huge_files_and_names_them(tmp_path, caplog, monkeypatch):
    from tfresnet import images

    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(4):
            _png(tmp_path / cls / f"{i}.png", value)
    good = tmp_path / "cat" / "good.jpg"
    Image.new("RGB", (10, 12), (1, 2, 3)).save(good, quality=90)
    cut = tmp_path / "cat" / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # a sound header
    Image.new("L", (30, 30)).save(tmp_path / "dog" / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 800)
    with caplog.at_level(logging.WARNING):
        d = data.load_data(str(tmp_path))
    assert "cut.jpg (jpeg::Uncompress failed" in caplog.text
    assert "big.png (image too large: 900 pixels, more than 800 " in caplog.text
    assert d.info.sizes["train"] + d.info.sizes["test"] == 9  # 8 PNGs + good.jpg
    list(pipeline.make_pipeline(d.train, d.info, batch_size=4, training=True).take(2))


def test_image_folder_skips_what_only_the_decoder_refuses(tmp_path, caplog):
    # A 1-bit BMP has a sound header (Pillow reads and verifies it) but TensorFlow cannot
    # decode it: skipped when the folder is read, not a failure in the middle of an epoch.
    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(2):
            _png(tmp_path / cls / f"{i}.png", value)
    Image.new("1", (10, 12)).save(tmp_path / "cat" / "mono.bmp")
    with caplog.at_level(logging.WARNING):
        d = data.load_data(str(tmp_path))
    assert "mono.bmp (Number of channels inherent in the image must be" in caplog.text
    assert d.info.sizes["train"] + d.info.sizes["test"] == 4


def test_image_folder_refuses_bombs_by_their_headers_before_pillow_warns(tmp_path, caplog):
    import struct
    import warnings
    import zlib

    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", value)
    # A PNG header of 10000 x 10000: over Pillow's limit, which it reports as a warning.
    ihdr = struct.pack(">IIBBBBB", 10000, 10000, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (tmp_path / "cat" / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    (tmp_path / "dog" / "bomb.gif").write_bytes(test_untrusted.GIF_BOMB)  # 1 x 1 says Pillow
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        d = data.load_data(str(tmp_path))
    assert [w.category.__name__ for w in caught if "Bomb" in w.category.__name__] == []
    assert "bomb.png (image too large: 100000000 pixels, more than 40000000 " in caplog.text
    assert "bomb.gif (image too large: 100000000 pixels, more than 40000000 " in caplog.text
    assert d.info.sizes["train"] + d.info.sizes["test"] == 6


@pytest.mark.slow  # a training; folder reading stays in the other folder tests
def test_grey_bmp_folder_trains(tmp_path):
    # TensorFlow cannot decode a BMP to 1 channel; it is decoded as RGB, then made grey.
    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(3):
            path = tmp_path / cls / f"{i}.bmp"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (10, 12), value + i).save(path)
    d = data.load_data(str(tmp_path))
    assert d.info.image_shape == (12, 12, 1)
    x, _ = next(iter(pipeline.make_pipeline(d.train, d.info, batch_size=2, training=False)))
    assert x.shape == (2, 12, 12, 1)


def test_image_folder_shape_comes_from_the_whole_set_not_the_seed(tmp_path):
    _png(tmp_path / "a" / "0.png", 5, size=(16, 16), mode="L")
    _png(tmp_path / "a" / "1.png", 5, size=(40, 20), mode="L")
    _png(tmp_path / "b" / "0.png", 5, size=(1, 1), mode="L")
    _png(tmp_path / "b" / "1.png", 9, size=(16, 16), mode="RGB")
    shapes = {data.load_data(str(tmp_path), seed=s).info.image_shape for s in range(3)}
    assert shapes == {(40, 40, 3)}  # largest side; colour if any image is in colour


def test_empty_class_folder_is_a_clear_error(tmp_path):
    _png(tmp_path / "a" / "0.png", 5)
    _png(tmp_path / "b" / "0.png", 5)
    (tmp_path / "c").mkdir()
    with pytest.raises(data.DataError, match="'.*c' hold no readable image"):
        data.load_data(str(tmp_path))


# --------------------------------------------------------------------------
# File-backed sources read in parts (FILE sharding) and padded evaluation (TPU)
# --------------------------------------------------------------------------

SHARDED_NAME = "tfresnet_sharded_ids"  # a tfds set written by the tests, read back by name


def write_sharded_tfds(data_dir, examples=48, shards=4):
    """A prepared tfds data set of `examples` 8x8x1 images in `shards` TFRecord files per split.

    Example i has label i (as many classes as examples) and pixel [0, 0] = i, so whoever reads
    it can tell exactly which examples it got, augmented or not.
    """

    class ShardedIds(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = SHARDED_NAME
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(num_classes=examples),
                }
            )
            return tfds.core.DatasetInfo(
                builder=self, features=features, supervised_keys=("image", "label")
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(examples), "test": self._generate_examples(12)}

        def _generate_examples(self, count):
            for i in range(count):
                image = np.zeros((8, 8, 1), np.uint8)
                image[0, 0, 0] = i
                yield i, {"image": image, "label": i}

    config = tfds.download.DownloadConfig(num_shards=shards)
    ShardedIds(data_dir=str(data_dir)).download_and_prepare(download_config=config)
    return str(data_dir)


def _labels(dataset):
    return [int(y) for _, y in dataset.as_numpy_iterator()]


def test_a_tfds_set_in_several_files_reads_in_disjoint_parts(tmp_path):
    data_dir = write_sharded_tfds(tmp_path / "tfds")
    d = data.load_data(SHARDED_NAME, data_dir=data_dir)
    assert d.info.sizes == {"train": 48, "validation": 0, "test": 12}
    assert d.train_files.num_files == 4
    parts = [_labels(d.train_files.read(2, i)) for i in range(2)]
    assert [len(p) for p in parts] == [24, 24]  # two files of 12 each
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(48))
    assert sorted(_labels(d.train_files.read(1, 0))) == list(range(48))

    # Holding out 14 examples takes the first file and 2 of the second: 3 files are left.
    held_out = data.load_data(SHARDED_NAME, data_dir=data_dir, validation_size=14)
    validation = _labels(held_out.validation)
    assert held_out.train_files.num_files == 3
    parts = [_labels(held_out.train_files.read(3, i)) for i in range(3)]
    assert [len(p) for p in parts] == [10, 12, 12]
    assert sorted(sum(parts, []) + validation) == list(range(48))


@pytest.mark.slow  # the tfds disjoint-parts test stays
def test_an_image_folder_reads_in_parts_and_in_memory_data_has_no_files(tmp_path):
    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(5):
            _png(tmp_path / cls / f"{i}.png", value + i)
    d = data.load_data(str(tmp_path), image_size=8)
    assert d.train_files.num_files == d.info.sizes["train"] == 8
    whole = sorted(int(x[0, 0, 0]) for x, _ in d.train.as_numpy_iterator())
    parts = [[int(x[0, 0, 0]) for x, _ in d.train_files.read(3, i).as_numpy_iterator()]
             for i in range(3)]  # fmt: skip
    assert [len(p) for p in parts] == [3, 3, 2]
    assert sorted(sum(parts, [])) == whole
    assert data.load_data("digits").train_files is None


def test_every_epoch_of_a_worker_has_exactly_its_share(tmp_path):
    """A part shorter than its share of an epoch is cycled through; a longer one is cut."""
    d = data.load_data(SHARDED_NAME, data_dir=write_sharded_tfds(tmp_path / "tfds"))
    part = d.train_files.read(4, 0)  # 12 examples
    for share in (8, 20):
        ds = pipeline.make_pipeline(
            part, d.info, batch_size=4, training=True, epochs=2, epoch_examples=share, worker=1
        )
        batches = [y.numpy() for _, y in ds]
        assert len(batches) == 2 * share // 4
        epoch0 = np.concatenate(batches[: share // 4])
        assert set(epoch0) <= set(_labels(part)) and len(set(epoch0)) == min(share, 12)


def test_one_worker_trains_on_the_plain_pipeline_even_with_files(tmp_path):
    from tfresnet import distribute

    d = data.load_data(SHARDED_NAME, data_dir=write_sharded_tfds(tmp_path / "tfds"))
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert distribute.input_pipelines(strategy) == 1
    ds = pipeline.training_input(d, strategy, batch_size=8, steps_per_epoch=6, epochs=1)
    assert isinstance(ds, tf.data.Dataset)
    assert sorted(np.concatenate([y.numpy() for _, y in ds]).tolist()) == list(range(48))


@pytest.mark.slow  # two evaluations; a TPU-only path
def test_padded_evaluation_gives_exactly_the_unpadded_metrics():
    """1,438 digits at batch 64: 22 full batches and one of 30, padded to 64 with weight-0
    zeros. Loss (weight decay included), accuracy and top-5 equal the unpadded evaluation."""
    import keras

    from tfresnet import models, recipes
    from tfresnet import train as train_lib

    d = data.load_data("digits")
    model = models.build_model(
        "cifar_resnet8", num_classes=10, input_shape=(8, 8, 1), weight_decay=1e-4,
        pixel_mean=d.info.pixel_mean, pixel_std=d.info.pixel_std,
    )  # fmt: skip
    recipe = recipes.get_recipe("cifar")
    train_lib.compile_model(model, recipe, 0.1)
    train = pipeline.make_pipeline(d.train, d.info, batch_size=64, training=True)
    model.fit(train, steps_per_epoch=20, shuffle=False, verbose=0)  # accuracy well above 10%

    plain = pipeline.make_pipeline(d.train, d.info, batch_size=64, training=False)
    padded = pipeline.make_pipeline(
        d.train, d.info, batch_size=64, training=False, static_batches=True
    )
    assert padded.element_spec[0].shape == (64, 8, 8, 1)  # static: what XLA on a TPU needs
    weights = np.concatenate([w.numpy() for _, _, w in padded])
    assert len(weights) == 23 * 64 and np.count_nonzero(weights) == 1438
    assert weights[0] == pytest.approx(23 * 64 / 1438)

    expected = model.evaluate(plain, verbose=0, return_dict=True)
    got = model.evaluate(padded, verbose=0, return_dict=True)
    assert 0.1 < expected["accuracy"] < 1.0 and expected["accuracy"] != expected["top5_accuracy"]
    for key in ("loss", "accuracy", "top5_accuracy"):
        assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), key
    # Weight 1 for the real examples would be wrong: the data loss shrinks by 1438 / 1472.
    ones = padded.map(lambda x, y, w: (x, y, tf.cast(w > 0, tf.float32)))
    naive = model.evaluate(ones, verbose=0, return_dict=True)
    assert naive["loss"] < expected["loss"] - 1e-3
    keras.backend.clear_session()


def test_a_fifo_in_an_image_folder_is_refused_before_anything_is_opened(tmp_path):
    from test_idx import unblock_later

    for cls in ("a", "b"):
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", 40 * i)
    os.mkfifo(tmp_path / "a" / "pipe.png")
    unblock_later(tmp_path / "a" / "pipe.png")  # so that a reader that opens it cannot hang
    with pytest.raises(data.DataError, match=r"a/pipe.png' is a FIFO \(named pipe\), not a reg"):
        data.load_data(str(tmp_path))
    os.remove(tmp_path / "a" / "pipe.png")
    os.mkfifo(tmp_path / "b" / "pipe")  # no image extension: refused all the same
    with pytest.raises(data.DataError, match="only folders and regular files"):
        data.load_data(str(tmp_path))


@pytest.mark.parametrize(
    "name, problem",
    [("b\nc", "control character U+000A"), ("b\tc", "U+0009"), (b"b\xff", "not valid UTF-8")],
)
def test_class_folder_names_are_checked_when_the_data_is_read(tmp_path, name, problem):
    _png(tmp_path / "a" / "0.png", 5)
    folder = os.path.join(os.fsencode(tmp_path) if isinstance(name, bytes) else tmp_path, name)
    os.makedirs(folder)
    Image.new("RGB", (4, 4)).save(
        os.path.join(folder, b"0.png" if isinstance(name, bytes) else "0.png")
    )
    with pytest.raises(
        data.DataError, match=f"Bad class name .*: it .*{re.escape(problem)}.*printable"
    ):
        data.load_data(str(tmp_path))


@pytest.mark.slow  # a training over a folder
def test_image_file_names_need_not_be_utf8(tmp_path):
    for cls in ("a", "b"):
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", 40 * i)
    Image.new("RGB", (10, 12)).save(os.path.join(os.fsencode(tmp_path), b"a", b"\xff.png"))
    d = data.load_data(str(tmp_path), seed=1)
    examples = d.info.sizes["train"] + d.info.sizes["test"]
    read = sum(1 for _ in d.train) + sum(1 for _ in d.test)
    assert examples == read == 7


def test_fashion_mnist_labels_must_be_its_ten_classes(tmp_path, monkeypatch):
    from test_idx import write_idx, write_mnist_folder

    debian = tmp_path / "debian"
    write_mnist_folder(debian, classes=10, n_train=30, n_test=10)
    write_idx(debian / "t10k-labels-idx1-ubyte.gz", np.arange(1, 11, dtype="uint8"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(debian))
    with pytest.raises(data.DataError, match=r"holds label 10 at index 9; .* 0\.\.9 \(10 classes"):
        data.load_data("fashion_mnist", data_dir=str(tmp_path / "tfds"))


def test_an_image_size_that_stored_images_cannot_take_is_refused(tmp_path):
    from test_idx import write_mnist_folder

    with pytest.raises(data.DataError, match="--image_size=16 does not apply to digits: its image"):
        data.load_data("digits", image_size=16)
    assert data.load_data("digits", image_size=8).info.image_shape == (8, 8, 1)  # as stored
    write_mnist_folder(tmp_path / "m", size=7)
    with pytest.raises(data.ImageSizeError, match="images are 7x7x1 as stored") as err:
        data.load_data(str(tmp_path / "m"), image_size=8)
    assert err.value.stored_shape == (7, 7, 1)
