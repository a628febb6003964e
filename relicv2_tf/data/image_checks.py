"""Is it a complete image? One format table, read by a Python check and by an in-graph check.

`SIGNATURES` says how each accepted format starts, `END_MARKERS` how a complete file of it ends.
Nothing is decoded; every check returns a reason ('' = fine):
  Python, before the graph is built (ImageFolder files, `check_image_file`): JPEG segments up to
      the scan, PNG chunks and their CRCs, the signature of the other formats; masks
      (`check_mask_file`): present, complete PNG, the image's size.
  In the graph, cheap byte comparisons on encoded strings (TFRecord examples, `bytes_problem`,
      `mask_bytes_problem`): signature, end marker, mask present and a PNG; `mask_size_problem`:
      the sizes in the JPEG / PNG headers.
"""

from __future__ import annotations

import os
import struct
import zlib

import tensorflow as tf

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (format, signature): bytes are of `format` when they match every (offset, bytes) pair of one
# of its rows.
SIGNATURES = (
    ("JPEG", ((0, JPEG_MAGIC),)),
    ("PNG", ((0, PNG_MAGIC),)),
    ("GIF", ((0, b"GIF87a"),)),
    ("GIF", ((0, b"GIF89a"),)),
    ("BMP", ((0, b"BM"),)),
    ("WebP", ((0, b"RIFF"), (8, b"WEBP"))),
)
FORMATS = tuple(dict.fromkeys(name for name, _ in SIGNATURES))
HEAD_BYTES = max(offset + len(part) for _, signature in SIGNATURES for offset, part in signature)
# A complete file of these formats has this marker within its last TAIL_BYTES bytes.
END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
TAIL_BYTES = 16
NOT_AN_IMAGE = "not a " + "/".join(FORMATS)


# ---------------------------------------------------------------------------------------------
# Python, on files.


def image_format(head: bytes) -> str:
    """The format (a name of FORMATS) of bytes starting with `head`; '' for none."""
    for name, signature in SIGNATURES:
        if all(head[offset:offset + len(part)] == part for offset, part in signature):
            return name
    return ""


def check_image_file(path: str):
    """('' or why the file is not a complete image, (height, width) or None), from the file's
    structure, without decoding it: JPEG: its end-of-image marker and every segment up to the
    scan (lengths inside the file, a quantisation table and a frame header present); PNG: every
    chunk with its CRC, IHDR first and IEND last (the whole file is read); GIF, BMP and WebP:
    their signature."""
    size = os.path.getsize(path)
    if size == 0:
        return "empty file", None
    with open(path, "rb") as f:
        kind = image_format(f.read(HEAD_BYTES))
        if kind == "JPEG":
            return _check_jpeg(f, size)
        if kind == "PNG":
            f.seek(0)
            return _check_png(f.read())
    if kind:
        return "", None
    return f"{NOT_AN_IMAGE} file", None


def _check_jpeg(f, size):
    f.seek(max(0, size - TAIL_BYTES))
    if END_MARKERS["JPEG"] not in f.read(TAIL_BYTES):
        return "truncated JPEG (no end-of-image marker)", None
    offset, kinds, height_width = 2, set(), None
    while True:
        f.seek(offset)
        segment = f.read(9)
        if len(segment) < 4 or segment[0] != 0xFF:
            return f"corrupt JPEG header (no segment marker at byte {offset})", None
        kind = segment[1]
        if kind == 0xFF:  # fill byte
            offset += 1
            continue
        if kind == 0xDA:  # start of scan: the compressed data follow
            break
        if kind == 0x01 or 0xD0 <= kind <= 0xD8:  # markers without a length
            offset += 2
            continue
        length = struct.unpack(">H", segment[2:4])[0]
        if length < 2 or offset + 2 + length > size:
            return f"corrupt JPEG header (segment at byte {offset} has length {length})", None
        if _is_frame_header(kind):
            height_width = struct.unpack(">HH", segment[5:9])
            if min(height_width) == 0:
                return f"corrupt JPEG header (frame size {height_width})", None
            kinds.add("frame")
        kinds.add(kind)
        offset += 2 + length
    if 0xDB not in kinds:
        return "corrupt JPEG header (no quantisation table before the scan)", None
    if "frame" not in kinds:
        return "corrupt JPEG header (no frame header before the scan)", None
    return "", tuple(int(v) for v in height_width)


def _check_png(data: bytes):
    offset, kinds = len(PNG_MAGIC), []
    while offset < len(data) and (not kinds or kinds[-1] != b"IEND"):
        if offset + 12 > len(data):
            return "truncated PNG (no IEND chunk)", None
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        end = offset + 12 + length
        if end > len(data):
            return f"truncated PNG (chunk {kind!r} ends past the end of the file)", None
        if zlib.crc32(data[offset + 4:end - 4]) != struct.unpack(">I", data[end - 4:end])[0]:
            return f"corrupt PNG (chunk {kind!r} at byte {offset} fails its CRC)", None
        kinds.append(kind)
        offset = end
    if not kinds or kinds[-1] != b"IEND":
        return "truncated PNG (no IEND chunk)", None
    if kinds[0] != b"IHDR" or b"IDAT" not in kinds:
        return "corrupt PNG (no IHDR header or no image data)", None
    return "", _png_size(data)


def _png_size(data: bytes):
    """(height, width) from a PNG's IHDR chunk (bytes 16-24)."""
    width, height = struct.unpack(">II", data[16:24])
    return int(height), int(width)


def _is_frame_header(marker: int) -> bool:
    """A JPEG start-of-frame marker (SOFn: 0xC0-0xCF but DHT, JPG and DAC), which holds the size."""
    return 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)


def check_mask_file(mask_path, example_id, image_hw):
    """'' or why `mask_path` is no usable mask of the image of size `image_hw` (None: unknown)."""
    if not os.path.exists(mask_path):
        return (f"missing mask for id {example_id!r} (expected {mask_path}; fix data.mask_dir "
                "or generate the mask)")
    with open(mask_path, "rb") as f:
        is_png = image_format(f.read(HEAD_BYTES)) == "PNG"
    reason, mask_hw = check_image_file(mask_path) if is_png else ("not a PNG", None)
    if reason:
        return f"mask {mask_path}: {reason}"
    if image_hw is not None and mask_hw != image_hw:
        return f"mask size {mask_hw} != image size {image_hw} for id {example_id!r}"
    return ""


def image_size_from_bytes(data: bytes):
    """(height, width) from a PNG or JPEG header without decoding; None if not found."""
    kind = image_format(data[:HEAD_BYTES])
    if kind == "PNG" and len(data) >= 24:
        return _png_size(data)
    if kind == "JPEG":
        offset = 2
        while offset + 9 < len(data):
            if data[offset] != 0xFF:
                offset += 1
                continue
            marker = data[offset + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                offset += 1 if marker == 0xFF else 2
                continue
            length = struct.unpack(">H", data[offset + 2:offset + 4])[0]
            if _is_frame_header(marker):
                height, width = struct.unpack(">HH", data[offset + 5:offset + 9])
                return int(height), int(width)
            offset += 2 + length
    return None


# ---------------------------------------------------------------------------------------------
# In the graph, on encoded strings.


def _is_format(head, name):
    """In-graph `image_format(head) == name`; `head` holds at least HEAD_BYTES bytes."""
    return tf.reduce_any([
        tf.reduce_all([tf.strings.substr(head, offset, len(part)) == part
                       for offset, part in signature])
        for format_name, signature in SIGNATURES if format_name == name])


def bytes_problem(encoded):
    """In-graph, cheap part of `check_image_file`: '' or the reason the bytes are no image."""
    # Zero padding keeps every fixed-position read inside the string (substr fails past its end)
    # and cannot complete a signature or an end marker.
    padded = tf.strings.join([encoded, b"\0" * max(HEAD_BYTES, TAIL_BYTES)])
    length = tf.strings.length(encoded)
    head = tf.strings.substr(padded, 0, HEAD_BYTES)
    tail = tf.strings.substr(padded, tf.maximum(length - TAIL_BYTES, 0), TAIL_BYTES)
    is_format = {name: _is_format(head, name) for name in FORMATS}
    reason = tf.constant("")
    for name, marker in END_MARKERS.items():
        reason = tf.where(is_format[name] & ~_contains(tail, marker), f"truncated {name}",
                          reason)
    # After SOI, a JPEG goes on with a segment marker (0xC0-0xFE: APPn, DQT, SOFn, DHT, COM...).
    first_marker = tf.io.decode_raw(tf.strings.substr(head, 3, 1), tf.uint8)[0]
    reason = tf.where(is_format["JPEG"] & (first_marker < 0xC0), "corrupt JPEG header", reason)
    reason = tf.where(~tf.reduce_any(list(is_format.values())), f"{NOT_AN_IMAGE} image", reason)
    return tf.where(length == 0, "empty image", reason)


def _contains(data, needle: bytes):
    """Whether the TAIL_BYTES-byte string `data` contains `needle` (byte-exact, no regex)."""
    positions = tf.range(TAIL_BYTES - len(needle) + 1)
    windows = tf.strings.substr(tf.fill(tf.shape(positions), data), positions,
                                tf.fill(tf.shape(positions), len(needle)))
    return tf.reduce_any(windows == needle)


def mask_bytes_problem(encoded_mask):
    """In-graph, cheap part of `check_mask_file`: '' or why the bytes are no PNG mask."""
    head = tf.strings.substr(tf.strings.join([encoded_mask, b"\0" * HEAD_BYTES]), 0, HEAD_BYTES)
    return tf.where(tf.strings.length(encoded_mask) == 0, "missing mask",
                    tf.where(_is_format(head, "PNG"), "", "mask is not a PNG"))


def _png_hw(encoded):
    """int64 [height, width] from a PNG's IHDR chunk (bytes 16-24), without decoding."""
    header = tf.strings.substr(tf.strings.join([encoded, b"\0" * 24]), 16, 8)
    values = tf.cast(tf.io.decode_raw(header, tf.uint8), tf.int64)
    width, height = [values[i] * 2**24 + values[i + 1] * 2**16 + values[i + 2] * 2**8 +
                     values[i + 3] for i in (0, 4)]
    return tf.stack([height, width])


def _header_hw(encoded):
    """int64 [height, width] of an encoded JPEG or PNG from its header; [-1, -1] otherwise."""
    head = tf.strings.substr(tf.strings.join([encoded, b"\0" * HEAD_BYTES]), 0, HEAD_BYTES)
    return tf.cond(
        _is_format(head, "JPEG"), lambda: tf.cast(tf.io.extract_jpeg_shape(encoded)[:2], tf.int64),
        lambda: tf.cond(_is_format(head, "PNG"), lambda: _png_hw(encoded),
                        lambda: tf.constant([-1, -1], tf.int64)))


def mask_size_problem(raw):
    """"mask size != image size" from the headers (JPEG, PNG images) of a record's encoded
    `image` and `mask`, else ''."""
    image_hw = _header_hw(raw["image"])
    mismatch = (image_hw[0] >= 0) & tf.reduce_any(image_hw != _png_hw(raw["mask"]))
    return tf.where(mismatch, "mask size != image size", "")
