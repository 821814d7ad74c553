"""Data sets as unbatched uint8 `(image, label)` splits plus a `DataInfo`: the embedded digits,
Fashion-MNIST or any folder of MNIST-format IDX files, any tensorflow-datasets image set, or a
folder of class folders (`folders`).

`load_data(name)` picks the source; `pipeline.make_pipeline` turns a split into batches.
"""

import dataclasses
import functools
import logging
import math
import os
import pathlib
import unicodedata
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfresnet import idx

EMBEDDED = "digits"
FASHION_MNIST = "fashion_mnist"
# Debian's `dataset-fashion-mnist` package puts the four IDX files here.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# Data sets of written symbols: a mirror image is another symbol, so no horizontal flips. An
# MNIST-format folder is taken as symbols too unless its name says "fashion".
NO_FLIP = ("digits", "mnist", "kmnist", "emnist", "binarized_mnist")
IMAGENET_MEAN = (123.68, 116.78, 103.94)
IMAGENET_STD = (58.40, 57.12, 57.38)
SMALL_IMAGE_LIMIT = 64  # images up to this size are treated CIFAR-style


class DataError(ValueError):
    """A data set that cannot be used as asked, with what to do about it."""


class ImageSizeError(DataError):
    """An `image_size` given for a data set used at its stored size (digits, IDX files);
    `reason` says so without the advice, for callers that know better advice."""

    def __init__(self, name, image_size, stored_shape):
        self.stored_shape = tuple(stored_shape)
        self.reason = (
            f"--image_size={image_size} does not apply to {name}: its images are "
            f"{describe_shape(stored_shape)} as stored (--image_size resizes image folders and "
            "tensorflow-datasets sets only)"
        )
        super().__init__(f"{self.reason}; leave it out.")


def describe_shape(shape: tuple) -> str:
    """(28, 28, 1) as "28x28x1", the way messages show image shapes (None as "?")."""
    return "x".join("?" if d is None else str(int(d)) for d in shape)


def check_class_name(name: str, where: str) -> None:
    """Refuses a class name that is empty, not UTF-8 or holds a control character or line
    break: names become lines of an export's class_names.txt, so they are checked where they
    enter (class folders, --class_names), not after an epoch. `where` names their source."""
    problem = "it is empty" if not name else None
    for char in name:
        category = unicodedata.category(char)
        if category == "Cs":  # how Python spells the bytes of a name that is not UTF-8
            problem = "it is not valid UTF-8"
        elif category in ("Cc", "Zl", "Zp"):
            problem = f"it holds the control character U+{ord(char):04X}"
        if problem:
            break
    if problem:
        shown = os.fsencode(name) if "UTF-8" in problem else name  # b'caf\xe9', not 'caf\udce9'
        raise DataError(
            f"Bad class name {shown!r} ({where}): {problem}. Class names may hold any printable "
            "characters (letters, digits, spaces, punctuation), no control characters or line "
            "breaks, and must be UTF-8."
        )


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What the model and the pipeline need to know about a data set."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (height, width, channels) the model sees
    style: str  # "cifar" (small images) or "imagenet"
    flip: bool  # horizontal flips keep the label (not for digits)
    pixel_mean: np.ndarray  # per-pixel (H, W, C) or per-channel (C,)
    pixel_std: np.ndarray
    class_names: tuple = ()
    sizes: dict = dataclasses.field(default_factory=dict)  # split -> number of examples
    resizable: bool = True  # whether `image_size` sets image_shape (False: used as stored)


@dataclasses.dataclass(frozen=True)
class FileSource:
    """A split stored in files: `read(parts, index)` gives the examples of every `parts`-th file
    from the `index`-th on, so each worker reads only its own files (FILE sharding)."""

    num_files: int
    read: Callable[[int, int], tf.data.Dataset]


@dataclasses.dataclass(frozen=True)
class Data:
    """Unbatched `(uint8 image, int32 label)` splits; `validation` None when not asked for,
    `train_files` None for in-memory data (digits, IDX files)."""

    info: DataInfo
    train: tf.data.Dataset
    test: tf.data.Dataset
    validation: tf.data.Dataset | None = None
    train_files: FileSource | None = None


def load_data(
    name: str = EMBEDDED,
    *,
    data_dir: str | None = None,
    validation_size: float = 0,
    image_size: int | None = None,
    download: bool = False,
    seed: int = 0,
) -> Data:
    """Load a data set as unbatched uint8 splits and their `DataInfo`.

    Args:
      name: str, "digits", "fashion_mnist" (tfds' when prepared, else Debian's IDX files), a
        tfds name ("cifar10", ...), a folder of the four MNIST-format IDX files, or a folder of
        class folders.
      validation_size: float, training examples held out (a fraction if < 1); never the test set.
      image_size: int, the model input size for folders and variable-size data sets.

    Example:
      >>> data = load_data("digits", validation_size=0.1)  # data.info.image_shape == (8, 8, 1)
    """
    if not 0 <= validation_size < math.inf:
        raise DataError(
            f"validation_size must be a count or a fraction >= 0; got {validation_size}."
        )
    if name == EMBEDDED:
        return _load_digits(validation_size, image_size)
    if name == FASHION_MNIST:
        return _load_fashion_mnist(data_dir, validation_size, image_size, download)
    if os.sep in str(name) or os.path.isdir(str(name)):
        if idx.find_files(str(name)) is not None:
            return _load_idx(str(name), validation_size, image_size)
        from tfresnet import folders  # it builds on this module's types

        return folders.load_folder(pathlib.Path(name), validation_size, image_size, seed)
    return _load_tfds(name, data_dir, validation_size, image_size, download)


def holdout_count(validation_size: float, train_size: int) -> int:
    """How many of `train_size` training examples `validation_size` (a count, or a fraction if
    < 1) holds out; an error if none would be left to train on."""
    if not validation_size:
        return 0
    count = int(round(validation_size * train_size)) if validation_size < 1 else validation_size
    if count >= train_size:
        raise DataError(
            f"validation_size={validation_size} leaves no training data ({train_size} examples)."
        )
    return int(count)


def small_image_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and one scalar std over the training images (the paper's CIFAR recipe),
    in float64 chunks so a large uint8 set is never converted whole."""
    chunk = 4096
    total = np.zeros(images.shape[1:], "float64")
    for i in range(0, len(images), chunk):
        total += images[i : i + chunk].sum(axis=0, dtype="float64")
    mean = total / len(images)
    squares = 0.0
    for i in range(0, len(images), chunk):
        squares += float(((images[i : i + chunk] - mean) ** 2).sum())
    std = max(float(np.sqrt(squares / images.size)), 1e-3)
    return mean.astype("float32"), np.asarray(std, "float32")


def _from_arrays(images, labels):
    return tf.data.Dataset.from_tensor_slices((images, labels.astype("int32")))


def _load_digits(validation_size, image_size):
    """scikit-learn's 1,797 real 8x8 handwritten digits, split 80/20 by a fixed permutation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype("uint8")[..., None]
    labels = digits.target.astype("int32")
    order = np.random.default_rng(20151210).permutation(len(labels))  # fixed: the same split
    images, labels = images[order], labels[order]
    n_test = len(labels) // 5
    return _from_arrays_splits(
        EMBEDDED,
        train=(images[n_test:], labels[n_test:]),
        test=(images[:n_test], labels[:n_test]),
        validation_size=validation_size,
        image_size=image_size,
        flip=False,  # a mirrored digit is a different symbol
    )


def _load_idx(folder, validation_size, image_size, name=None, class_names=None):
    """An MNIST-format folder's train and test splits, CIFAR-style."""
    try:
        splits = idx.load_folder(folder, len(class_names) if class_names else None)
    except idx.IdxError as err:
        raise DataError(str(err)) from err
    name = name or folder
    return _from_arrays_splits(
        name,
        train=splits["train"],
        test=splits["test"],
        validation_size=validation_size,
        image_size=image_size,
        class_names=class_names,
        flip="fashion" in os.path.basename(os.path.normpath(name)).lower(),
    )


def _load_fashion_mnist(data_dir, validation_size, image_size, download):
    """tfds' fashion_mnist when prepared (or `download`), else Debian's IDX files."""
    import tensorflow_datasets as tfds

    root = (
        data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    )
    # Asked only when its folder exists: tfds warns about any data set it does not find.
    prepared = tf.io.gfile.isdir(os.path.join(root, FASHION_MNIST)) and (
        _is_prepared(tfds.builder(FASHION_MNIST, data_dir=data_dir))
    )
    if prepared or download:
        return _load_tfds(FASHION_MNIST, data_dir, validation_size, image_size, download)
    if idx.find_files(DEBIAN_FASHION_MNIST) is not None:
        return _load_idx(DEBIAN_FASHION_MNIST, validation_size, image_size, FASHION_MNIST,
                         FASHION_MNIST_CLASSES)  # fmt: skip
    raise DataError(
        f"Fashion-MNIST is not here: not prepared for tensorflow-datasets in "
        f"{data_dir or '~/tensorflow_datasets'!r} and no IDX files in {DEBIAN_FASHION_MNIST!r}. "
        "Install them offline with `apt-get install dataset-fashion-mnist`, or pass --download."
    )


def _from_arrays_splits(name, *, train, test, validation_size, image_size, flip, class_names=None):
    """Data from in-memory uint8 (N, H, W, C) splits, used as stored (another `image_size` is
    refused); the first `validation_size` train examples are held out. Without `class_names`,
    the classes are "0".."the largest label"."""
    if class_names is None:
        class_names = [str(i) for i in range(int(max(train[1].max(), test[1].max())) + 1)]
    stored = train[0].shape[1:]
    if image_size is not None and (image_size, image_size) != stored[:2]:
        raise ImageSizeError(name, image_size, stored)
    n_val = holdout_count(validation_size, len(train[1]))
    val = (train[0][:n_val], train[1][:n_val])
    train = (train[0][n_val:], train[1][n_val:])
    mean, std = small_image_stats(train[0])
    info = DataInfo(
        name=name,
        num_classes=len(class_names),
        image_shape=tuple(int(d) for d in stored),
        resizable=False,
        style="cifar",
        flip=flip,
        pixel_mean=mean,
        pixel_std=std,
        class_names=tuple(class_names),
        sizes={"train": len(train[1]), "validation": n_val, "test": len(test[1])},
    )
    return Data(
        info, _from_arrays(*train), _from_arrays(*test), _from_arrays(*val) if n_val else None
    )


def _flips(name):
    """Whether a horizontal flip keeps the label: yes for clothes and objects, not for written
    symbols (digits, MNIST, KMNIST), where a mirror image is another symbol."""
    base = os.path.basename(os.path.normpath(str(name))).lower()
    return "fashion" in base or base.split(":")[0] not in NO_FLIP


def _is_prepared(builder):
    """`builder.is_prepared()` without tfds' "Variant folder ... has no dataset_info.json"
    warning for one that is not (the caller says what to do)."""

    def quiet(record):
        return "has no dataset_info.json" not in record.getMessage()

    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(quiet)
    try:
        return builder.is_prepared()
    finally:
        absl_logger.removeFilter(quiet)


def _tfds_builder(name, data_dir, download):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # tfds raises DatasetNotFoundError and friends
        says = str(err).splitlines()[0].rstrip(".")
        raise DataError(
            f"Unknown data set {name!r}: not '{EMBEDDED}', not a folder, and tensorflow-datasets "
            f"says: {says}. Try cifar10, cifar100, imagenet2012, imagenette, "
            "any tfds image-classification name, or a directory of class folders."
        ) from err
    if not _is_prepared(builder):
        if not download:
            manual = (
                f" ImageNet cannot be downloaded automatically: put the ILSVRC2012 tar files in "
                f"{builder.data_dir}/../downloads/manual first."
                if name.startswith("imagenet2012")
                else ""
            )
            raise DataError(
                f"Data set {name!r} is not prepared in {builder.data_dir!r}. Pass --download to "
                f"fetch and prepare it there, or --data_dir=<dir> where it is already prepared "
                f"(`tfds build {name} --data_dir=<dir>`).{manual}"
            )
        builder.download_and_prepare()
    return builder


def _load_tfds(name, data_dir, validation_size, image_size, download):
    import tensorflow_datasets as tfds

    builder = _tfds_builder(name, data_dir, download)
    info = builder.info
    if "image" not in info.features or "label" not in info.features:
        raise DataError(
            f"{name!r} is not an image-classification data set (it needs 'image' and 'label' "
            f"features; it has {sorted(info.features.keys())})."
        )

    def split(spec, parts=1, index=0):
        read_config = None
        if parts > 1:  # tfds reads every `parts`-th of the split's files
            context = tf.distribute.InputContext(num_input_pipelines=parts, input_pipeline_id=index)
            read_config = tfds.ReadConfig(input_context=context)
        ds = builder.as_dataset(
            split=spec, as_supervised=True, shuffle_files=False, read_config=read_config
        )
        return ds.map(lambda x, y: (x, tf.cast(y, tf.int32)), num_parallel_calls=tf.data.AUTOTUNE)

    def size(spec, ds):
        # Split sizes come from the metadata; count only when it has none (tfds mock data).
        known = info.splits[spec].num_examples if spec in info.splits else None
        return known if known is not None else int(ds.reduce(0, lambda n, _: n + 1))

    splits = list(info.splits.keys()) or ["train", "test"]
    test_split = "test" if "test" in splits else "validation"
    if test_split not in splits or "train" not in splits:
        raise DataError(f"{name!r} needs a train and a test or validation split; has {splits}.")
    full_train = split("train")
    train_size = size("train", full_train)
    n_val = holdout_count(validation_size, train_size)
    train_spec = f"train[{n_val}:]" if n_val else "train"
    train = split(train_spec) if n_val else full_train
    test = split(test_split)

    height, width, channels = info.features["image"].shape
    channels = channels or 3
    small = height is not None and width is not None and max(height, width) <= SMALL_IMAGE_LIMIT
    style = "cifar" if small and image_size is None else "imagenet"
    if style == "cifar":
        shape = (height, width, channels)
    else:
        shape = (image_size or 224, image_size or 224, channels)
    mean, std = pixel_stats(train, style, channels)
    label = info.features["label"]
    data_info = DataInfo(
        name=name,
        num_classes=label.num_classes,
        image_shape=shape,
        style=style,
        flip=_flips(name),
        pixel_mean=mean,
        pixel_std=std,
        class_names=tuple(getattr(label, "names", ()) or ()),
        sizes={"train": train_size - n_val, "validation": n_val, "test": size(test_split, test)},
    )
    validation = split(f"train[:{n_val}]") if n_val else None
    try:
        files = len(info.splits[train_spec].file_instructions)
    except KeyError:  # no split metadata (tfds' mock data): "`splits` is empty"
        files = 0
    source = FileSource(files, functools.partial(split, train_spec)) if files else None
    return Data(data_info, train, test, validation, train_files=source)


def imagenet_stats(channels: int) -> tuple[np.ndarray, np.ndarray]:
    """ImageNet's per-channel mean and std (one value for grayscale), for large images."""
    mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    if channels == 1:
        mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    return mean.astype("float32"), std.astype("float32")


def pixel_stats(train: tf.data.Dataset, style: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The standardisation for `style`: "cifar" the training split's `small_image_stats`
    (one pass over it), else `imagenet_stats`."""
    if style == "cifar":
        return small_image_stats(np.stack([x for x, _ in train.as_numpy_iterator()]))
    return imagenet_stats(channels)
