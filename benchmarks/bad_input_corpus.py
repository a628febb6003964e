"""The corpus of bad inputs of `fault_bad_inputs.py`: 100 damaged, unusual or mislabelled image
files (docs/RELIABILITY.md lists the kinds) and the writers that put them, next to 20 good
images, into an ImageFolder tree (with masks) and TFRecord shards.

    python benchmarks/bad_input_corpus.py   # prints the corpus as JSON: kinds, counts, files

Each input has an expectation: "invalid" (must be reported), "valid" (must be used, converted to
RGB with TF's pixels), "recoverable" (used or reported: damage only the full decoder finds) or
"mask" (the image is fine, its mask is not: used without masks, reported with them).
"""

from __future__ import annotations

import io
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _encode(array, fmt="PNG", mode=None, **kwargs):
    from PIL import Image
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _picture(seed, height=24, width=32):
    import numpy as np
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    return np.clip(base + rng.randint(-20, 20, [height, width, 3]), 0, 255).astype(np.uint8)


def _png16(seed, channels):
    import numpy as np
    import tensorflow as tf
    pixels = _picture(seed).astype(np.uint16) * 257
    return tf.io.encode_png(tf.constant(pixels[..., :channels])).numpy()


def _mask_png(height=24, width=32):
    import numpy as np
    mask = np.zeros([height, width], np.uint8)
    mask[4:20, 6:26] = 255
    return _encode(mask)


def _jpeg_segments_removed(data, marker):
    """The JPEG without its segments of type `marker` (e.g. 0xDB: quantisation tables)."""
    out, offset = bytearray(data[:2]), 2
    while offset < len(data) and data[offset + 1] != 0xDA:
        length = int.from_bytes(data[offset + 2:offset + 4], "big")
        if data[offset + 1] != marker:
            out += data[offset:offset + 2 + length]
        offset += 2 + length
    return bytes(out + data[offset:])


def _corrupt(data, start, count, seed):
    import numpy as np
    noise = np.random.RandomState(seed).randint(0, 256, count).astype(np.uint8).tobytes()
    return data[:start] + noise + data[start + count:]


def bad_corpus():
    """[(name, kind, expected, bytes, mask)]: expected "invalid" (reported), "valid" (used),
    "recoverable" (used or reported: damage only the full decoder finds) or "mask" (the image is
    fine, its mask is not: used without masks, reported with them); mask = PNG bytes, None
    (missing) or a wrong-size PNG."""
    import numpy as np
    good_mask = _mask_png()
    corpus = []

    def add(name, kind, expected, data, mask=good_mask):
        corpus.append((name, kind, expected, data, mask))

    for i, fraction in enumerate(np.linspace(0.05, 0.95, 10)):
        jpeg = _encode(_picture(100 + i), "JPEG")
        add(f"truncated_jpeg_{i}.jpg", "truncated JPEG", "invalid",
            jpeg[:int(len(jpeg) * fraction)])
    add("truncated_jpeg_soi_only.jpg", "truncated JPEG", "invalid", b"\xff\xd8\xff")
    jpeg = _encode(_picture(200), "JPEG")
    sof = jpeg.index(b"\xff\xc0")
    headers = [
        ("app0_length_zero", jpeg[:4] + b"\x00\x00" + jpeg[6:]),
        ("no_quantisation_table", _jpeg_segments_removed(jpeg, 0xDB)),
        ("frame_size_zero", jpeg[:sof + 5] + b"\x00\x00\x00\x00" + jpeg[sof + 9:]),
        ("garbage_after_soi", jpeg[:2] + b"\x00" * 64 + jpeg[66:]),
        ("segment_past_eof", jpeg[:4] + b"\xff\xff" + jpeg[6:]),
        ("no_scan", jpeg[:jpeg.index(b"\xff\xda")] + b"\xff\xd9"),
        ("header_zeroed", jpeg[:4] + b"\x00" * 100 + jpeg[104:]),
        ("no_frame_header", _jpeg_segments_removed(jpeg, 0xC0)),
    ]
    for name, data in headers:
        add(f"corrupt_jpeg_{name}.jpg", "corrupt JPEG header", "invalid", data)
    for i in range(2):  # 8 random bytes in the middle of the compressed data, headers intact
        jpeg = _encode(_picture(300 + i), "JPEG")
        scan = jpeg.index(b"\xff\xda") + 14
        add(f"corrupt_jpeg_scan_{i}.jpg", "corrupt JPEG data (scan)", "recoverable",
            _corrupt(jpeg, scan + (len(jpeg) - scan) // 2, 8, i))
    for i, cut in enumerate((12, 30, 100, 200, 400, 800, 1500, 2000)):
        png = _encode(_picture(400 + i))
        add(f"truncated_png_{i}.png", "truncated PNG", "invalid", png[:min(cut, len(png) - 13)])
    add("truncated_png_signature_only.png", "truncated PNG", "invalid", b"\x89PNG\r\n\x1a\n")
    png = _encode(_picture(500))
    idat = png.index(b"IDAT")
    corrupt_pngs = [
        ("idat_bytes", _corrupt(png, idat + 20, 40, 1)),
        ("idat_one_byte", png[:idat + 30] + bytes([png[idat + 30] ^ 0xFF]) + png[idat + 31:]),
        ("ihdr_bytes", _corrupt(png, 18, 4, 2)),
        ("signature", b"\x89PNX" + png[4:]),
        ("chunk_length", png[:idat - 4] + b"\x7f\xff\xff\xff" + png[idat:]),
        ("no_idat", png[:idat - 4] + png[png.index(b"IEND") - 4:]),
        ("crc_only", png[:idat + 4 + int.from_bytes(png[idat - 4:idat], "big")] + b"\0\0\0\0"
         + png[idat + 8 + int.from_bytes(png[idat - 4:idat], "big"):]),
        ("zeroed_middle", png[:len(png) // 3] + b"\x00" * 64 + png[len(png) // 3 + 64:]),
    ]
    for name, data in corrupt_pngs:
        add(f"corrupt_png_{name}.png", "corrupt PNG", "invalid", data)
    for i, suffix in enumerate((".jpg", ".jpeg", ".png", ".JPEG", ".PNG", ".gif", ".bmp", ".jpg")):
        add(f"zero_bytes_{i}{suffix}", "zero-byte file", "invalid", b"")
    others = [
        ("text.jpg", b"hello, I am not an image\n"),
        ("html.jpg", b"<html><body>404 Not Found</body></html>"),
        ("pdf.png", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n%%EOF"),
        ("zip.jpg", b"PK\x03\x04" + bytes(60)),
        ("random.png", np.random.RandomState(7).randint(0, 256, 3000).astype(np.uint8).tobytes()),
        ("json.jpeg", b'{"image": "elsewhere.jpg"}'),
        ("svg.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'),
        ("tiff.png", _encode(_picture(600), "TIFF")),
        ("mp4.jpg", b"\x00\x00\x00\x18ftypmp42" + bytes(100)),
        ("script.jpg", b"#!/bin/sh\necho hi\n"),
    ]
    for name, data in others:
        add(f"not_an_image_{name}", "not an image (image name)", "invalid", data)
    valid = [
        ("cmyk_{}.jpg", "CMYK JPEG", lambda s: _encode(_picture(s), "JPEG", "CMYK"), 6),
        ("grey_jpeg_{}.jpg", "greyscale JPEG", lambda s: _encode(_picture(s)[..., 0], "JPEG"),
         3),
        ("grey_png_{}.png", "greyscale PNG", lambda s: _encode(_picture(s)[..., 0]), 3),
        ("rgba_{}.png", "RGBA PNG", lambda s: _encode(_picture(s), mode="RGBA"), 4),
        ("grey_alpha_{}.png", "greyscale+alpha PNG", lambda s: _encode(_picture(s), mode="LA"), 2),
        ("png16_grey_{}.png", "16-bit greyscale PNG", lambda s: _png16(s, 1), 3),
        ("png16_rgb_{}.png", "16-bit RGB PNG", lambda s: _png16(s, 3), 3),
        ("palette_{}.png", "palette PNG", lambda s: _encode(_picture(s), mode="P"), 2),
        ("gif_named_{}.jpg", "GIF with a .jpg name", lambda s: _encode(_picture(s), "GIF"), 2),
        ("webp_named_{}.jpg", "WebP with a .jpg name", lambda s: _encode(_picture(s), "WEBP",
                                                                          lossless=True), 1),
        ("bmp_named_{}.png", "BMP with a .png name", lambda s: _encode(_picture(s), "BMP"), 1),
    ]
    for pattern, kind, make, count in valid:
        for i in range(count):
            add(pattern.format(i), kind, "valid", make(700 + len(corpus)))
    # Damage TF's decoder reads through (e.g. an APP0 segment of length 0) leaves an image:
    # either outcome, used or reported, is right.
    return [(name, kind, "recoverable" if expected == "invalid" and expected_pixels(data)
             is not None else expected, data, mask)
            for name, kind, expected, data, mask in corpus + _mask_corpus()]


def _mask_corpus():
    corpus = []

    def add(name, kind, expected, data, mask):
        corpus.append((name, kind, expected, data, mask))

    for i in range(8):
        height, width = [(24, 31), (23, 32), (32, 24), (12, 16), (48, 64), (1, 1), (24, 33),
                         (25, 32)][i]
        add(f"mask_wrong_size_{i}.png", "mask of the wrong size", "mask",
            _encode(_picture(800 + i)), _mask_png(height, width))
    for i in range(6):
        add(f"mask_missing_{i}.{'png' if i % 2 else 'jpg'}", "missing mask", "mask",
            _encode(_picture(900 + i), "PNG" if i % 2 else "JPEG"), None)
    return corpus


NUM_GOOD = 20


def write_image_folder(root, corpus):
    """<root>/images/{good,bad}/<name>, masks <root>/masks/<class>/<stem>.png."""
    for i in range(NUM_GOOD):
        path = root / "images" / "good" / f"good_{i:02d}.{'jpg' if i % 2 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_encode(_picture(i), "JPEG" if i % 2 else "PNG"))
        mask = root / "masks" / "good" / f"good_{i:02d}.png"
        mask.parent.mkdir(parents=True, exist_ok=True)
        mask.write_bytes(_mask_png())
    (root / "images" / "bad").mkdir(parents=True, exist_ok=True)
    (root / "masks" / "bad").mkdir(parents=True, exist_ok=True)
    for name, _, _, data, mask in corpus:
        (root / "images" / "bad" / name).write_bytes(data)
        if mask is not None:
            (root / "masks" / "bad" / f"{os.path.splitext(name)[0]}.png").write_bytes(mask)


def write_tfrecords(root, corpus, skip_names=()):
    import tensorflow as tf

    from relicv2_tf.data import tfrecord_format
    root.mkdir(parents=True, exist_ok=True)
    records = [(f"good/good_{i:02d}", _encode(_picture(i), "JPEG" if i % 2 else "PNG"),
                _mask_png()) for i in range(NUM_GOOD)]
    records += [(f"bad/{name}", data, mask or b"") for name, _, _, data, mask in corpus
                if name not in skip_names]
    for shard in range(2):
        with tf.io.TFRecordWriter(str(root / f"data-{shard}.tfrecord")) as writer:
            for example_id, image, mask in records[shard::2]:
                writer.write(tfrecord_format.encode_example(image, example_id, 0, mask))
    return str(root / "data-*.tfrecord")

def expected_pixels(data):
    """TF's decode of the bytes (the reference for "converted correctly"); None if it fails."""
    import tensorflow as tf
    try:
        return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except tf.errors.InvalidArgumentError:
        return None



def main():
    corpus = bad_corpus()
    kinds = {}
    for name, kind, expected, data, mask in corpus:
        entry = kinds.setdefault(kind, {"count": 0, "expected": {}})
        entry["count"] += 1
        entry["expected"][expected] = entry["expected"].get(expected, 0) + 1
    print(json.dumps({
        "benchmark": "bad_input_corpus", "corpus": len(corpus), "good_images": NUM_GOOD,
        "kinds": kinds,
        "files_columns": ["name", "kind", "expected", "bytes", "mask"],
        "files": [[name, kind, expected, len(data),
                   "missing" if mask is None else f"{len(mask)} bytes"]
                  for name, kind, expected, data, mask in corpus],
    }, indent=1))


if __name__ == "__main__":
    main()
