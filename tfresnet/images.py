"""The evaluation view of images: the shorter side scaled to size * 256/224, then the centre.

Decoding untrusted image bytes, with their sizes checked first, is `tfresnet.untrusted`'s job.
"""

import tensorflow as tf

CROP_RATIO = 256 / 224  # ImageNet evaluation: the shorter side to size * 256/224, then the centre


def center_crop(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """The evaluation view of one image [h, w, C] or a batch [N, h, w, C]: scaled (aspect kept,
    antialiased) so its shorter side is size * 256/224, then the central crop; shared by the
    evaluation pipeline and the served model, so the two never see different pixels."""
    height, width = size
    hw = tf.cast(tf.shape(images)[-3:-1], tf.float32)
    target = tf.constant(size, tf.float32) * CROP_RATIO
    scale = tf.reduce_max(target / hw)
    scaled = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), tf.constant(size))
    resized = tf.image.resize(images, scaled, antialias=True)
    top, left = (scaled[0] - height) // 2, (scaled[1] - width) // 2
    return resized[..., top : top + height, left : left + width, :]
