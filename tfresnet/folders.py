"""A folder of class folders as a data set: every file checked once before training (class
names, file types, decodable and complete images), the image size and channels taken from the
whole set.
"""

import logging
import os
import pathlib

import numpy as np
import tensorflow as tf

from tfresnet import files, images
from tfresnet.data import (
    SMALL_IMAGE_LIMIT,
    Data,
    DataError,
    DataInfo,
    FileSource,
    check_class_name,
    holdout_count,
    pixel_stats,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

log = logging.getLogger(__name__)


def _scan_folder(root):
    """Class folders -> (classes, [(path, label, (height, width, channels))]).

    Files `images.image_shapes` refuses (not an image, too large, cut short, damaged) are
    skipped with one warning naming them; a class left without images, a bad class name or a
    special file (a FIFO can block a reader forever) is an error.
    """
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
    candidates, skipped = [], []
    for label, path in entries:  # nothing is opened before every entry passed this loop
        kind = files.special_file(str(path))
        if kind:
            raise DataError(
                f"{str(path)!r} is a {kind}, not a regular file: an image folder may hold only "
                "folders and regular files (reading anything else can block forever); remove it."
            )
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            candidates.append((path, label))
        elif path.is_file():
            skipped.append(f"{path} (not an image extension)")
    found = []
    shapes = images.image_shapes([path for path, _ in candidates])
    for (path, label), shape in zip(candidates, shapes, strict=True):
        if isinstance(shape, str):
            skipped.append(f"{path} ({shape})")
        else:
            found.append((str(path), label, shape))
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


def folder_shape(found: list[tuple], image_size: int | None = None) -> tuple[int, int]:
    """(size, channels) for a folder's images, from the whole set so that no seed changes it:
    3 channels if any image is in colour (3 or 4 channels stored); `image_size`, else the
    largest side when it is at most SMALL_IMAGE_LIMIT (CIFAR-style), else 224."""
    channels = 3 if any(shape[2] >= 3 for _, _, shape in found) else 1
    natural = max(max(shape[:2]) for _, _, shape in found)
    return image_size or (natural if natural <= SMALL_IMAGE_LIMIT else 224), channels


def load_folder(
    root: pathlib.Path, validation_size: float, image_size: int | None, seed: int
) -> Data:
    """A directory of class folders, or of train/ and test/ holding them (else every class is
    split 80/20 by `seed`); unusable files are skipped with a warning naming them."""
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
    n_val = holdout_count(validation_size, len(train_files))
    val_files, train_files = train_files[:n_val], train_files[n_val:]
    style = "cifar" if size <= SMALL_IMAGE_LIMIT else "imagenet"
    shape = (size, size, channels)

    def to_dataset(items):
        paths = [os.fsencode(f[0]) for f in items]  # bytes: a name need not be UTF-8
        labels = np.asarray([f[1] for f in items], "int32")

        def read(path, label):
            image = images.decode_image(tf.io.read_file(path), channels)
            if style == "cifar":
                image = tf.cast(tf.image.resize(image, (size, size)), tf.uint8)
            return image, label

        return tf.data.Dataset.from_tensor_slices((paths, labels)).map(
            read, num_parallel_calls=tf.data.AUTOTUNE
        )

    train = to_dataset(train_files)
    mean, std = pixel_stats(train, style, channels)
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
