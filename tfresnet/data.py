"""Data: the embedded digits set, any tensorflow-datasets image set, or a folder of class folders.

`load_data(name)` gives unbatched uint8 `(image, label)` splits plus a `DataInfo`; `make_pipeline`
turns a split into batches with the paper's augmentation:

  CIFAR-style (small images): pad by size/8 (4 px at 32x32), random crop, horizontal flip;
                              per-pixel mean and a scalar std of the training set.
  ImageNet-style:             shorter side resized at random in [256, 480] (scaled to the input
                              size), random crop, flip; evaluation resizes the shorter side to 256
                              and takes the centre crop; per-channel ImageNet mean/std (documented
                              instead of the paper's per-pixel mean, which needs a pass over 1.28M
                              images).
Normalisation lives inside the model (`build_model(pixel_mean=..., pixel_std=...)`), so pipelines
yield raw 0..255 float pixels and exported models take raw images.
"""

import dataclasses
import functools
import logging
import math
import os
import pathlib
import unicodedata
import warnings
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfresnet import distribute, files, idx, untrusted
from tfresnet import images as images_lib

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
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
IMAGENET_MEAN = (123.68, 116.78, 103.94)
IMAGENET_STD = (58.40, 57.12, 57.38)
SMALL_IMAGE_LIMIT = 64  # images up to this size are treated CIFAR-style
AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 4 << 30  # cache decoded training images in memory below this size

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data set that cannot be used as asked, with what to do about it."""


class ImageSizeError(DataError):
    """An `image_size` given for a data set whose images are used at their stored size (the
    embedded digits, IDX files); `reason` says so without the advice, for callers that know
    better advice (evaluate knows the model's input)."""

    def __init__(self, name, image_size, stored_shape):
        self.stored_shape = tuple(stored_shape)
        self.reason = (
            f"--image_size={image_size} does not apply to {name}: its images are "
            f"{describe_shape(stored_shape)} as stored (--image_size resizes image folders and "
            "tensorflow-datasets sets only)"
        )
        super().__init__(f"{self.reason}; leave it out.")


def describe_shape(shape) -> str:
    """(28, 28, 1) as "28x28x1", the way messages show image shapes (None as "?")."""
    return "x".join("?" if d is None else str(int(d)) for d in shape)


def check_class_name(name: str, where: str) -> None:
    """Refuses a class name that cannot be one: empty, not valid UTF-8, or holding a control
    character or line break (U+0000-U+001F, U+007F-U+009F, U+2028, U+2029).

    Class names become lines of an export's class_names.txt and strings in the served graph
    and in JSON; checked where they enter (class folders, --class_names files), so that no run
    trains for an epoch and then cannot export. `where` names their source in the message.
    """
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
    image_shape: tuple  # (height, width, channels) the model sees
    style: str  # "cifar" (small images) or "imagenet"
    flip: bool  # horizontal flips keep the label (not for digits)
    pixel_mean: np.ndarray  # per-pixel (H, W, C) or per-channel (C,)
    pixel_std: np.ndarray
    class_names: tuple = ()
    sizes: dict = dataclasses.field(default_factory=dict)  # split -> number of examples
    resizable: bool = True  # whether `image_size` sets image_shape (False: used as stored)


@dataclasses.dataclass(frozen=True)
class FileSource:
    """A split stored in files, readable in parts: `read(parts, index)` gives the unbatched
    examples of every `parts`-th file from the `index`-th on, so workers can each read only their
    own files (FILE sharding, `training_input`)."""

    num_files: int
    read: Callable[[int, int], tf.data.Dataset]


@dataclasses.dataclass(frozen=True)
class Data:
    """Unbatched `(uint8 image, int32 label)` splits; `validation` is None when not asked for.

    `train_files` is set when the training split is read from files (tfds, a folder of images),
    None for in-memory data (digits, IDX files)."""

    info: DataInfo
    train: tf.data.Dataset
    test: tf.data.Dataset
    validation: tf.data.Dataset | None = None
    train_files: FileSource | None = None


def load_data(
    name=EMBEDDED, *, data_dir=None, validation_size=0, image_size=None, download=False, seed=0
):
    """Load `name`: "digits", "fashion_mnist", a tfds name ("cifar10", ...) or a folder path.

    A folder holding the four MNIST-format IDX files is read as such; any other folder as class
    folders. "fashion_mnist" is tfds' own when it is prepared in `data_dir`, else Debian's
    `dataset-fashion-mnist` files. `validation_size` holds out that many training examples (or
    a fraction if < 1) for model selection; the test split is never used for it. `image_size`
    overrides the model input size for folders and variable-size data sets.
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
        return _load_folder(pathlib.Path(name), validation_size, image_size, seed)
    return _load_tfds(name, data_dir, validation_size, image_size, download)


def _holdout_count(validation_size, train_size):
    count = int(round(validation_size * train_size)) if validation_size < 1 else validation_size
    if count >= train_size:
        raise DataError(
            f"validation_size={validation_size} leaves no training data ({train_size} examples)."
        )
    return int(count)


def _small_style_stats(images):
    """Per-pixel mean and one scalar std over the training images (the paper's CIFAR recipe).

    Two passes in chunks of float64, so a large uint8 set is never converted whole.
    """
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
        class_names=tuple(str(i) for i in range(10)),
        flip=False,  # a mirrored digit is a different symbol
    )


def _load_idx(folder, validation_size, image_size, name=None, class_names=None):
    """An MNIST-format folder (four IDX files): its train and test splits, CIFAR-style.

    Labels must lie in `class_names` when given (Fashion-MNIST's 10), else in
    0..idx.MAX_CLASSES-1; the classes are then 0..the largest label.
    """
    try:
        splits = idx.load_folder(folder, len(class_names) if class_names else None)
    except idx.IdxError as err:
        raise DataError(str(err)) from err
    name = name or folder
    flip = "fashion" in os.path.basename(os.path.normpath(name)).lower()
    num_classes = int(max(splits["train"][1].max(), splits["test"][1].max())) + 1
    return _from_arrays_splits(
        name,
        train=splits["train"],
        test=splits["test"],
        validation_size=validation_size,
        image_size=image_size,
        class_names=class_names or tuple(str(i) for i in range(num_classes)),
        flip=flip,
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


def _from_arrays_splits(name, *, train, test, validation_size, image_size, class_names, flip):
    """Data from in-memory uint8 (N, H, W, C) splits: the first `validation_size` train examples
    are held out; CIFAR-style statistics come from the rest. The images are used as stored: an
    `image_size` other than their size is refused, not ignored."""
    stored = train[0].shape[1:]
    if image_size is not None and (image_size, image_size) != stored[:2]:
        raise ImageSizeError(name, image_size, stored)
    n_val = _holdout_count(validation_size, len(train[1])) if validation_size else 0
    val = (train[0][:n_val], train[1][:n_val])
    train = (train[0][n_val:], train[1][n_val:])
    mean, std = _small_style_stats(train[0])
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


def _no_variant_folder_warning(record):
    """False for tfds' "Variant folder ... has no dataset_info.json" (an unprepared data set),
    True for everything else."""
    return "has no dataset_info.json" not in record.getMessage()


def _is_prepared(builder):
    """`builder.is_prepared()` without tfds' warning for a data set that is not: the caller
    says what to do about it in its own error or falls back to another source."""
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(_no_variant_folder_warning)
    try:
        return builder.is_prepared()
    finally:
        absl_logger.removeFilter(_no_variant_folder_warning)


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
        return ds.map(lambda x, y: (x, tf.cast(y, tf.int32)), num_parallel_calls=AUTOTUNE)

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
    n_val = _holdout_count(validation_size, train_size) if validation_size else 0
    train_spec = f"train[{n_val}:]" if n_val else "train"
    train = split(train_spec) if n_val else full_train
    test = split(test_split)

    height, width, channels = info.features["image"].shape
    channels = channels or 3
    small = height is not None and width is not None and max(height, width) <= SMALL_IMAGE_LIMIT
    style = "cifar" if small and image_size is None else "imagenet"
    if style == "cifar":
        # Per-pixel mean and std over the whole training split (one pass, like the paper).
        mean, std = _small_style_stats(np.stack([x for x, _ in train.as_numpy_iterator()]))
        shape = (height, width, channels)
    else:
        shape = (image_size or 224, image_size or 224, channels)
        mean, std = _imagenet_stats(channels)
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
    files = _tfds_file_count(info, train_spec)
    source = FileSource(files, functools.partial(split, train_spec)) if files else None
    return Data(data_info, train, test, validation, train_files=source)


def _tfds_file_count(info, spec):
    """How many record files hold split `spec` of a prepared tfds data set; None without split
    metadata (`tfds.testing.mock_data` generates examples instead of reading files)."""
    try:
        return len(info.splits[spec].file_instructions) or None
    except KeyError:  # tfds: "`splits` is empty"
        return None


def _imagenet_stats(channels):
    if channels == 1:
        return np.asarray([np.mean(IMAGENET_MEAN)], "float32"), np.asarray(
            [np.mean(IMAGENET_STD)], "float32"
        )
    return np.asarray(IMAGENET_MEAN, "float32"), np.asarray(IMAGENET_STD, "float32")


# Modes PIL reports for single-channel images; anything else (RGB, RGBA, P, CMYK) is colour.
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _truncated(path, img):
    """Why the JPEG or PNG at `path` cannot be used (cut off: no end marker), or None."""
    if img.format in ("JPEG", "PNG"):
        # A cut-off file still has a valid header; its end marker is what goes missing.
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 12))
            tail = f.read()
        end = b"\xff\xd9" if img.format == "JPEG" else b"IEND"
        if end not in tail:
            return "truncated: no end marker"
    return None


def _scan_folder(root):
    """Class folders -> (classes, [(path, label, mode, size)]); unusable files are skipped.

    Every file is checked as training will decode it (`untrusted.image_problems`: a format
    TensorFlow decodes, its size by the headers within the pixel limit), then opened by Pillow
    for its mode and a verify: non-images, truncated JPEG/PNG files and images over the pixel
    limit are skipped with one warning naming them. A class folder with no usable image is an
    error (it would be a class the model can never learn), and so are, before any file is
    opened, a class name `check_class_name` refuses and anything but folders and regular files
    (a FIFO, socket or device: opening or reading one can block forever, in PIL here as in
    `tf.io.read_file` and `keras.utils.image_dataset_from_directory`).
    """
    from PIL import Image

    if not root.is_dir():
        raise DataError(f"Data folder {str(root)!r} does not exist or is not a directory.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"Folder {str(root)!r} must hold one sub-folder per class (at least 2); found "
            f"{classes or 'none'}."
        )
    for cls in classes:
        check_class_name(cls, f"the class folder {str(root / cls)!r}")
    entries = [
        (i, path) for i, cls in enumerate(classes) for path in sorted((root / cls).rglob("*"))
    ]
    for _, path in entries:
        kind = files.special_file(str(path))
        if kind:
            raise DataError(
                f"{str(path)!r} is a {kind}, not a regular file: an image folder may hold only "
                "folders and regular files (reading anything else can block forever); remove it."
            )
    candidates, skipped = [], []
    for label, path in entries:
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            candidates.append((path, label))
        elif path.is_file():
            skipped.append(f"{path} (not an image extension)")
    found = []
    problems = untrusted.image_problems([path for path, _ in candidates])
    for (path, label), problem in zip(candidates, problems, strict=True):
        if not problem:
            try:
                with warnings.catch_warnings():  # Pillow's own bomb limit: a refusal, not a line
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(path) as img:
                        img.verify()
                        problem = _truncated(path, img)
                        mode, size = img.mode, img.size
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                problem = str(err).split(",")[0]
            except Exception as err:
                problem = type(err).__name__
        if problem:
            skipped.append(f"{path} ({problem})")
            continue
        found.append((str(path), label, mode, size))
    if skipped:
        log.warning(
            "Skipped %d unreadable or non-image files: %s", len(skipped), "; ".join(skipped)
        )
    if not found:
        raise DataError(f"No readable images ({', '.join(IMAGE_EXTENSIONS)}) under {str(root)!r}.")
    empty = [c for i, c in enumerate(classes) if not any(f[1] == i for f in found)]
    if empty:
        raise DataError(
            f"Class folder(s) {', '.join(repr(str(root / c)) for c in empty)} hold no readable "
            "image; remove them or add images (every class needs examples)."
        )
    return classes, found


def folder_shape(found, image_size=None):
    """(size, channels) for a folder's images, from the whole set so that no seed changes it.

    Channels: 3 if any image is in colour, else 1 (colour images are then read as RGB, alpha
    dropped; grayscale ones are repeated to RGB). Size: `image_size` if given; else the largest
    side in the set when it is at most 64 px (CIFAR-style, every image resized to it); else 224.
    """
    channels = 3 if any(mode not in GRAY_MODES for _, _, mode, _ in found) else 1
    natural = max(max(size) for _, _, _, size in found)
    return image_size or (natural if natural <= SMALL_IMAGE_LIMIT else 224), channels


def _load_folder(root, validation_size, image_size, seed):
    """A directory of class folders, or with train/ and test/ sub-directories of them.

    Without train/ and test/, every class is split 80/20 by a fixed seed. Corrupt or non-image
    files are skipped with a warning naming them (they never reach training).
    """
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, train_files = _scan_folder(root / "train")
        test_classes, test_files = _scan_folder(root / "test")
        if test_classes != classes:
            raise DataError(f"train/ and test/ of {str(root)!r} have different class folders.")
    else:
        classes, found = _scan_folder(root)
        rng = np.random.default_rng(seed)
        train_files, test_files = [], []
        for label in range(len(classes)):
            mine = [f for f in found if f[1] == label]
            rng.shuffle(mine)
            n_test = max(1, len(mine) // 5) if len(mine) > 1 else 0
            test_files += mine[:n_test]
            train_files += mine[n_test:]
    size, channels = folder_shape(train_files + test_files, image_size)
    order = np.random.default_rng(seed).permutation(len(train_files))
    train_files = [train_files[i] for i in order]
    n_val = _holdout_count(validation_size, len(train_files)) if validation_size else 0
    val_files, train_files = train_files[:n_val], train_files[n_val:]
    style = "cifar" if size <= SMALL_IMAGE_LIMIT else "imagenet"
    shape = (size, size, channels)

    def to_dataset(items):
        paths = [os.fsencode(f[0]) for f in items]  # bytes: a name need not be UTF-8
        labels = np.asarray([f[1] for f in items], "int32")

        def read(path, label):
            image = untrusted.decode_image(tf.io.read_file(path), channels)
            if style == "cifar":
                image = tf.cast(tf.image.resize(image, (size, size)), tf.uint8)
            return image, label

        return tf.data.Dataset.from_tensor_slices((paths, labels)).map(
            read, num_parallel_calls=AUTOTUNE
        )

    train = to_dataset(train_files)
    if style == "cifar":
        mean, std = _small_style_stats(np.stack([x for x, _ in train.as_numpy_iterator()]))
    else:
        mean, std = _imagenet_stats(channels)
    info = DataInfo(
        name=str(root),
        num_classes=len(classes),
        image_shape=shape,
        style=style,
        flip=True,
        pixel_mean=mean,
        pixel_std=std,
        class_names=tuple(classes),
        sizes={"train": len(train_files), "validation": n_val, "test": len(test_files)},
    )
    source = FileSource(len(train_files), lambda parts, i: to_dataset(train_files[i::parts]))
    return Data(
        info,
        train,
        to_dataset(test_files),
        to_dataset(val_files) if n_val else None,
        train_files=source,
    )


# --- augmentation -------------------------------------------------------------------------


def cifar_augment(image, seed, size, flip):
    """Pad by size/8 (4 px at 32x32), random size x size crop, random flip; stateless."""
    pad = max(1, int(round(size[0] / 8)))
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(image, (*size, tf.shape(image)[-1]), seed=seed)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    return image


def _resize_shorter_side(image, shorter):
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(shorter, tf.float32) / tf.reduce_min(shape)
    new = tf.cast(tf.round(shape * scale), tf.int32)
    return tf.image.resize(image, new, antialias=True)


def imagenet_augment(image, seed, size, flip):
    """Shorter side random in [256, 480] * size/224, random size x size crop, random flip."""
    low, high = int(256 * size[0] / 224), int(480 * size[0] / 224)
    shorter = tf.random.stateless_uniform(
        (), seed=seed, minval=low, maxval=high + 1, dtype=tf.int32
    )
    image = _resize_shorter_side(image, shorter)
    image = tf.image.stateless_random_crop(image, (*size, tf.shape(image)[-1]), seed=seed + 1)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seed + 2)
    return image


def ten_crops(image, size):
    """The paper's 10-crop test views: four corners and the centre, and their mirror images."""
    image = _resize_shorter_side(image, int(round(256 * size[0] / 224)))
    shape = tf.shape(image)
    h, w = size
    offsets = [
        (0, 0),
        (0, shape[1] - w),
        (shape[0] - h, 0),
        (shape[0] - h, shape[1] - w),
        ((shape[0] - h) // 2, (shape[1] - w) // 2),
    ]
    crops = [image[t : t + h, s : s + w, :] for t, s in offsets]
    crops += [tf.image.flip_left_right(c) for c in crops]
    return tf.stack(crops)


def make_pipeline(
    dataset,
    info,
    *,
    batch_size,
    training,
    seed=0,
    cache=True,
    drop_remainder=None,
    first_epoch=0,
    epochs=None,
    skip_batches=0,
    epoch_examples=None,
    worker=0,
    static_batches=False,
):
    """Batches of `(float32 image in 0..255, int32 label)`, augmented when `training`; with
    `static_batches`, `(image, label, float32 weight)`.

    For training with `epochs`, the pipeline yields epochs `first_epoch` .. `epochs`-1 back to
    back, each a fresh shuffle, and every random choice is a function of (seed, epoch, position)
    alone: a run resumed at epoch K sees exactly the batches an uninterrupted run saw from epoch
    K on. Without `epochs` it is one epoch, repeated with a new shuffle each time it is iterated.
    `skip_batches` drops the first batches of `first_epoch` (resuming inside an epoch).
    `epoch_examples` makes every epoch exactly that long (cycling through the shuffle again if
    `dataset` is shorter), and `worker`, the index of this input pipeline, is folded into the
    augmentation seeds: both for a worker reading only its own files (`training_input`).

    Evaluation keeps a partial last batch, or with `static_batches` pads it (`_padded_batches`):
    every batch then has the same static shape, as XLA on a TPU needs, and the metrics stay exact.
    """
    size = info.image_shape[:2]
    n = info.sizes.get("train" if training else "test", 0)
    if cache and n * int(np.prod(info.image_shape)) < CACHE_LIMIT_BYTES and info.style == "cifar":
        dataset = dataset.cache()
    drop = training if drop_remainder is None else drop_remainder
    if training:
        augment = cifar_augment if info.style == "cifar" else imagenet_augment
        buffer = min(max(n, 1), 20_000)

        def one_epoch(epoch):
            epoch_seed = tf.cast(seed, tf.int64) * 1_000_003 + epoch
            # This function's own graph: with no graph-level seed, shuffle's seed is epoch_seed
            # alone (TF's get_seed cannot compare a tensor seed against a global seed of 0).
            tf.compat.v1.get_default_graph().seed = None
            shuffled = dataset.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)
            if epoch_examples is not None:
                shuffled = shuffled.repeat().take(epoch_examples)

            def train_map(position, example):
                image, label = example
                pair = tf.stack([epoch_seed, position]) % (2**31 - 3)
                if worker:
                    pair = tf.random.experimental.stateless_fold_in(pair, worker)
                image = augment(image, pair, size, info.flip)
                return tf.cast(image, tf.float32), label

            return (
                shuffled.enumerate()
                .map(train_map, num_parallel_calls=AUTOTUNE)
                .batch(batch_size, drop_remainder=drop)
            )

        if epochs is None:
            counter = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            dataset = counter.take(1).flat_map(one_epoch)
        else:
            dataset = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
            dataset = dataset.skip(skip_batches) if skip_batches else dataset
    else:

        def eval_map(image, label):
            if info.style == "imagenet":
                image = images_lib.center_crop(image, size)
            return tf.cast(image, tf.float32), label

        dataset = dataset.map(eval_map, num_parallel_calls=AUTOTUNE)
        if static_batches:
            dataset = _padded_batches(dataset, info.image_shape, batch_size)
        else:
            dataset = dataset.batch(batch_size, drop_remainder=drop)
    # DATA sharding for Keras' own distribution: every pipeline here ends in batches of
    # examples, whatever its source (FILE sharding is built per worker: `training_input`).
    options = distribute.data_sharding_options()
    options.deterministic = True
    return dataset.with_options(options).prefetch(AUTOTUNE)


def _padded_batches(dataset, image_shape, batch_size):
    """`(image, label, weight)` batches all of `batch_size` examples: the last one is filled up
    with zero images of weight 0, and the real examples weigh `padded / count`.

    Why that weight: Keras averages each batch's loss over the whole batch (pads included) and
    weighs the batch by its size, so with weight 1 the mean loss would come out `count / padded`
    times too small. With `padded / count` the loss is exactly the unpadded mean, and the
    accuracy metrics, weighted means, ignore a constant weight: every metric is exact, as long
    as the model compiles them as `weighted_metrics` (`train.compile_model` does; plain
    `metrics` ignore sample weights and would count the pads as errors).
    """
    count = int(dataset.cardinality())
    if count < 0:  # unknown (a source tf.data cannot count in advance): count it once
        count = int(dataset.reduce(np.int64(0), lambda total, _: total + 1))
    if count == 0:
        raise DataError("There is no example to evaluate: the split is empty.")
    padded = -(-count // batch_size) * batch_size
    weight = tf.constant(padded / count, tf.float32)
    real = dataset.map(
        lambda x, y: (tf.ensure_shape(x, image_shape), y, weight), num_parallel_calls=AUTOTUNE
    )
    filler = tf.data.Dataset.from_tensors(
        (tf.zeros(image_shape, tf.float32), tf.constant(0, tf.int32), tf.constant(0.0))
    ).repeat(padded - count)
    return real.concatenate(filler).batch(batch_size, drop_remainder=True)


def training_input(
    data: Data,
    strategy,
    *,
    batch_size: int,
    steps_per_epoch: int,
    seed: int = 0,
    first_epoch: int = 0,
    epochs: int | None = None,
    skip_batches: int = 0,
):
    """The training input for `model.fit` under `strategy`, sharded as `distribute.shard_policy`
    decides for this data's files and the strategy's workers.

    DATA (in-memory data, one worker, or fewer files than workers): `make_pipeline` over the
    whole split; Keras gives each worker its share of every global batch, so the batches are
    the ones a single process would train on.
    FILE: a `tf.distribute.DistributedDataset` whose pipeline on each worker reads only that
    worker's files (`Data.train_files`), shuffles and augments them, and yields per-replica
    batches. Each worker yields exactly `steps_per_epoch` steps' share of examples per epoch
    (cycling through its part if it holds fewer, leaving the rest if more), so workers always
    agree on where an epoch ends. The batches are a function of (seed, epoch, number of workers)
    alone: a resumed run sees the same ones, given the same number of workers.
    """
    source = data.train_files
    workers = distribute.input_pipelines(strategy)
    policy = distribute.shard_policy(source.num_files if source else None, workers)
    common = dict(training=True, seed=seed, first_epoch=first_epoch, epochs=epochs)
    if policy != tf.data.experimental.AutoShardPolicy.FILE:
        return make_pipeline(
            data.train, data.info, batch_size=batch_size, skip_batches=skip_batches, **common
        )
    log.info("FILE sharding: %d workers share %d files", workers, source.num_files)

    def worker_pipeline(context):
        local_batch = context.get_per_replica_batch_size(batch_size)
        replicas_here = context.num_replicas_in_sync // context.num_input_pipelines
        return make_pipeline(
            source.read(context.num_input_pipelines, context.input_pipeline_id),
            data.info,
            batch_size=local_batch,
            skip_batches=skip_batches * replicas_here,  # a step takes one batch per replica
            epoch_examples=steps_per_epoch * replicas_here * local_batch,
            worker=context.input_pipeline_id,
            **common,
        )

    return strategy.distribute_datasets_from_function(worker_pipeline)
