"""Pixel scales: uint8 -> [0, 1] (`to_unit_float`) and ImageNet colour normalisation, the one
place that defines each.

Every pipeline (pretraining views, evaluation, serving) ends with `normalize_images`; models
consume normalised images.
"""

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, images in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit_float(image):
    """uint8 [0, 255] -> float32 [0, 1]; floats are taken to be in [0, 1] already."""
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def normalize_images(images):
    """(x - mean) / std per RGB channel; `images` float in [0, 1], any leading dims."""
    images = tf.convert_to_tensor(images, tf.float32)
    return (images - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def denormalize_images(images):
    """Inverse of `normalize_images` (for figures)."""
    images = tf.convert_to_tensor(images, tf.float32)
    return images * tf.constant(IMAGENET_STD) + tf.constant(IMAGENET_MEAN)
