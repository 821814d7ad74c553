"""The bounded reader: sizes from headers and archives, refused before anything is allocated.

The hostile files are made here (and used by tests/test_cli_errors.py and the export tests):
a 38-byte WebP and a 36-byte GIF that decode to 10000 x 10000, a .keras whose config.json
nests 200,000 levels, a .keras zip bomb and one whose HDF5 weights inflate.
"""

import io
import json
import struct
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfresnet import export, images, untrusted

# Pillow's lossless WebP of a 10000 x 10000 single colour: 38 bytes, 300 MB decoded.
WEBP_BOMB = bytes.fromhex(
    "524946461e000000574542505650384c110000002f0fe7c3090750e42ad4a3ff8188e87f0000"
)


def gif(screen=(1, 1), frames=((10000, 10000),), sub_blocks=(b"\x02\x4c\x01",)):
    """A GIF whose screen and frame descriptors say what we like (the data need not fit)."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    for width, height in frames:
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02"
        out += b"".join(bytes([len(b)]) + b for b in sub_blocks) + b"\x00"
    return out + b"\x3b"


GIF_BOMB = gif()  # screen 1 x 1, one 10000 x 10000 frame: 36 bytes


def encoded(fmt, size=(37, 21), mode="RGB", **options):
    buffer = io.BytesIO()
    colour = 120 if mode == "L" else (10, 200, 30, 255, 7)[: len(mode)]
    image = Image.new(mode, size, colour)
    if mode in ("RGB", "CMYK"):  # not one colour: grey conversions then show
        pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), np.uint8)
        image = Image.fromarray(pixels).convert(mode)
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def bad_huffman_jpeg():
    """A JPEG whose header is sound but whose Huffman table libjpeg rejects, printing
    "Bogus Huffman table definition" to stderr itself."""
    data = bytearray(encoded("JPEG", size=(16, 16)))
    table = data.index(b"\xff\xc4")
    data[table + 5 : table + 7] = b"\x7f\x33"  # code counts summing past 256
    return bytes(data)


def deep_keras(path, depth=200_000):
    """A 0.8 KB .keras whose config.json is `depth` nested lists."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "[" * depth + "]" * depth)
        archive.writestr("metadata.json", "{}")
        archive.writestr("model.weights.h5", b"")
    return path


def zip_bomb_keras(path, model_path, megabytes=256):
    """`model_path`'s .keras with a weights member that inflates to `megabytes` of zeros."""
    member = zipfile.ZipInfo("model.weights.h5")
    member.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(model_path) as src, zipfile.ZipFile(path, "w") as dst:
        dst.writestr("config.json", src.read("config.json"))
        dst.writestr("metadata.json", src.read("metadata.json"))
        with dst.open(member, "w", force_zip64=True) as weights:  # streamed: no memory spike
            for _ in range(megabytes):
                weights.write(bytes(1 << 20))
    return path


def h5_bomb_keras(path, model_path):
    """`model_path`'s .keras whose first weight array declares 2 GB, stored as nothing (a
    chunked dataset never written); Keras reads it whole before it compares shapes."""
    import h5py

    buffer = io.BytesIO()
    with zipfile.ZipFile(model_path) as src:
        buffer.write(src.read("model.weights.h5"))
        config, metadata = src.read("config.json"), src.read("metadata.json")
    with h5py.File(buffer, "r+") as h5:
        first = []
        h5.visititems(lambda name, item: first.append(name) if hasattr(item, "shape") else None)
        del h5[first[0]]
        h5.create_dataset(first[0], shape=(1 << 29,), dtype="float32", chunks=(1 << 20,))
    with zipfile.ZipFile(path, "w") as dst:
        dst.writestr("config.json", config)
        dst.writestr("metadata.json", metadata)
        dst.writestr("model.weights.h5", buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from tfresnet import build_model

    path = tmp_path_factory.mktemp("model") / "m.keras"
    build_model("cifar_resnet8", input_shape=(8, 8, 1), num_classes=3).save(path)
    return str(path)


# --- image headers --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP"])
def test_pixel_count_of_each_format_from_its_header(fmt):
    data = tf.constant(encoded(fmt, size=(37, 21)))
    assert int(images.pixel_count(data)) == 37 * 21
    decoded = images.decode_image(data, channels=3)
    assert decoded.shape == (21, 37, 3) and decoded.dtype == tf.uint8


@pytest.mark.parametrize("fmt, options", [("WEBP", {"lossless": True}), ("WEBP", {}), ("PNG", {})])
def test_rgba_images_decode_to_rgb_and_grey(fmt, options):
    data = tf.constant(encoded(fmt, size=(9, 5), mode="RGBA", **options))
    assert int(images.pixel_count(data)) == 45
    rgb = images.decode_image(data, channels=3)  # tf.io.decode_image(webp, 3) refuses RGBA
    np.testing.assert_allclose(rgb.numpy()[2, 2], [10, 200, 30], atol=3)
    assert images.decode_image(data, channels=1).shape == (5, 9, 1)


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", images.UNKNOWN),
        (b"hello", images.UNKNOWN),
        (b"\xff\x0a\xff\x07\x08\x83\x04\x0c\x00\x4b\x20\x18" + bytes(100), images.JPEG_XL),
        (b"GIF8", images.GIF),
        (b"\xff\xd8\xff\xe0", images.JPEG),
        (b"RIFF\0\0\0\0WEBPVP8X", images.WEBP),
        (b"BM", images.BMP),
    ],
)
def test_formats_are_classified_as_tensorflow_does_and_short_headers_have_no_size(data, code):
    data = tf.constant(data)
    assert int(images.image_format(data)) == code
    assert int(images.pixel_count(data)) == -1


@pytest.mark.parametrize(
    "data, message",
    [
        (b"hello", "Unknown image file format: send JPEG, PNG, GIF, BMP or WebP"),
        # A 12-byte JPEG XL that TensorFlow decodes to 512 x 256: its size is not checked.
        (b"\xff\x0a\xff\x07\x08\x83\x04\x0c\x00\x4b\x20\x18" + bytes(100), "JPEG XL images"),
        (b"\xff\xd8\xff" + bytes(50), "JPEG header too short, damaged or too intricate"),
        (GIF_BOMB, "image too large: 100000000 pixels, more than 40000000"),
        (WEBP_BOMB, "image too large: 100000000 pixels, more than 40000000"),
    ],
)
def test_refused_before_decoding(data, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        images.decode_image(tf.constant(data), channels=3)


def test_the_38_byte_webp_and_35_byte_gif_bombs_are_sized():
    assert int(images.pixel_count(tf.constant(WEBP_BOMB))) == 10000 * 10000
    assert len(GIF_BOMB) == 36
    assert int(images.pixel_count(tf.constant(GIF_BOMB))) == 10000 * 10000


def test_every_gif_frame_counts_not_the_screen():
    small_first = gif(screen=(2, 2), frames=((2, 2), (3000, 3000), (3000, 3000)))
    assert int(images.pixel_count(tf.constant(small_first))) == 4 + 2 * 9_000_000
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than 10000000"):
        images.decode_image(tf.constant(small_first), 3, max_pixels=10_000_000)
    # Extensions (a comment, of several sub-blocks) between the frames are walked over too.
    comment = b"\x21\xfe" + b"\xff" + bytes(255) + b"\x03abc\x00"
    with_comment = small_first.replace(b"\x2c", comment + b"\x2c", 1)
    assert int(images.pixel_count(tf.constant(with_comment))) == 4 + 2 * 9_000_000


def test_a_gif_too_intricate_to_walk_is_refused(monkeypatch):
    # Each 1-byte sub-block is a step of the walk: past GIF_MAX_STEPS there is no size.
    monkeypatch.setattr(images, "GIF_MAX_STEPS", 100)
    assert int(images.pixel_count(tf.constant(gif(sub_blocks=[b"\x01"] * 50)))) == 10**8
    assert int(images.pixel_count(tf.constant(gif(sub_blocks=[b"\x01"] * 200)))) == -1


def test_top_down_bmp_with_negative_height_is_sized():
    data = bytearray(encoded("BMP", size=(6, 4)))
    data[22:26] = struct.pack("<i", -4)  # rows stored top-down
    assert int(images.pixel_count(tf.constant(bytes(data)))) == 24
    assert images.decode_image(tf.constant(bytes(data)), 3).shape == (4, 6, 3)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding():
    data = tf.constant(encoded("PNG", size=(40, 30), mode="L"))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="image too large: 1200 pixels, more than 1000"
    ):
        images.decode_image(data, channels=1, max_pixels=1000)
    assert images.decode_image(data, channels=1, max_pixels=1200).shape == (30, 40, 1)


def test_a_png_bomb_header_is_refused_without_allocating_it():
    # A PNG whose header claims 12000 x 12000 pixels (144M): refused by the header alone.
    import zlib

    ihdr = struct.pack(">IIBBBBB", 12000, 12000, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    bomb = tf.constant(b"\x89PNG\r\n\x1a\n" + chunk)
    assert int(images.pixel_count(bomb)) == 12000 * 12000
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large") as refused:
        export.decode_and_fit(bomb, (8, 8), 1, "stretch")
    assert images.error_line(refused.value).startswith("image too large: 144000000 pixels")


@pytest.mark.parametrize("fmt, mode", [("GIF", "RGB"), ("BMP", "RGB"), ("JPEG", "CMYK")])
def test_formats_without_grey_output_decode_to_rgb_then_grey(fmt, mode):
    # TensorFlow: "channels must be 0 or 3 for GIF", "`channels` must be 0, 3 or 4 for BMP",
    # and libjpeg's "Unsupported color conversion request" (CMYK to grey) on stderr.
    data = tf.constant(encoded(fmt, size=(12, 10), mode=mode))
    rgb = images.decode_image(data, channels=3)
    grey = images.decode_image(data, channels=1)
    assert grey.shape == (10, 12, 1)
    np.testing.assert_array_equal(grey.numpy(), tf.image.rgb_to_grayscale(rgb).numpy())
    assert int(tf.math.reduce_std(tf.cast(grey, tf.float32))) > 10  # a real picture


def test_grey_jpeg_and_png_still_come_from_the_decoder():
    for fmt in ("JPEG", "PNG"):
        data = encoded(fmt, size=(12, 10))
        expected = tf.io.decode_image(data, channels=1, expand_animations=False)
        np.testing.assert_array_equal(images.decode_image(tf.constant(data), 1), expected)


def test_image_shapes_gives_each_files_shape_or_why_it_is_refused(tmp_path):
    good_jpeg = encoded("JPEG", size=(10, 12))
    files = {
        "ok.png": encoded("PNG", size=(4, 5)),
        "grey.jpg": encoded("JPEG", size=(3, 2), mode="L"),
        "bomb.gif": GIF_BOMB,
        "bomb.webp": WEBP_BOMB,
        "text.png": b"not an image",
        "cut.jpg": b"\xff\xd8\xff" + bytes(20),
        "half.jpg": good_jpeg[: len(good_jpeg) // 2],  # a sound header: only decoding tells
        "big.jpg": encoded("JPEG", size=(30, 30), mode="L"),
        "huge.bmp": bytes(3000),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    shapes = images.image_shapes([tmp_path / n for n in files], max_pixels=800, max_bytes=2000)
    assert shapes[:2] == [(5, 4, 3), (2, 3, 1)]
    assert shapes[2].startswith("image too large: 100000000 pixels, more than 800 (")
    assert shapes[3].startswith("image too large: 100000000 pixels, more than 800 (")
    assert shapes[4] == "Unknown image file format: send JPEG, PNG, GIF, BMP or WebP"
    assert shapes[5].startswith("JPEG header too short, damaged or too intricate")
    assert "Invalid JPEG data" in shapes[6]
    assert shapes[7].startswith("image too large: 900 pixels, more than 800")
    assert shapes[8] == "3,000 bytes, more than 2,000"


def test_read_image_file_refuses_a_file_too_large_unread(tmp_path):
    (tmp_path / "a.png").write_bytes(bytes(1001))
    assert len(images.read_image_file(tmp_path / "a.png", max_bytes=1001)) == 1001
    with pytest.raises(untrusted.FileRefused, match="more than 1,000 bytes"):
        images.read_image_file(tmp_path / "a.png", max_bytes=1000)


# --- JSON and .keras archives ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, depth",
    [
        ("1", 0),
        ('{"a": [1, {"b": []}]}', 4),
        ('["[[[[", "]\\"[[[", {"k}": "{{"}]', 2),  # brackets inside strings do not count
        ("[" * 500 + "]" * 500, 500),
        ('"unterminated \\" [[[[', 0),
    ],
)
def test_json_depth_is_counted_without_parsing(text, depth):
    assert untrusted.json_depth(text, stop_above=10_000) == depth


def test_deep_json_is_refused_before_the_parser_recurses():
    with pytest.raises(untrusted.FileRefused, match="nests deeper than 100 levels"):
        untrusted.parse_json("[" * 200_000 + "]" * 200_000, "config.json")
    assert untrusted.parse_json('{"a": [1]}') == {"a": [1]}


@pytest.mark.slow  # a deep archive at a raised limit; the bounded-nesting tests stay
def test_deep_config_cannot_crash_even_under_a_raised_recursion_limit(tmp_path):
    # Keras' own JSON parse of this file segfaults when the recursion limit is 100,000.
    import subprocess

    path = deep_keras(tmp_path / "deep.keras")
    code = (
        "import sys; sys.setrecursionlimit(100_000)\n"
        "from tfresnet import untrusted\n"
        "try:\n"
        f"    untrusted.load_keras_model({str(path)!r})\n"
        "except untrusted.FileRefused as e:\n"
        "    print('refused:', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nests deeper than 100 levels" in done.stdout


def test_a_real_keras_file_is_read_and_loaded_with_the_recursion_limit_restored(model_file):
    config = untrusted.read_keras_config(model_file)
    assert config["class_name"] == "Functional"
    assert untrusted.count_layers(config) == len(config["config"]["layers"]) > 10
    before = sys.getrecursionlimit()
    model = untrusted.load_keras_model(model_file)
    assert sys.getrecursionlimit() == before
    assert model.input_shape == (None, 8, 8, 1)


@pytest.mark.parametrize(
    "error",
    [tf.errors.UnavailableError(None, None, "gs:// down"), MemoryError(), PermissionError(13, "")],
)
def test_storage_and_memory_errors_are_not_called_a_corrupt_file(model_file, monkeypatch, error):
    """They keep the CLI's own exit status (138 retryable, 1), not "fix the command" (2)."""
    import keras

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(keras.saving, "load_model", fail)
    with pytest.raises(type(error)):
        untrusted.load_keras_model(model_file)
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: 1 / 0)
    with pytest.raises(untrusted.FileRefused, match="ZeroDivisionError"):
        untrusted.load_keras_model(model_file)


def test_a_zip_bomb_is_refused_from_its_directory(tmp_path, model_file):
    bomb = zip_bomb_keras(tmp_path / "bomb.keras", model_file)
    assert bomb.stat().st_size < 1_000_000  # 256 MiB of zeros deflated
    with pytest.raises(untrusted.FileRefused, match=r"declare 268,[\d,]+ bytes but [\d,]+ are"):
        untrusted.read_keras_config(str(bomb))


def test_hdf5_weights_that_inflate_are_refused(tmp_path, model_file):
    bomb = h5_bomb_keras(tmp_path / "h5bomb.keras", model_file)
    with pytest.raises(untrusted.FileRefused, match="the weight arrays in model.weights.h5"):
        untrusted.read_keras_config(str(bomb))


def test_too_many_members_or_a_huge_config_are_refused(tmp_path, model_file, monkeypatch):
    many = tmp_path / "many.keras"
    with zipfile.ZipFile(model_file) as src, zipfile.ZipFile(many, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        for i in range(untrusted.MAX_ARCHIVE_MEMBERS):
            dst.writestr(f"assets/{i}", b"")
    with pytest.raises(untrusted.FileRefused, match="1003 files; a .keras archive holds a few"):
        untrusted.read_keras_config(str(many))
    monkeypatch.setattr(untrusted, "MAX_CONFIG_BYTES", 1000)
    with pytest.raises(untrusted.FileRefused, match=r"config.json in .* is [\d,]+ bytes"):
        untrusted.read_keras_config(model_file)


def test_config_must_be_an_object(tmp_path):
    path = tmp_path / "list.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps([1, 2]))
    with pytest.raises(untrusted.FileRefused, match="not a JSON object"):
        untrusted.read_keras_config(str(path))
