"""Batches for training and evaluation, with the paper's augmentation (CIFAR-style: pad, crop,
flip; ImageNet-style: scale augmentation, crop, flip; evaluation: the centre crop). Pipelines
yield raw 0..255 pixels: normalisation lives inside the model (`build_model(pixel_mean=...)`).
"""

import logging

import numpy as np
import tensorflow as tf

from tfresnet import distribute
from tfresnet import images as images_lib
from tfresnet.data import Data, DataError, DataInfo

AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 4 << 30  # cache decoded training images in memory below this size

log = logging.getLogger(__name__)


def cifar_augment(
    image: tf.Tensor, seed: tf.Tensor, size: tuple[int, int], flip: bool
) -> tf.Tensor:
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


def imagenet_augment(
    image: tf.Tensor, seed: tf.Tensor, size: tuple[int, int], flip: bool
) -> tf.Tensor:
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


def ten_crops(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
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
    dataset: tf.data.Dataset,
    info: DataInfo,
    *,
    batch_size: int,
    training: bool,
    seed: int = 0,
    cache: bool = True,
    drop_remainder: bool | None = None,
    first_epoch: int = 0,
    epochs: int | None = None,
    skip_batches: int = 0,
    epoch_examples: int | None = None,
    worker: int = 0,
    static_batches: bool = False,
) -> tf.data.Dataset:
    """Batches of `(float32 image in 0..255, int32 label)`, augmented when `training`; with
    `static_batches`, `(image, label, float32 weight)`, the last batch padded (`_padded_batches`).

    Training with `epochs` yields epochs `first_epoch`..`epochs`-1 back to back, every random
    choice a function of (seed, epoch, position) alone, so a resumed run sees exactly the
    batches an uninterrupted one saw; `skip_batches` resumes inside `first_epoch`. Without
    `epochs`, one epoch, reshuffled each time it is iterated. `epoch_examples` fixes the epoch
    length and `worker` is folded into the seeds: both for a worker reading its own files.
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
    """`(image, label, weight)` batches all of `batch_size` examples (static shapes, as XLA on
    a TPU needs): the last is filled with zero images of weight 0, and real examples weigh
    `padded / count`, so Keras' loss (averaged over the padded batch) is exactly the unpadded
    mean; the accuracies, compiled as `weighted_metrics`, ignore a constant weight.
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
    strategy: tf.distribute.Strategy,
    *,
    batch_size: int,
    steps_per_epoch: int,
    seed: int = 0,
    first_epoch: int = 0,
    epochs: int | None = None,
    skip_batches: int = 0,
) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """The training input for `model.fit` under `strategy`, sharded as `distribute.shard_policy`
    decides. DATA: `make_pipeline` over the whole split, the batches a single process would
    see. FILE: each worker reads only its own files (`Data.train_files`) and yields exactly
    `steps_per_epoch` steps' share per epoch, so workers agree on where an epoch ends; the
    batches depend on (seed, epoch, number of workers) alone.
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
