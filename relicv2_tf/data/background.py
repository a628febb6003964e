"""Mask-based background augmentations: ReLICv2 saliency masking, BG_RM, BG_Random, BG_Swaps.

Saliency masking is ReLICv2 appendix F.2; BG_RM, BG_Random and BG_Swaps are from Ryali et al.
(2021), "Characterizing and improving the robustness of self-supervised learning through
background augmentations". All are pure per-image functions of float32 images in [0, 1]
([H, W, 3]), soft foreground masks in [0, 1] ([H, W, 1], 1 = foreground) and a stateless seed
(int tensor [2]). Every random op returns `(image, applied)` so callers and tests can see what
happened. An op only fires when the mask covers at least `min_fraction` of the image, so a missing
mask (all zeros) never turns a view into a flat grey square.
"""

from __future__ import annotations

import tensorflow as tf


def _split(seed, num: int):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def _uniform(seed, minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform([], seed, minval=minval, maxval=maxval)


def mask_fraction(mask):
    """Fraction of the image covered by the (soft) foreground mask."""
    return tf.reduce_mean(tf.cast(mask, tf.float32))


def composite(foreground_image, mask, background):
    """mask * foreground + (1 - mask) * background (an image or a broadcastable value)."""
    foreground_image = tf.convert_to_tensor(foreground_image, tf.float32)
    mask = tf.convert_to_tensor(mask, tf.float32)
    return mask * foreground_image + (1.0 - mask) * background


def background_only(image, mask):
    """The image with its foreground replaced by the mean colour of its background.

    Used as "the background of another image" (BG_Random, BG_Swaps), so that image's own object
    does not appear behind the pasted foreground.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    mask = tf.convert_to_tensor(mask, tf.float32)
    background_weight = 1.0 - mask
    total = tf.reduce_sum(background_weight, axis=[0, 1]) + 1e-6
    mean_colour = tf.reduce_sum(image * background_weight, axis=[0, 1]) / total
    return composite(tf.broadcast_to(mean_colour, tf.shape(image)), mask, image)


def _maybe(seed, prob, mask, min_fraction, fn, image):
    image = tf.convert_to_tensor(image, tf.float32)
    applied = (_uniform(seed) < prob) & (mask_fraction(mask) >= min_fraction)
    # A select rather than tf.cond: the composite is one cheap elementwise pass, and selects
    # are much faster to build into tf.data graphs than conditionals.
    return tf.where(applied, fn(), image), applied


def saliency_masking(image, mask, seed, apply_prob: float, min_fraction: float):
    """ReLICv2 (F.2): with probability p_m, background -> one grey level drawn U[0, 1] per image.

    Applied to a large view after its augmentations, only if the view's mask covers at least
    `min_fraction` of it. Returns (image, applied).
    """
    apply_seed, grey_seed = _split(seed, 2)
    grey_level = _uniform(grey_seed)
    return _maybe(apply_seed, apply_prob, mask, min_fraction,
                  lambda: composite(image, mask, grey_level), image)


def bg_rm(image, mask, seed, prob: float, min_fraction: float, grey_level: float = 0.5):
    """BG_RM: with probability `prob`, the background becomes the constant `grey_level`."""
    return _maybe(seed, prob, mask, min_fraction,
                  lambda: composite(image, mask, grey_level), image)


def bg_random(image, mask, other_image, other_mask, seed, prob: float, min_fraction: float):
    """BG_Random: with probability `prob`, this foreground on another image's background.

    `other_image`/`other_mask` are aligned with `image` (same size, same crop); the other image's
    own foreground is removed first (`background_only`).
    """
    return _maybe(seed, prob, mask, min_fraction,
                  lambda: composite(image, mask, background_only(other_image, other_mask)),
                  image)


def bg_swaps_positive(image, mask, other_image, other_mask, seed, prob: float,
                      min_fraction: float):
    """BG_Swaps positive: the anchor's foreground on another image's background (= BG_Random)."""
    return bg_random(image, mask, other_image, other_mask, seed, prob, min_fraction)


def bg_swaps_hard_negative(anchor_image, anchor_mask, other_image, other_mask):
    """BG_Swaps hard negative: another image's foreground on the anchor's background.

    The anchor's own foreground is removed first (filled with the mean colour of its background),
    so the negative shares only the background with the anchor.
    """
    return composite(other_image, other_mask, background_only(anchor_image, anchor_mask))


def bg_swaps_hard_negative_valid(anchor_mask, other_mask, seed, prob: float,
                                 min_fraction: float):
    """Whether a hard negative is used for this example: probability `prob`, and both masks
    cover at least `min_fraction` of the view (otherwise the negative is not "another foreground
    on the anchor's background")."""
    return ((_uniform(seed) < prob) & (mask_fraction(anchor_mask) >= min_fraction)
            & (mask_fraction(other_mask) >= min_fraction))
