"""Mask-based background augmentations: ReLICv2 saliency masking, BG_RM, BG_Random, BG_Swaps.

Saliency masking is ReLICv2 appendix F.2; BG_RM, BG_Random and BG_Swaps are from Ryali et al.
(2021), "Characterizing and improving the robustness of self-supervised learning through
background augmentations" (only its abstract is available here: every number and every detail
beyond the definitions is an assumption, configurable, see docs/DATA.md). All are pure per-image
functions of float32 images in [0, 1] ([H, W, 3]), soft foreground masks in [0, 1] ([H, W, 1],
1 = foreground) and a stateless seed (int tensor [2]). Random ops return `(image, applied)` so
callers and tests can see what happened. An op only fires when the mask covers at least
`min_fraction` of the image, so a missing mask (all zeros) never turns a view into a flat square.
"""

from __future__ import annotations

import tensorflow as tf

from relicv2_tf.data import blur

# BG_Swaps adds a hard negative: only methods with negatives in their loss can use it.
BG_SWAPS_METHODS = ("moco_v2", "simclr")

# Removing an object: its region is filled by normalised convolution of the background with a
# Gaussian of this standard deviation (fraction of the longer side): wide enough to reach the
# middle of large objects, smooth enough to leave no trace of the object's interior.
FILL_SIGMA_FRACTION = 0.1
_FILL_EPSILON = 1e-3  # where almost no background is within reach, the mean colour fills


def check_config(config, fail):
    """BG_RM's grey level, and BG_Swaps only with a method that has negatives."""
    d = config.data
    if not 0.0 <= d.bg_rm_grey_level <= 1.0:
        fail(f"data.bg_rm_grey_level={d.bg_rm_grey_level} must be in [0, 1].")
    if d.bg_swaps_prob > 0 and config.method not in BG_SWAPS_METHODS:
        fail(f"data.bg_swaps_prob={d.bg_swaps_prob} with method={config.method!r}: BG_Swaps adds "
             f"a hard negative, which only {BG_SWAPS_METHODS} use. Set "
             "--config.data.bg_swaps_prob=0 (BG_RM / BG_Random: data.bg_rm_prob / "
             "data.bg_random_prob work with every method), or use method moco_v2 or simclr.")


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
    """The image with its foreground removed: the object's region is filled from the image's own
    background by normalised convolution, sum_k G(k) w(k) x(k) / sum_k G(k) w(k) with
    w = 1 - mask and G a Gaussian (FILL_SIGMA_FRACTION of the side, reflect padding); far from
    any background the fill tends to the mean background colour.

    Used as "the background of an image" (BG_Random, BG_Swaps). The fill is smooth: it carries no
    edge, colour or texture of the object, but a textureless patch of the object's shape remains
    where the fill is seen (docs/DATA.md, "BG_Swaps").
    """
    image = tf.convert_to_tensor(image, tf.float32)
    mask = tf.convert_to_tensor(mask, tf.float32)
    height, width = int(image.shape[0]), int(image.shape[1])
    weight = 1.0 - mask
    sigma = FILL_SIGMA_FRACTION * max(height, width)
    radius = min(int(3 * sigma), height - 1, width - 1)
    blurred = blur.gaussian_blur(tf.concat([image * weight, weight], axis=-1), sigma, radius)
    mean_colour = (tf.reduce_sum(image * weight, axis=[0, 1])
                   / (tf.reduce_sum(weight, axis=[0, 1]) + 1e-6))
    fill = (blurred[..., :3] + _FILL_EPSILON * mean_colour) / (blurred[..., 3:] + _FILL_EPSILON)
    return composite(fill, mask, image)


def _maybe(seed, prob, mask, min_fraction, fn, image):
    image = tf.convert_to_tensor(image, tf.float32)
    applied = (_uniform(seed) < prob) & (mask_fraction(mask) >= min_fraction)
    # A select rather than tf.cond: the composite is one cheap elementwise pass, and selects
    # are much faster to build into tf.data graphs than conditionals.
    return tf.where(applied, fn(), image), applied


def remove_background(image, mask, grey_level):
    """x_m = remove_background(x) of ReLICv2's listing (appendix E): the background of the whole
    image set to `grey_level` in [0, 1]. A uint8 image stays uint8 (rounded, as a stored image
    would be), so that crops of it take the same path as crops of the original."""
    if image.dtype == tf.uint8:
        masked = composite(tf.cast(image, tf.float32) * (1.0 / 255.0), mask, grey_level)
        return tf.cast(tf.round(tf.clip_by_value(masked, 0.0, 1.0) * 255.0), tf.uint8)
    return composite(image, mask, grey_level)


def saliency_masking(image, mask, seed, num_views: int, apply_prob: float, min_fraction: float):
    """ReLICv2 saliency masking as its listing does it (appendix E; section 2.2, F.2):

        x_m = remove_background(x)          # one grey level ~ U[0, 1] per image
        for each large view i: x_i = Bernoulli(p_m) ? x_m : x, then crop and augment x_i

    so the grey background is cropped, jittered, blurred and solarised with the rest of the view.
    Each view draws its own Bernoulli; masking happens only where the mask covers at least
    `min_fraction` of the whole image (F.2: "covers at least ... of the image").

    Args:
      image: [H, W, 3] uint8 or float in [0, 1]; mask: [H, W, 1] float in [0, 1] (1 = object).
      seed: int [2]; num_views: the number of large views L.
    Returns:
      (list of L images, each `image` or its masked copy, same dtype; applied: bool [L]).
    """
    grey_seed, *view_seeds = _split(seed, num_views + 1)
    masked = remove_background(image, mask, _uniform(grey_seed))
    eligible = mask_fraction(mask) >= min_fraction
    applied = tf.stack([(_uniform(s) < apply_prob) & eligible for s in view_seeds])
    return [tf.where(applied[i], masked, image) for i in range(num_views)], applied


def bg_rm(image, mask, seed, prob: float, min_fraction: float, grey_level: float = 0.5):
    """BG_RM: with probability `prob`, the background becomes the constant `grey_level`
    (`data.bg_rm_grey_level`; 0.5 is assumed, the paper's level is not available here)."""
    return _maybe(seed, prob, mask, min_fraction,
                  lambda: composite(image, mask, grey_level), image)


def bg_random(image, mask, other_image, other_mask, seed, prob: float, min_fraction: float):
    """BG_Random: with probability `prob`, this foreground on another image's background.

    `other_image`/`other_mask` are aligned with `image` (same size, same crop); the other image's
    own foreground is removed first (`background_only`).
    """
    return _maybe(seed, prob, mask, min_fraction,
                  lambda: bg_swaps_positive(image, mask, other_image, other_mask), image)


# ---------------------------------------------------------------------------------------------
# BG_Swaps: one triplet per example. The anchor keeps its image; the positive is the anchor's
# foreground on another image's background; the hard negative is that other image's foreground on
# the anchor's background.


def bg_swaps_positive(image, mask, other_image, other_mask):
    """The foreground of `image` on the background of `other_image` (aligned with it)."""
    return composite(image, mask, background_only(other_image, other_mask))


def foreground_box(mask):
    """(top, left, bottom, right) pixel indices (float32) of the pixels with mask >= 0.5; the
    whole image when there are none."""
    mask = tf.convert_to_tensor(mask, tf.float32)[..., 0] >= 0.5

    def first_last(any_along):
        n = tf.shape(any_along)[0]
        first = tf.argmax(tf.cast(any_along, tf.int32), output_type=tf.int32)
        last = n - 1 - tf.argmax(tf.cast(tf.reverse(any_along, [0]), tf.int32),
                                 output_type=tf.int32)
        return tf.cast(first, tf.float32), tf.cast(last, tf.float32)

    top, bottom = first_last(tf.reduce_any(mask, axis=1))
    left, right = first_last(tf.reduce_any(mask, axis=0))
    return top, left, bottom, right


def cover_foreground(target_mask, source_image, source_mask):
    """`source_image` and its mask moved onto the target's grid so that the source's foreground
    box covers the target's foreground box: centres aligned, one uniform scale (no distortion)
    chosen so the source box spans the target box plus a one-pixel margin on its tighter axis.

    `source_*` may have any size; returns (colour [H, W, 3], mask [H, W, 1]) of the target's size,
    bilinear, mask zero outside the source image; `colour` is the object's own colour (the
    source's background does not bleed into its edges).
    """
    height, width = int(target_mask.shape[0]), int(target_mask.shape[1])
    t_top, t_left, t_bottom, t_right = foreground_box(target_mask)
    s_top, s_left, s_bottom, s_right = foreground_box(source_mask)
    # Pixel-centre spans: the source's first..last foreground centres map to one pixel beyond
    # the target's first..last, so bilinear sampling sees full foreground on the target's box.
    scale = tf.maximum((t_bottom - t_top + 2.0) / tf.maximum(s_bottom - s_top, 1.0),
                       (t_right - t_left + 2.0) / tf.maximum(s_right - s_left, 1.0))
    t_y, t_x = (t_top + t_bottom) / 2.0, (t_left + t_right) / 2.0
    s_y, s_x = (s_top + s_bottom) / 2.0, (s_left + s_right) / 2.0
    # Output pixel (x, y) reads source pixel (s_x + (x - t_x) / scale, s_y + (y - t_y) / scale).
    transform = tf.stack([1.0 / scale, 0.0, s_x - t_x / scale,
                          0.0, 1.0 / scale, s_y - t_y / scale, 0.0, 0.0])[None]
    # Colour premultiplied by the mask, so that the soft edges of the moved object mix its own
    # colour with the target's background, never with the source's background.
    source_mask = tf.convert_to_tensor(source_mask, tf.float32)
    source = tf.concat([tf.convert_to_tensor(source_image, tf.float32) * source_mask,
                        source_mask], axis=-1)[None]
    moved = tf.raw_ops.ImageProjectiveTransformV3(
        images=source, transforms=transform, output_shape=tf.constant([height, width]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    moved = tf.ensure_shape(moved, [height, width, 4])
    moved_mask = tf.clip_by_value(moved[..., 3:], 0.0, 1.0)
    colour = tf.math.divide_no_nan(moved[..., :3], moved[..., 3:])
    return colour, moved_mask


def bg_swaps_hard_negative(anchor_image, anchor_mask, other_image, other_mask):
    """Another image's foreground on the anchor's background.

    The anchor's own object is removed (`background_only`) and the other image's object is moved
    over the anchor's object region (`cover_foreground`), so that the negative does not carry the
    anchor's silhouette where the other object covers it. `other_image`/`other_mask` are the
    whole other image (any size). Returns (negative, the moved other mask).
    """
    moved, moved_mask = cover_foreground(anchor_mask, other_image, other_mask)
    return composite(moved, moved_mask, background_only(anchor_image, anchor_mask)), moved_mask


def bg_swaps_applies(anchor_mask, positive_mask, other_mask, seed, prob: float,
                     min_fraction: float):
    """One draw per example: probability `prob`, and the anchor view, the positive view and the
    other image all show at least `min_fraction` of foreground (otherwise the triplet is not
    "same object / same background")."""
    return ((_uniform(seed) < prob) & (mask_fraction(anchor_mask) >= min_fraction)
            & (mask_fraction(positive_mask) >= min_fraction)
            & (mask_fraction(other_mask) >= min_fraction))


def bg_swaps(anchor, anchor_mask, positive, positive_mask, other_for_positive,
             other_mask_for_positive, other_image, other_mask, seed, prob: float,
             min_fraction: float):
    """The BG_Swaps triplet of one example, from ONE other image and ONE decision.

    anchor/anchor_mask: the anchor view (its crop) and mask; positive/positive_mask: the positive
    view's crop; other_for_positive/other_mask_for_positive: the other image cut with the
    positive's crop; other_image/other_mask: the whole other image.
    Returns (positive, hard_negative, applied): when `applied`, the positive is the anchor's
    foreground on the other image's background and the hard negative is the other's foreground on
    the anchor's background; otherwise the positive is unchanged and the negative is unused.
    """
    applied = bg_swaps_applies(anchor_mask, positive_mask, other_mask, seed, prob, min_fraction)
    swapped = bg_swaps_positive(positive, positive_mask, other_for_positive,
                                other_mask_for_positive)
    negative, _ = bg_swaps_hard_negative(anchor, anchor_mask, other_image, other_mask)
    return tf.where(applied, swapped, tf.convert_to_tensor(positive, tf.float32)), negative, applied
