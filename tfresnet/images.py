"""Images from untrusted bytes, and the evaluation view of images.

A 38-byte WebP can declare 10000 x 10000 pixels: every file's format and size are read from its
header and checked (`accepted`) before a decoder allocates anything. The checks are TF ops, so
they also hold inside a served SavedModel. `center_crop` is the one evaluation view, shared by
the evaluation pipeline and the served model.
"""

import contextlib
import os
import re
import sys
import tempfile

import tensorflow as tf

from tfresnet.untrusted import FileRefused

MAX_PIXELS = 40_000_000  # 40 megapixels: any real photo; a 12000 x 12000 bomb is 144M
MAX_IMAGE_BYTES = 256 << 20  # an encoded image file; a 40 MP photo is a few tens of MB
# Steps of the in-graph header walks: they bound the work a crafted file can cause.
JPEG_MAX_STEPS = 1 << 13  # marker segments (and runs of stray bytes) before the first SOF
GIF_MAX_STEPS = 1 << 16  # blocks, and sub-blocks shorter than 255 bytes, of all frames
IMAGE_CHANNELS = (1, 3)  # what images decode to for a model: grey or RGB
ACCEPTED_FORMATS = "JPEG, PNG, GIF, BMP or WebP"
# Codes of `image_format`, in the order TensorFlow's decoder classifies bytes.
UNKNOWN, JPEG, PNG, GIF, BMP, WEBP, JPEG_XL = range(7)
FORMAT_NAMES = ("unknown", "JPEG", "PNG", "GIF", "BMP", "WebP", "JPEG XL")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
CROP_RATIO = 256 / 224  # ImageNet evaluation: the shorter side to size * 256/224, then the centre


def read_image_file(path: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of the image file at `path`; one larger than `max_bytes` is refused, unread
    (FileRefused without the path: the caller reports it with the file's name)."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileRefused(f"more than {max_bytes:,} bytes: too large for an image file")
    return data


def image_format(data: tf.Tensor) -> tf.Tensor:
    """int32 code (UNKNOWN, JPEG, ...) of encoded bytes, classified as TensorFlow's decoder
    does (tensorflow/core/kernels/image/decode_image_op.cc, ClassifyFileFormat)."""
    padded = tf.strings.join([data, b"\0" * 16])  # substr must not start past the end

    def starts(magic):
        return tf.equal(tf.strings.substr(padded, 0, len(magic)), magic)

    webp = tf.logical_and(
        tf.logical_and(starts(b"RIFF"), tf.strings.length(data) > 12),
        tf.equal(tf.strings.substr(padded, 8, 4), b"WEBP"),
    )
    cases = [
        (starts(b"\xff\xd8\xff"), JPEG),
        (starts(_PNG_MAGIC), PNG),
        (starts(b"GIF8"), GIF),
        (starts(b"BM"), BMP),
        (webp, WEBP),
        (tf.logical_or(starts(b"\xff\x0a"), starts(_JXL_CONTAINER)), JPEG_XL),
    ]
    code = tf.constant(UNKNOWN)
    for condition, value in reversed(cases):  # the first match wins
        code = tf.where(condition, tf.constant(value), code)
    return code


def pixel_count(data: tf.Tensor, fmt: tf.Tensor | None = None) -> tf.Tensor:
    """int64: the pixels TensorFlow's decoder will allocate for `data`, read from its headers
    (for a GIF the larger of the screen and all frames together); -1 for unknown formats,
    JPEG XL and damaged headers. No decoder runs."""
    fmt = image_format(data) if fmt is None else fmt
    none = tf.constant(-1, tf.int64)

    def jpeg():
        height, width, _ = tf.unstack(jpeg_header(data))
        return tf.where(height < 0, none, height * width)

    def png():
        byte, n = _reader(data)
        return tf.where(n >= 24, _number(byte, 16, 4, True) * _number(byte, 20, 4, True), none)

    def bmp():
        byte, n = _reader(data)
        width, height = _signed32(_number(byte, 18, 4)), _signed32(_number(byte, 22, 4))
        return tf.where(n >= 26, tf.abs(width) * tf.abs(height), none)

    branches = {JPEG: jpeg, PNG: png, GIF: lambda: _gif_pixels(data), BMP: bmp}
    branches[WEBP] = lambda: _webp_pixels(data)
    return _switch_format(fmt, branches, lambda: none)


def accepted(data: tf.Tensor, max_pixels: int | None = None) -> tf.Tensor:
    """`data`, gated on an assertion that it is a JPEG, PNG, GIF, BMP or WebP whose header holds
    a size of at most `max_pixels` (default MAX_PIXELS): run before any decoder sees it."""
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    fmt = image_format(data)
    pixels = pixel_count(data, fmt)
    damaged = " header too short, damaged or too intricate: its size cannot be read before decoding"
    reasons = [
        (tf.equal(fmt, UNKNOWN), f"Unknown image file format: send {ACCEPTED_FORMATS}"),
        (
            tf.equal(fmt, JPEG_XL),
            "JPEG XL images are not accepted (their size cannot be read before decoding); "
            f"send {ACCEPTED_FORMATS}",
        ),
        (pixels < 0, tf.strings.join([tf.gather(FORMAT_NAMES, fmt), damaged])),
        (
            pixels > limit,
            tf.strings.format(
                "image too large: {} pixels, more than {} (the size in its header; for a GIF, "
                "all frames together)",
                (pixels, limit),
            ),
        ),
    ]
    reason = tf.constant("")
    for condition, text in reversed(reasons):  # the first that holds is the reason
        reason = tf.where(condition, text, reason)
    with tf.control_dependencies([tf.debugging.Assert(tf.equal(reason, ""), [reason])]):
        return tf.identity(data)


def decode_image(data: tf.Tensor, channels: int, max_pixels: int | None = None) -> tf.Tensor:
    """uint8 [height, width, channels] (channels 1 or 3) of one encoded image, decoded only
    once `accepted`. GIF, BMP, WebP and CMYK JPEG have no grey decoder in TF:
    they are decoded as RGB and converted; alpha is dropped."""
    if channels not in IMAGE_CHANNELS:
        raise ValueError(f"channels must be 1 or 3; got {channels!r}.")
    data = accepted(data, max_pixels)
    fmt = image_format(data)

    def decode(depth):
        return tf.io.decode_image(data, channels=depth, dtype=tf.uint8, expand_animations=False)

    def to_channels(rgb):
        rgb.set_shape([None, None, 3])
        return rgb if channels == 3 else tf.image.rgb_to_grayscale(rgb)

    def webp():
        return to_channels(decode(0)[..., :3])

    def jpeg():
        if channels == 3:
            return decode(3)
        cmyk = tf.equal(jpeg_header(data)[2], 4)
        return tf.cond(cmyk, lambda: to_channels(decode(3)), lambda: decode(1))

    rgb_only = (lambda: to_channels(decode(3))) if channels == 1 else (lambda: decode(3))
    image = _switch_format(
        fmt, {JPEG: jpeg, GIF: rgb_only, BMP: rgb_only, WEBP: webp}, lambda: decode(channels)
    )  # the default: PNG
    image.set_shape([None, None, channels])
    return image


def image_shapes(
    paths: list[str], max_pixels: int | None = None, max_bytes: int = MAX_IMAGE_BYTES
) -> list[tuple[int, int, int] | str]:
    """For each image file in `paths`: its stored (height, width, channels), or why it cannot
    be used (one line). Each file is checked (`accepted`) and then decoded, all
    in one tf.data pass: a folder scanned before training has no file that fails mid-epoch."""
    results = [None] * len(paths)
    for i, path in enumerate(paths):
        size = os.path.getsize(path)
        if size > max_bytes:
            results[i] = f"{size:,} bytes, more than {max_bytes:,}"
    readable = [i for i, result in enumerate(results) if result is None]

    def measure(path):
        data = accepted(tf.io.read_file(path), max_pixels)
        return tf.shape(tf.io.decode_image(data, expand_animations=False))

    names = tf.constant([os.fsencode(paths[i]) for i in readable], tf.string)  # need not be UTF-8
    files = tf.data.Dataset.from_tensor_slices(names)
    shapes = iter(files.map(measure, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    with decoder_messages([]):  # libjpeg's lines: each file they are about is in `results`
        for i in readable:  # an element that fails raises; the iterator goes on to the next
            try:
                results[i] = tuple(int(d) for d in next(shapes))
            except tf.errors.OpError as err:
                results[i] = error_line(err)
    return results


def error_line(error: BaseException) -> str:
    """The one line of a TF or OS error that says what was wrong (no node names, no traces;
    a failed `tf.debugging.Assert`'s own message)."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    noise = ("Graph execution error", "Detected at node", "<stack traces", "File ", "[[{{")
    lines = [line.strip() for line in str(getattr(error, "message", error)).splitlines()]
    useful = [line for line in lines if line and not line.startswith(noise)]
    if not useful:
        return str(error)
    first = useful[0].split("}}")[-1].strip()  # without a "{{function_node ...}}" prefix
    first = re.sub(r"^Error in user-defined function .*?Iterator::\S+: ", "", first)  # tf.data
    summarized = re.search(r"Summarized data: b'(.*)'$", first)  # an eager tf.debugging.Assert
    if summarized:
        return summarized.group(1).strip().rstrip(".")
    asserted = re.match(r"assertion failed: \[([^\]]*)\]", first)
    if asserted:
        return asserted.group(1).strip().rstrip(".")
    return re.sub(r"\s*\[Op:[^\]]*\]$", "", first)


_LOG_LINE = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d")  # TensorFlow's (absl's) log lines


@contextlib.contextmanager
def decoder_messages(said: list[str]):
    """Within the block, the lines native decoders write to fd 2 themselves (libjpeg: "Bogus
    Huffman table definition") go into `said`, for the error of the file they are about;
    TensorFlow's log lines (with their tab-indented continuations) are written on after it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            logged, in_log = [], False
            for line in capture.read().decode(errors="replace").splitlines():
                in_log = bool(_LOG_LINE.match(line)) or (in_log and line.startswith("\t"))
                if in_log:
                    logged.append(line)
                elif line.strip():
                    said.append(line.strip())
            sys.stderr.write("".join(f"{line}\n" for line in logged))


def _switch_format(fmt, branches, default):
    """tf.switch_case on a format code: `branches` {code: fn}, `default` for the other codes."""
    every = [branches.get(code, default) for code in range(len(FORMAT_NAMES))]
    return tf.switch_case(tf.cast(fmt, tf.int32), every, default=default)


def _reader(data):
    """(byte, n): byte(i) is data[i] as int64, 0 past the end (no length check needed); n the
    length."""
    raw = tf.concat([tf.io.decode_raw(data, tf.uint8), tf.zeros([1], tf.uint8)], 0)
    n = tf.size(raw, out_type=tf.int64) - 1

    def byte(i):
        return tf.cast(tf.gather(raw, tf.minimum(tf.cast(i, tf.int64), n)), tf.int64)

    return byte, n


def _first(byte, start, stride, compare, value, count=1024):
    """The first of start, start + stride, ... (count of them) whose byte `compare`s true to
    `value`, else the one after the last: a vectorised stretch of a sequential walk."""
    ahead = start + stride * tf.range(count, dtype=tf.int64)
    hits = compare(byte(ahead), value)
    first = tf.argmax(tf.cast(hits, tf.int32), output_type=tf.int64)
    return start + stride * tf.where(tf.reduce_any(hits), first, count)


def _number(byte, offset, length, big_endian=False):
    """The unsigned integer of `length` bytes at `offset`."""
    value = 0
    for k in range(length):
        value += byte(offset + k) * (256 ** (length - 1 - k if big_endian else k))
    return value


def _signed32(value):
    return value - (value // (1 << 31)) * (1 << 32)  # two's complement: BMP heights may be < 0


def jpeg_header(data: tf.Tensor) -> tf.Tensor:
    """int64 [height, width, components] from a JPEG's first SOF segment, walking its marker
    segments as libjpeg does; [-1, -1, -1] when the header ends or the scan starts first."""
    byte, n = _reader(data)

    def is_sof(marker):  # SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC)
        kind = marker - 0xC0
        return tf.logical_and(
            tf.logical_and(kind >= 0, kind <= 15),
            tf.logical_and(tf.logical_and(kind != 4, kind != 8), kind != 12),
        )

    def step(pos, sof):
        marked = tf.equal(byte(pos), 0xFF)
        marker = byte(pos + 1)
        standalone = tf.logical_or(
            tf.logical_and(marker >= 0xD0, marker <= 0xD8), tf.equal(marker, 0x01)
        )
        after = tf.where(standalone, pos + 2, pos + 2 + _number(byte, pos + 2, 2, True))
        after = tf.where(tf.equal(marker, 0xFF), pos + 1, after)  # fill byte before a marker
        after = tf.where(marked, after, _first(byte, pos, 1, tf.equal, 0xFF))  # junk, skipped
        ends = tf.logical_or(tf.equal(marker, 0xDA), tf.equal(marker, 0xD9))  # SOS, EOI
        found = tf.logical_and(marked, is_sof(marker))
        after = tf.where(tf.logical_or(found, tf.logical_and(marked, ends)), n, after)
        return after, tf.where(found, pos, sof)

    _, sof = tf.while_loop(
        lambda pos, sof: pos < n,
        step,
        (tf.constant(2, tf.int64), tf.constant(-1, tf.int64)),
        maximum_iterations=JPEG_MAX_STEPS,
    )
    shape = tf.stack(
        [_number(byte, sof + 5, 2, True), _number(byte, sof + 7, 2, True), byte(sof + 9)]
    )
    return tf.where(tf.logical_and(sof >= 0, sof + 10 <= n), shape, tf.constant(-1, tf.int64))


def _webp_pixels(data):
    """Canvas pixels of a WebP: its first chunk is VP8X (extended; frames and the image must
    fit its canvas, libwebp checks), VP8L (lossless) or VP8 (lossy)."""
    byte, n = _reader(data)
    chunk = tf.strings.substr(data, 12, 4)  # the RIFF header (12 bytes) is there: it is WebP
    bits = _number(byte, 21, 4)
    sizes = {
        b"VP8X": (30, (_number(byte, 24, 3) + 1) * (_number(byte, 27, 3) + 1)),
        b"VP8L": (25, (bits % (1 << 14) + 1) * (bits // (1 << 14) % (1 << 14) + 1)),
        b"VP8 ": (30, (_number(byte, 26, 2) % (1 << 14)) * (_number(byte, 28, 2) % (1 << 14))),
    }
    pixels = tf.constant(-1, tf.int64)
    for name, (needed, value) in sizes.items():
        pixels = tf.where(tf.logical_and(tf.equal(chunk, name), n >= needed), value, pixels)
    return pixels


def _gif_pixels(data):
    """max(screen, all frames together) of a GIF, walking its blocks: 0x2C an image
    (descriptor, colour table, sub-blocks), 0x21 an extension, anything else the end.
    -1 past GIF_MAX_STEPS steps."""
    byte, n = _reader(data)

    def colour_table(flags):  # 3 * 2^(size + 1) bytes when the table flag (bit 7) is set
        return tf.where(
            flags >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags % 8), 0
        )

    def sub_blocks(pos, steps):  # past the sub-blocks (and their 0 terminator) from pos
        def step(p, size, steps):
            # Encoders write full 255-byte sub-blocks: cross a run of them in one step.
            after = tf.cond(
                tf.equal(size, 255),
                lambda: _first(byte, p, 256, tf.not_equal, 255),
                lambda: p + 1 + size,
            )
            return after, byte(after), steps + 1

        end, _, steps = tf.while_loop(
            lambda p, size, steps: tf.logical_and(size > 0, steps < GIF_MAX_STEPS),
            step,
            (pos, byte(pos), steps),
        )
        return end + 1, steps

    def block(pos, frames, steps):
        kind = byte(pos)
        image = tf.logical_and(tf.equal(kind, 0x2C), pos + 10 <= n)
        frame = tf.where(image, _number(byte, pos + 5, 2) * _number(byte, pos + 7, 2), 0)
        data = tf.where(image, pos + 11 + colour_table(byte(pos + 9)), pos + 2)
        after, steps = sub_blocks(data, steps + 1)
        more = tf.logical_or(image, tf.equal(kind, 0x21))  # else the trailer (or junk): done
        return tf.where(more, after, n), frames + frame, steps

    start = 13 + colour_table(byte(10))
    zero = tf.constant(0, tf.int64)
    _, frames, steps = tf.while_loop(
        lambda pos, frames, steps: tf.logical_and(pos < n, steps < GIF_MAX_STEPS),
        block,
        (start, zero, zero),
    )
    screen = _number(byte, 6, 2) * _number(byte, 8, 2)
    whole = tf.logical_and(n >= 13, steps < GIF_MAX_STEPS)
    return tf.where(whole, tf.maximum(screen, frames), tf.constant(-1, tf.int64))


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
