"""Per-image augmentations of ReLICv2 (paper appendix F.1, Table 16; the BYOL recipe).

The table appears once, as data (`TABLE_16`); every op is a small pure function of one image
(float32 in [0, 1], [H, W, 3]) and a stateless seed (int tensor of shape [2]), so the same seed
always gives the same view, eagerly or inside `tf.data`. Sub-seeds come from
`tf.random.experimental.stateless_split`, never from global random state.

Definitions follow BYOL's `byol/utils/augmentations.py` (Grill et al. 2020), which ReLICv2 says it
uses: brightness is ADDITIVE (x + delta, delta ~ U[-0.4, 0.4]); contrast, saturation are
multiplicative factors ~ U[1 - m, 1 + m] (contrast around the per-channel mean, saturation in HSV);
hue shifts H by delta ~ U[-0.1, 0.1] (fraction of the colour circle); the four are applied in a
random order and the image is clipped to [0, 1] after each; greyscale uses the weights
(0.2989, 0.5870, 0.1140); solarize maps x >= 0.5 to 1 - x.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

# ---------------------------------------------------------------------------------------------
# Table 16 as data.


@dataclasses.dataclass(frozen=True)
class ViewAugmentation:
    """Parameters of one view's augmentation (one column x one view size of Table 16)."""

    crop_area_range: tuple[float, float]  # fraction of the source image area
    blur_prob: float
    solarize_prob: float
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)  # sampled log-uniformly
    flip_prob: float = 0.5
    color_jitter_prob: float = 0.8
    brightness: float = 0.4  # maximum additive delta
    contrast: float = 0.4  # factor in [1 - 0.4, 1 + 0.4]
    saturation: float = 0.2  # factor in [1 - 0.2, 1 + 0.2]
    hue: float = 0.1  # delta in [-0.1, 0.1] of the hue circle
    grayscale_prob: float = 0.2
    blur_sigma_range: tuple[float, float] = (0.1, 2.0)  # pixels of the output view
    blur_kernel_fraction: float = 0.1  # kernel ~ 10 % of the side (23 taps at 224)
    solarize_threshold: float = 0.5


# Keys: (parity, size). Our reading of appendix F.1 (see docs/DATA.md): parity "odd" is the
# 1st, 3rd, ... view of each size (0-based indices 0, 2, ...), "even" the 2nd, 4th, ...
# The crop rows of Table 16 give 8-100 % for even large views, 14-100 % for odd large views and
# 5-14 % for small views; the even column lists no small-view crop, so small views of both
# parities use 5-14 % (crop size and area depend on the view size, blur/solarize on parity).
# The table's "probability of randomly cropping 50 %" row contradicts the text ("apart from the
# initial step of image cropping, each step is executed with some probability"): every view is
# cropped.
TABLE_16 = {
    ("even", "large"): ViewAugmentation(crop_area_range=(0.08, 1.0), blur_prob=1.0,
                                        solarize_prob=0.0),
    ("odd", "large"): ViewAugmentation(crop_area_range=(0.14, 1.0), blur_prob=0.1,
                                       solarize_prob=0.2),
    ("even", "small"): ViewAugmentation(crop_area_range=(0.05, 0.14), blur_prob=1.0,
                                        solarize_prob=0.0),
    ("odd", "small"): ViewAugmentation(crop_area_range=(0.05, 0.14), blur_prob=0.1,
                                       solarize_prob=0.2),
}


def view_parity(view_index: int) -> str:
    """0-based index within its size group -> "odd" (1st, 3rd, ...) or "even" (2nd, 4th, ...)."""
    return "odd" if view_index % 2 == 0 else "even"


def view_augmentation(view_index: int, size: str) -> ViewAugmentation:
    """Table 16 parameters of the `view_index`-th (0-based) view of `size` ("large"/"small")."""
    return TABLE_16[(view_parity(view_index), size)]


# ---------------------------------------------------------------------------------------------
# Helpers.


def _split(seed, num: int):
    return tf.random.experimental.stateless_split(seed, num)


def _uniform(seed, minval=0.0, maxval=1.0, shape=()):
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval)


def _bernoulli(seed, prob: float):
    return _uniform(seed) < prob


def _select(condition, if_true, if_false):
    """Scalar-condition select for cheap ops: one elementwise pass, and far cheaper to build in a
    tf.data graph than a tf.cond (which traces two sub-functions)."""
    return tf.where(condition, if_true, if_false)


def to_unit_float(image):
    """uint8 [0, 255] -> float32 [0, 1]; floats are taken to be in [0, 1] already."""
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


# ---------------------------------------------------------------------------------------------
# Geometry: crop and flip (image and mask together).


def sample_crop_box(image_shape, seed, area_range=(0.08, 1.0),
                    aspect_ratio_range=(3 / 4, 4 / 3), max_attempts: int = 10):
    """Random crop box (top, left, height, width), int32, of an image of shape [H, W, ...].

    Area fraction ~ U[area_range], log(aspect = width / height) ~ U[log r_min, log r_max]; the
    first of `max_attempts` candidates that fits is used, else a centre crop of the whole image
    clamped to the aspect range (torchvision's RandomResizedCrop rule). Offsets are uniform.
    """
    height = tf.cast(image_shape[0], tf.float32)
    width = tf.cast(image_shape[1], tf.float32)
    area_seed, ratio_seed, offset_seed = tf.unstack(_split(seed, 3))
    areas = _uniform(area_seed, area_range[0], area_range[1], [max_attempts]) * height * width
    log_ratios = _uniform(ratio_seed, math.log(aspect_ratio_range[0]),
                          math.log(aspect_ratio_range[1]), [max_attempts])
    ratios = tf.exp(log_ratios)
    crop_w = tf.round(tf.sqrt(areas * ratios))
    crop_h = tf.round(tf.sqrt(areas / ratios))
    fits = (crop_w >= 1) & (crop_h >= 1) & (crop_w <= width) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32))
    # Fallback: the whole image, clamped to the aspect-ratio range.
    image_ratio = width / height
    fallback_w = tf.where(image_ratio > aspect_ratio_range[1],
                          tf.round(height * aspect_ratio_range[1]), width)
    fallback_h = tf.where(image_ratio < aspect_ratio_range[0],
                          tf.round(width / aspect_ratio_range[0]), height)
    any_fits = tf.reduce_any(fits)
    crop_w = tf.where(any_fits, crop_w[first], fallback_w)
    crop_h = tf.where(any_fits, crop_h[first], fallback_h)
    offsets = _uniform(offset_seed, shape=[2])
    top = tf.where(any_fits, tf.floor(offsets[0] * (height - crop_h + 1)), (height - crop_h) // 2)
    left = tf.where(any_fits, tf.floor(offsets[1] * (width - crop_w + 1)), (width - crop_w) // 2)
    box = tf.cast(tf.stack([top, left, crop_h, crop_w]), tf.int32)
    return box


def crop_and_resize(image, box, size: int, method: str = "bicubic"):
    """Crops `box` (top, left, height, width) out of [H, W, C] and resizes to [size, size, C].

    uint8 input gives float32 in [0, 1]; float input keeps its scale.
    """
    image = tf.convert_to_tensor(image)
    crop = image[box[0]:box[0] + box[2], box[1]:box[1] + box[3], :]
    resized = tf.image.resize(crop, [size, size], method=method)  # float32, input's scale
    if image.dtype == tf.uint8:
        resized = resized * (1.0 / 255.0)  # cast after cropping: only the crop is converted
    return tf.ensure_shape(resized, [size, size, image.shape[-1]])


def random_resized_crop(image, seed, size: int, area_range=(0.08, 1.0),
                        aspect_ratio_range=(3 / 4, 4 / 3), mask=None,
                        mask_method: str = "bilinear"):
    """Random resized crop (F.1 step 1): crop a random box, upscale bicubically to size x size.

    `image` uint8 or float [H, W, 3] -> float32 [size, size, 3] clipped to [0, 1] (bicubic
    overshoots). If `mask` ([H, W, 1], uint8 0-255 or float 0-1) is given, the same box is cut out
    of it and resized with `mask_method` ("bilinear" keeps soft edges, "nearest" keeps it binary);
    returns (image, mask) with the mask float32 in [0, 1].
    """
    image = tf.convert_to_tensor(image)
    box = sample_crop_box(tf.shape(image), seed, area_range, aspect_ratio_range)
    out = tf.clip_by_value(crop_and_resize(image, box, size, "bicubic"), 0.0, 1.0)
    if mask is None:
        return out
    out_mask = crop_and_resize(mask, box, size, mask_method)
    return out, tf.clip_by_value(out_mask, 0.0, 1.0)


def random_flip(image, seed, prob: float = 0.5, mask=None):
    """Horizontal flip with probability `prob` (F.1 step 2); flips `mask` identically."""
    image = tf.convert_to_tensor(image)
    flip = _bernoulli(seed, prob)
    image = _select(flip, tf.reverse(image, axis=[1]), image)
    if mask is None:
        return image
    mask = tf.convert_to_tensor(mask)
    return image, _select(flip, tf.reverse(mask, axis=[1]), mask)


# ---------------------------------------------------------------------------------------------
# Colour.


def adjust_brightness(image, delta):
    """BYOL brightness: additive, x + delta (not the multiplicative torchvision factor)."""
    return image + delta


def adjust_contrast(image, factor):
    """(x - mean_c) * factor + mean_c, mean over the pixels of each channel."""
    # tf.image's fused kernel computes exactly this, in one pass over the pixels.
    return tf.image.adjust_contrast(tf.convert_to_tensor(image), factor)


def adjust_saturation(image, factor):
    """HSV saturation times `factor`, clipped to [0, 1] (tf.image's fused HSV kernel)."""
    return tf.image.adjust_saturation(image, factor)


def adjust_hue(image, delta):
    """HSV hue + delta (mod 1)."""
    return tf.image.adjust_hue(image, delta)


def color_jitter(image, seed, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
                 prob: float = 0.8):
    """With probability `prob`, the four adjustments in a random order (F.1 step 3).

    Each draws its own strength: brightness delta ~ U[-b, b], contrast factor ~ U[1-c, 1+c],
    saturation factor ~ U[1-s, 1+s], hue delta ~ U[-h, h]; the image is clipped to [0, 1] after
    each, as in BYOL.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    out = _color_jitter_graph(image, tf.cast(seed, tf.int64), float(brightness),
                              float(contrast), float(saturation), float(hue), float(prob))
    return tf.ensure_shape(out, image.shape)


def _color_jitter(image, seed, brightness, contrast, saturation, hue, prob):
    apply_seed, order_seed, b_seed, c_seed, s_seed, h_seed = tf.unstack(_split(seed, 6))
    delta_b = _uniform(b_seed, -brightness, brightness)
    factor_c = _uniform(c_seed, 1.0 - contrast, 1.0 + contrast)
    factor_s = _uniform(s_seed, 1.0 - saturation, 1.0 + saturation)
    delta_h = _uniform(h_seed, -hue, hue)
    order = tf.argsort(_uniform(order_seed, shape=[4]))

    # Saturation and hue map [0, 1] into [0, 1] (HSV round trip with S clamped to [0, 1]), so
    # only brightness and contrast need the clip that BYOL applies after every step.
    def jitter():
        x = image
        for step in range(4):
            x = tf.switch_case(order[step], [
                lambda x=x: tf.clip_by_value(adjust_brightness(x, delta_b), 0.0, 1.0),
                lambda x=x: tf.clip_by_value(adjust_contrast(x, factor_c), 0.0, 1.0),
                lambda x=x: adjust_saturation(x, factor_s),
                lambda x=x: adjust_hue(x, delta_h),
            ])
        return x

    return tf.cond(_bernoulli(apply_seed, prob), jitter, lambda: image)


# Traced once per parameter set and reused by every view (images of any size): building the
# 4 x 4 switch branches once instead of once per view keeps tf.data graph construction fast.
_color_jitter_graph = tf.function(_color_jitter, autograph=False, reduce_retracing=True)


GRAYSCALE_WEIGHTS = (0.2989, 0.5870, 0.1140)  # BYOL / ITU-R 601


def to_grayscale(image):
    """Luma with GRAYSCALE_WEIGHTS, repeated on the three channels (F.1 step 4)."""
    image = tf.convert_to_tensor(image)
    luma = tf.tensordot(image, tf.constant(GRAYSCALE_WEIGHTS, image.dtype), axes=[[-1], [0]])
    return tf.tile(luma[..., None], [1, 1, 3])


def random_grayscale(image, seed, prob: float = 0.2):
    image = tf.convert_to_tensor(image)
    # tf.cond, not a select: the luma product is worth skipping 80 % of the time.
    return tf.cond(_bernoulli(seed, prob), lambda: to_grayscale(image), lambda: image)


# ---------------------------------------------------------------------------------------------
# Blur and solarize.


def blur_kernel_radius(side: int, kernel_fraction: float = 0.1) -> int:
    """BYOL's rule: kernel ~ side * fraction, made odd: radius int(side * fraction / 2).

    224 -> 23 taps, 96 -> 9, 32 -> 3. At least 1 (3 taps) so the blur is not a no-op below
    20 px, where BYOL's rule gives a single tap.
    """
    return max(1, int(side * kernel_fraction / 2))


def blur_matrix(sigma, radius: int, n: int):
    """[n, n] matrix B such that B @ x is the 1-D Gaussian blur of x along its first axis.

    Taps t = -radius..radius with weights exp(-t^2 / 2 sigma^2) / Z; out-of-range taps reflect
    (index -p -> p, n - 1 + p -> n - 1 - p, as tf.pad's REFLECT), so the padding is folded in.
    """
    sigma = tf.cast(sigma, tf.float32)
    i = tf.range(n, dtype=tf.float32)[:, None]
    j = tf.range(n, dtype=tf.float32)[None, :]

    def weight(offset):
        return tf.where(tf.abs(offset) <= radius,
                        tf.exp(-tf.square(offset) / (2.0 * tf.square(sigma))), 0.0)

    matrix = (weight(j - i) + tf.where(j >= 1, weight(-j - i), 0.0)
              + tf.where(j <= n - 2, weight(2.0 * (n - 1) - j - i), 0.0))
    return matrix / tf.reduce_sum(weight(tf.range(-radius, radius + 1, dtype=tf.float32)))


def gaussian_blur(image, sigma, radius: int):
    """Separable Gaussian blur of [H, W, C]: `radius` taps each side, reflect padding.

    Written as two matrix products (columns, then rows) with the padding folded into the
    matrices: each is one GEMM on the image viewed as [H, W * C] (rows after a transpose), which
    on CPU is 1.4x faster than an einsum and 2x faster than a separable depthwise convolution
    at 224 px (measured, docs/BENCHMARKS.md), and simpler to check.
    (BYOL pads with zeros, which darkens the borders; reflect padding blurs without that bias.)
    """
    image = tf.convert_to_tensor(image)
    height, width, channels = (int(d) for d in image.shape)
    radius = min(radius, height - 1, width - 1)
    columns = tf.matmul(blur_matrix(sigma, radius, height),
                        tf.reshape(image, [height, width * channels]))
    rows_first = tf.transpose(tf.reshape(columns, [height, width, channels]), [1, 0, 2])
    rows = tf.matmul(blur_matrix(sigma, radius, width),
                     tf.reshape(rows_first, [width, height * channels]))
    return tf.transpose(tf.reshape(rows, [width, height, channels]), [1, 0, 2])


def random_gaussian_blur(image, seed, prob: float, sigma_range=(0.1, 2.0),
                         kernel_fraction: float = 0.1):
    """With probability `prob`, blur with sigma ~ U[sigma_range] (F.1 step 5)."""
    apply_seed, sigma_seed = tf.unstack(_split(seed, 2))
    radius = blur_kernel_radius(int(image.shape[0]), kernel_fraction)
    sigma = _uniform(sigma_seed, sigma_range[0], sigma_range[1])
    return tf.cond(_bernoulli(apply_seed, prob),
                   lambda: gaussian_blur(image, sigma, radius), lambda: image)


def solarize(image, threshold: float = 0.5):
    """x if x < threshold else 1 - x, per channel (F.1 step 6)."""
    image = tf.convert_to_tensor(image)
    if threshold == 0.5:
        # Identical for every x (x < 1/2 <=> x < 1 - x) and one pass cheaper than the select.
        return tf.minimum(image, 1.0 - image)
    return tf.where(image < threshold, image, 1.0 - image)


def random_solarize(image, seed, prob: float, threshold: float = 0.5):
    image = tf.convert_to_tensor(image)
    # tf.cond: at the paper's p = 0.2 the solarized image is not computed 80 % of the time.
    return tf.cond(_bernoulli(seed, prob), lambda: solarize(image, threshold), lambda: image)


# ---------------------------------------------------------------------------------------------
# One whole view.


def augment_view(image, seed, size: int, params: ViewAugmentation, mask=None):
    """F.1 steps 1-6: image uint8/float [H, W, 3] -> float32 [size, size, 3] in [0, 1].

    With `mask` ([H, W, 1]) also returns the view's mask (float32 [size, size, 1] in [0, 1]),
    cropped and flipped with the image (colour ops do not touch it).
    """
    image = tf.convert_to_tensor(image)
    crop_seed, flip_seed, photometric_seed = tf.unstack(_split(seed, 3))
    if mask is None:
        view = random_resized_crop(image, crop_seed, size, params.crop_area_range,
                                   params.aspect_ratio_range)
        view = random_flip(view, flip_seed, params.flip_prob)
        return augment_photometric(view, photometric_seed, params)
    view, view_mask = random_resized_crop(image, crop_seed, size, params.crop_area_range,
                                          params.aspect_ratio_range, mask=mask)
    view, view_mask = random_flip(view, flip_seed, params.flip_prob, mask=view_mask)
    return augment_photometric(view, photometric_seed, params), view_mask


def augment_photometric(view, seed, params: ViewAugmentation):
    """F.1 steps 3-6 on a cropped view (float32 [S, S, 3] in [0, 1])."""
    jitter_seed, gray_seed, blur_seed, solarize_seed = tf.unstack(_split(seed, 4))
    view = color_jitter(view, jitter_seed, params.brightness, params.contrast, params.saturation,
                        params.hue, params.color_jitter_prob)
    view = random_grayscale(view, gray_seed, params.grayscale_prob)
    if params.blur_prob > 0:
        view = random_gaussian_blur(view, blur_seed, params.blur_prob, params.blur_sigma_range,
                                    params.blur_kernel_fraction)
    if params.solarize_prob > 0:
        view = random_solarize(view, solarize_seed, params.solarize_prob,
                               params.solarize_threshold)
    return tf.clip_by_value(view, 0.0, 1.0)
