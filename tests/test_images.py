"""Image sizes from headers, and decompression bombs refused before they are decoded."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfresnet import export, images


def _encoded(fmt, size=(37, 21), mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size, 120 if mode == "L" else (10, 200, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_header_size_of_each_format(fmt):
    data = tf.constant(_encoded(fmt, size=(37, 21)))
    assert images.header_size(data).numpy().tolist() == [21, 37]  # [height, width]
    decoded = images.decode_image(data, channels=3)
    assert decoded.shape == (21, 37, 3) and decoded.dtype == tf.uint8


def test_unknown_bytes_have_no_header_size():
    assert images.header_size(tf.constant(b"hello")).numpy().tolist() == [-1, -1]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_image_over_the_pixel_limit_is_refused_before_decoding(fmt):
    data = tf.constant(_encoded(fmt, size=(40, 30), mode="L"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large: more than 1000"):
        images.decode_image(data, channels=1, max_pixels=1000)
    assert images.decode_image(data, channels=1, max_pixels=1200).shape == (30, 40, 1)


def test_a_png_bomb_header_is_refused_without_allocating_it():
    # A PNG whose header claims 12000 x 12000 pixels (144M): refused by the header alone.
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 12000, 12000, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    bomb = tf.constant(b"\x89PNG\r\n\x1a\n" + chunk)
    assert images.header_size(bomb).numpy().tolist() == [12000, 12000]
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        export.decode_and_fit(bomb, (8, 8), 1, "stretch")


def test_serving_decode_fits_a_normal_image():
    out = export.decode_and_fit(tf.constant(_encoded("PNG", (16, 16))), (8, 8), 3, "stretch")
    assert out.shape == (8, 8, 3)
    np.testing.assert_allclose(out.numpy()[4, 4], [10, 200, 30], atol=1)
