"""Evaluation preprocessing (ReLICv2 appendix B.2, the SimCLR/BYOL linear protocol).

Test: resize the shorter side to 256 with bicubic interpolation, centre crop 224, normalise.
Linear-eval training: random resized crop (area 8-100 %, aspect 3/4-4/3) to 224 + random flip.
"""

from __future__ import annotations

import tensorflow as tf

from relicv2_tf.data import augment, normalize

EVAL_CROP_RATIO = 224 / 256  # centre crop / resized shorter side of the standard protocol


def eval_resize_size(image_size: int) -> int:
    """Shorter-side resize for a centre crop of `image_size` (256 for 224, ratio kept otherwise)."""
    return int(round(image_size / EVAL_CROP_RATIO))


def resize_shorter_side(image, size: int):
    """Bicubic resize so that min(H, W) == size, keeping the aspect ratio."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_hw = tf.cast(tf.round(tf.stack([height * scale, width * scale])), tf.int32)
    new_hw = tf.maximum(new_hw, size)
    return tf.image.resize(image, new_hw, method="bicubic")


def center_crop(image, size: int):
    shape = tf.shape(image)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    return image[top:top + size, left:left + size, :]


def eval_geometry(image, image_size: int = 224, resize_size: int | None = None):
    """Resize the shorter side (bicubic) + centre crop; [H, W, 3] -> [S, S, 3] float in [0, 1]."""
    image = normalize.to_unit_float(image)
    image = resize_shorter_side(image, resize_size or eval_resize_size(image_size))
    image = center_crop(image, image_size)
    image = tf.clip_by_value(image, 0.0, 1.0)  # bicubic overshoots
    return tf.ensure_shape(image, [image_size, image_size, 3])


def preprocess_for_eval(image, image_size: int = 224, resize_size: int | None = 256):
    """One decoded image [H, W, 3] (uint8, or float in [0, 1]) -> normalised [S, S, 3] float32.

    resize_size=None keeps the protocol's crop ratio 224 / 256 for other image sizes.
    """
    return normalize.normalize_images(eval_geometry(image, image_size, resize_size))


def preprocess_for_linear_train(image, seed, image_size: int = 224,
                                area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3)):
    """Random resized crop (bicubic, log-uniform aspect) + horizontal flip, stateless under `seed`
    (shape [2] int); the same ops as the pretraining views (`augment`)."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = augment.random_resized_crop(image, crop_seed, image_size, area_range,
                                        aspect_ratio_range)
    image = augment.random_flip(image, flip_seed)
    return normalize.normalize_images(image)
