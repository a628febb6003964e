"""The TFRecord example layout shared by mask generation and the data pipeline.

Features: `image` (encoded JPEG/PNG bytes), `mask` (PNG bytes, uint8 single channel, 0-255,
same height/width as the image; optional: empty bytes when absent), `label` (int64, -1 when
unknown), `id` (bytes, unique per example; masks are joined to images by this id).
"""

from __future__ import annotations

import tensorflow as tf

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "mask": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "id": tf.io.FixedLenFeature([], tf.string),
}


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def encode_example(image: bytes, example_id: bytes | str, label: int = -1,
                   mask: bytes = b"") -> bytes:
    """Serialises one example; `image` and `mask` are already-encoded bytes."""
    if isinstance(example_id, str):
        example_id = example_id.encode("utf-8")
    feature = {
        "image": _bytes(image),
        "mask": _bytes(mask),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "id": _bytes(example_id),
    }
    # deterministic: map entries sorted by key (upb orders them differently in every process)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True)


def encode_mask_png(mask) -> bytes:
    """Float mask in [0, 1] or uint8 [H, W] / [H, W, 1] -> PNG bytes (uint8 single channel)."""
    mask = tf.convert_to_tensor(mask)
    if mask.dtype != tf.uint8:
        mask = tf.cast(tf.round(tf.clip_by_value(tf.cast(mask, tf.float32), 0.0, 1.0) * 255.0),
                       tf.uint8)
    if mask.shape.rank == 2:
        mask = mask[..., None]
    return tf.io.encode_png(mask).numpy()


def parse_example(serialized):
    """Serialized tf.train.Example -> {image: bytes, mask: bytes, label: int64, id: bytes}."""
    return tf.io.parse_single_example(serialized, FEATURES)
