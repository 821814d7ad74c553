"""Decoding untrusted image bytes: read the size from the header, refuse huge images, then decode.

A 140 KB PNG can hold 12000 x 12000 pixels (432 MB decoded); decoding first would let a few
such requests take down a server. `decode_image` reads height and width from the header of
JPEG (`tf.image.extract_jpeg_shape`), PNG (IHDR at a fixed offset), GIF and BMP, and refuses
more than `max_pixels` before any decoding. Used by the `serving_bytes` signature of exports,
by `tfresnet predict` (through it) and by image folders in training.
"""

import tensorflow as tf

MAX_PIXELS = 40_000_000  # 40 megapixels: any real photo; a 12000 x 12000 bomb is 144M
CROP_RATIO = 256 / 224  # ImageNet evaluation: the shorter side to size * 256/224, then the centre

_PNG = b"\x89PNG\r\n\x1a\n"


def _big_endian_u32(data, offset):
    raw = tf.io.decode_raw(tf.strings.substr(data, offset, 4), tf.uint8)
    raw = tf.cast(raw, tf.int64)
    return raw[0] * 16777216 + raw[1] * 65536 + raw[2] * 256 + raw[3]


def _little_endian(data, offset, length):
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, length), tf.uint8), tf.int64)
    weights = tf.constant([256**i for i in range(length)], tf.int64)
    return tf.reduce_sum(raw * weights)


def header_size(data: tf.Tensor) -> tf.Tensor:
    """[height, width] (int64) of one encoded JPEG, PNG, GIF or BMP image, from its header.

    Unknown formats and headers too short to hold a size give [-1, -1]; `decode_image` then
    leaves the verdict to the decoder.
    """
    length = tf.strings.length(data)
    magic2 = tf.strings.substr(data, 0, 2)
    magic8 = tf.strings.substr(data, 0, 8)

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)

    def png():
        return tf.stack([_big_endian_u32(data, 20), _big_endian_u32(data, 16)])

    def gif():
        return tf.stack([_little_endian(data, 8, 2), _little_endian(data, 6, 2)])

    def bmp():
        return tf.stack([tf.abs(_little_endian(data, 22, 4)), _little_endian(data, 18, 4)])

    def unknown():
        return tf.constant([-1, -1], tf.int64)

    return tf.case(
        [
            (tf.logical_and(tf.equal(magic2, b"\xff\xd8"), length > 4), jpeg),
            (tf.logical_and(tf.equal(magic8, _PNG), length >= 24), png),
            (tf.logical_and(tf.equal(tf.strings.substr(data, 0, 3), b"GIF"), length >= 10), gif),
            (tf.logical_and(tf.equal(magic2, b"BM"), length >= 26), bmp),
        ],
        default=unknown,
        exclusive=True,
    )


def check_size(data: tf.Tensor, max_pixels: int = MAX_PIXELS) -> tf.Operation:
    """An assertion that the image in `data` has at most `max_pixels` pixels (by its header)."""
    size = header_size(data)
    return tf.debugging.assert_less_equal(
        size[0] * size[1],
        tf.constant(max_pixels, tf.int64),
        message=f"image too large: more than {max_pixels} pixels (height x width in its header)",
    )


def decode_image(data: tf.Tensor, channels: int, max_pixels: int = MAX_PIXELS) -> tf.Tensor:
    """uint8 [height, width, channels] of one encoded image, after the header's size is checked."""
    with tf.control_dependencies([check_size(data, max_pixels)]):
        return tf.io.decode_image(data, channels=channels, dtype=tf.uint8, expand_animations=False)


def center_crop(images: tf.Tensor, size) -> tf.Tensor:
    """The evaluation view of one image [h, w, C] or a batch [N, h, w, C]: scaled (aspect kept,
    antialiased) so its shorter side is size * 256/224, then the central size crop.

    The one implementation behind training's evaluation pipeline and the served model, so the
    two never see different pixels.
    """
    height, width = size
    hw = tf.cast(tf.shape(images)[-3:-1], tf.float32)
    target = tf.constant(size, tf.float32) * CROP_RATIO
    scale = tf.reduce_max(target / hw)
    scaled = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), tf.constant(size))
    resized = tf.image.resize(images, scaled, antialias=True)
    top, left = (scaled[0] - height) // 2, (scaled[1] - width) // 2
    return resized[..., top : top + height, left : left + width, :]
