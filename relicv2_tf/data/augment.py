"""Per-image augmentation ops (ReLICv2 appendix F.1 steps 1-6), every variant the tables use.

Every op is a small pure function of one image (float32 in [0, 1], [H, W, 3]) and a stateless seed
(int tensor of shape [2]), so the same seed always gives the same view, eagerly or inside
`tf.data`. Sub-seeds come from `tf.random.experimental.stateless_split`, never from global state.
The parameters of each method's views are data, in `augment_tables`.

Where the authors' code bases define an op differently, the difference is a field of
`augment_tables.ViewAugmentation` and the op implements every variant (docs/DATA.md lists them
with sources):
  brightness  "additive" x + d (BYOL `augmentations.py`), "multiplicative" x * f (SimCLR
              `data_util.random_brightness` impl 'simclrv2'; torchvision/PIL `ImageEnhance`);
  contrast    "channel_mean" (x - mean_c) f + mean_c (tf.image, BYOL, SimCLR), "grey_mean" blend
              with the mean of the greyscale image (PIL `ImageEnhance.Contrast`, torchvision);
  saturation  "hsv" S * f in HSV (tf.image, BYOL, SimCLR), "grey_blend" blend with the greyscale
              image (PIL `ImageEnhance.Color`, torchvision);
  hue         H + d (mod 1) in HSV everywhere; d is a fraction of the hue circle in tf.image, BYOL
              and torchvision alike (PIL quantises it to 1/255, not reproduced);
  greyscale   weights (0.2989, 0.5870, 0.1140) (tf.image) or (0.299, 0.587, 0.114) (PIL "L");
  blur        truncated Gaussian with kernel ~ 10 % of the side (BYOL, SimCLR) or a fixed 23 taps
              (SwAV, OpenCV), or PIL's three-pass extended box filter (MoCo-v2); borders padded
              with zeros (BYOL, SimCLR: 'SAME' convolutions), reflected (OpenCV's default; ReLICv2
              here) or edge-replicated (PIL): the kernels and borders are in `blur`;
  crop        torchvision's RandomResizedCrop sampler, BYOL's single clamped draw, or
              tf.image.sample_distorted_bounding_box (SimCLR); bicubic (BYOL, SimCLR) or
              antialiased bilinear (torchvision on PIL images) resizing.
"""

from __future__ import annotations

import math

import tensorflow as tf

from relicv2_tf.data import blur
from relicv2_tf.data.augment_tables import GRAYSCALE_WEIGHTS, ViewAugmentation

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


# ---------------------------------------------------------------------------------------------
# Geometry: crop and flip. (A view's mask and other image take its box and flip:
# `views.crop_flip`.)


def sample_crop_box(image_shape, seed, area_range=(0.08, 1.0),
                    aspect_ratio_range=(3 / 4, 4 / 3), max_attempts: int = 10,
                    sampler: str = "torchvision", min_object_covered: float = 0.0):
    """Random crop box (top, left, height, width), int32, of an image of shape [H, W, ...].

    sampler "torchvision" (RandomResizedCrop.get_params): area fraction ~ U[area_range],
      log(aspect = width / height) ~ U[log r_min, log r_max]; the first of `max_attempts`
      candidates that fits, else the whole image clamped to the aspect range, centred.
    "byol" (byol/utils/dataset.py): one such draw, width and height clamped to the image.
    "tf_sample_distorted_bounding_box" (SimCLR): tf.image's sampler, aspect ~ U[r_min, r_max]
      (not log-uniform), side uniform, crop >= `min_object_covered` of the image, `max_attempts`
      tries, else the whole image.
    Offsets are uniform.
    """
    if sampler == "tf_sample_distorted_bounding_box":
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            image_shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
            min_object_covered=min_object_covered, aspect_ratio_range=aspect_ratio_range,
            area_range=area_range, max_attempts=max_attempts,
            use_image_if_no_bounding_boxes=True)
        return tf.cast(tf.stack([begin[0], begin[1], size[0], size[1]]), tf.int32)
    height = tf.cast(image_shape[0], tf.float32)
    width = tf.cast(image_shape[1], tf.float32)
    attempts = 1 if sampler == "byol" else max_attempts
    area_seed, ratio_seed, offset_seed = tf.unstack(_split(seed, 3))
    area_fractions = _uniform(area_seed, area_range[0], area_range[1], [attempts])
    log_ratios = _uniform(ratio_seed, math.log(aspect_ratio_range[0]),
                          math.log(aspect_ratio_range[1]), [attempts])
    offsets = _uniform(offset_seed, shape=[2])
    if sampler == "byol":
        return byol_crop_box(height, width, area_fractions[0], log_ratios[0], offsets)
    return torchvision_crop_box(height, width, area_fractions, log_ratios, offsets,
                                aspect_ratio_range)


def byol_crop_box(height, width, area_fraction, log_ratio, offsets):
    """BYOL's `_decode_and_random_crop` from its draws: w = min(round(sqrt(A r)), W),
    h = min(round(sqrt(A / r)), H), offsets floor(u * (side - crop + 1))."""
    area = area_fraction * height * width
    crop_w = tf.minimum(tf.round(tf.sqrt(area * tf.exp(log_ratio))), width)
    crop_h = tf.minimum(tf.round(tf.sqrt(area / tf.exp(log_ratio))), height)
    top = tf.floor(offsets[0] * (height - crop_h + 1))
    left = tf.floor(offsets[1] * (width - crop_w + 1))
    return tf.cast(tf.stack([top, left, crop_h, crop_w]), tf.int32)


def torchvision_crop_box(height, width, area_fractions, log_ratios, offsets, aspect_ratio_range):
    """RandomResizedCrop's rule from its draws: the first candidate that fits, else the whole
    image clamped to the aspect range, centred."""
    areas = area_fractions * height * width
    ratios = tf.exp(log_ratios)
    crop_w = tf.round(tf.sqrt(areas * ratios))
    crop_h = tf.round(tf.sqrt(areas / ratios))
    fits = (crop_w >= 1) & (crop_h >= 1) & (crop_w <= width) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32))
    image_ratio = width / height
    fallback_w = tf.where(image_ratio > aspect_ratio_range[1],
                          tf.round(height * aspect_ratio_range[1]), width)
    fallback_h = tf.where(image_ratio < aspect_ratio_range[0],
                          tf.round(width / aspect_ratio_range[0]), height)
    any_fits = tf.reduce_any(fits)
    crop_w = tf.where(any_fits, crop_w[first], fallback_w)
    crop_h = tf.where(any_fits, crop_h[first], fallback_h)
    top = tf.where(any_fits, tf.floor(offsets[0] * (height - crop_h + 1)), (height - crop_h) // 2)
    left = tf.where(any_fits, tf.floor(offsets[1] * (width - crop_w + 1)), (width - crop_w) // 2)
    return tf.cast(tf.stack([top, left, crop_h, crop_w]), tf.int32)


def resize(image, size: int, method: str = "bicubic"):
    """[h, w, C] -> [size, size, C]. "bilinear_antialias" is PIL's bilinear filter (its support
    widens when shrinking), the interpolation of torchvision's RandomResizedCrop on PIL images."""
    if method == "bilinear_antialias":
        return tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.image.resize(image, [size, size], method=method)


def crop_and_resize(image, box, size: int, method: str = "bicubic"):
    """Crops `box` (top, left, height, width) out of [H, W, C] and resizes to [size, size, C].

    uint8 input gives float32 in [0, 1]; float input keeps its scale.
    """
    image = tf.convert_to_tensor(image)
    crop = image[box[0]:box[0] + box[2], box[1]:box[1] + box[3], :]
    resized = resize(crop, size, method)  # float32, input's scale
    if image.dtype == tf.uint8:
        resized = resized * (1.0 / 255.0)  # cast after cropping: only the crop is converted
    return tf.ensure_shape(resized, [size, size, image.shape[-1]])


def random_resized_crop(image, seed, size: int, area_range=(0.08, 1.0),
                        aspect_ratio_range=(3 / 4, 4 / 3), sampler: str = "torchvision",
                        max_attempts: int = 10, min_object_covered: float = 0.0,
                        resize_method: str = "bicubic"):
    """Random resized crop (F.1 step 1): crop a random box, resize to size x size.

    `image` uint8 or float [H, W, 3] -> float32 [size, size, 3] clipped to [0, 1] (bicubic
    overshoots).
    """
    image = tf.convert_to_tensor(image)
    box = sample_crop_box(tf.shape(image), seed, area_range, aspect_ratio_range, max_attempts,
                          sampler, min_object_covered)
    return tf.clip_by_value(crop_and_resize(image, box, size, resize_method), 0.0, 1.0)


def random_flip(image, seed, prob: float = 0.5):
    """Horizontal flip with probability `prob` (F.1 step 2)."""
    image = tf.convert_to_tensor(image)
    return _select(_bernoulli(seed, prob), tf.reverse(image, axis=[1]), image)


# ---------------------------------------------------------------------------------------------
# Colour.


def luma(image, weights=GRAYSCALE_WEIGHTS):
    """[..., 3] -> [...]: weighted sum of R, G, B."""
    image = tf.convert_to_tensor(image)
    return tf.tensordot(image, tf.constant(weights, image.dtype), axes=[[-1], [0]])


def adjust_brightness(image, amount, mode: str = "additive"):
    """"additive": x + amount (BYOL); "multiplicative": x * amount (SimCLR v2 code, PIL)."""
    image = tf.convert_to_tensor(image, tf.float32)
    if mode == "multiplicative":
        return image * amount
    return image + amount


def adjust_contrast(image, factor, mode: str = "channel_mean", weights=GRAYSCALE_WEIGHTS):
    """(x - m) * factor + m. "channel_mean": m = mean of each channel over the pixels
    (tf.image, BYOL, SimCLR); "grey_mean": m = one scalar, the mean of the greyscale image
    (PIL ImageEnhance.Contrast, torchvision)."""
    image = tf.convert_to_tensor(image)
    if mode == "grey_mean":
        mean = tf.reduce_mean(luma(image, weights))
        return (image - mean) * factor + mean
    # tf.image's fused kernel computes exactly the channel-mean rule, in one pass.
    return tf.image.adjust_contrast(image, factor)


def adjust_saturation(image, factor, mode: str = "hsv", weights=GRAYSCALE_WEIGHTS):
    """"hsv": HSV saturation times `factor`, clipped to [0, 1] (tf.image's fused kernel);
    "grey_blend": (x - g) * factor + g with g the pixel's grey value (PIL ImageEnhance.Color)."""
    if mode == "grey_blend":
        image = tf.convert_to_tensor(image)
        grey = luma(image, weights)[..., None]
        return (image - grey) * factor + grey
    return tf.image.adjust_saturation(image, factor)


def adjust_hue(image, delta):
    """HSV hue + delta (mod 1)."""
    return tf.image.adjust_hue(image, delta)


def color_jitter(image, seed, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
                 prob: float = 0.8, brightness_mode: str = "additive",
                 contrast_mode: str = "channel_mean", saturation_mode: str = "hsv",
                 grayscale_weights=GRAYSCALE_WEIGHTS):
    """With probability `prob`, the four adjustments in a random order (F.1 step 3).

    Each draws its own strength: brightness delta ~ U[-b, b] (additive) or factor
    ~ U[max(0, 1 - b), 1 + b] (multiplicative), contrast and saturation factors
    ~ U[max(0, 1 - c), 1 + c], hue delta ~ U[-h, h]; the image is clipped to [0, 1] after each.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    out = _color_jitter_graph(image, tf.cast(seed, tf.int64), float(brightness),
                              float(contrast), float(saturation), float(hue), float(prob),
                              brightness_mode, contrast_mode, saturation_mode,
                              tuple(float(w) for w in grayscale_weights))
    return tf.ensure_shape(out, image.shape)


def _factor(seed, strength):
    return _uniform(seed, max(1.0 - strength, 0.0), 1.0 + strength)


def _color_jitter(image, seed, brightness, contrast, saturation, hue, prob, brightness_mode,
                  contrast_mode, saturation_mode, grayscale_weights):
    apply_seed, order_seed, b_seed, c_seed, s_seed, h_seed = tf.unstack(_split(seed, 6))
    amount_b = (_factor(b_seed, brightness) if brightness_mode == "multiplicative"
                else _uniform(b_seed, -brightness, brightness))
    factor_c = _factor(c_seed, contrast)
    factor_s = _factor(s_seed, saturation)
    delta_h = _uniform(h_seed, -hue, hue)
    order = tf.argsort(_uniform(order_seed, shape=[4]))

    def clip(x):
        return tf.clip_by_value(x, 0.0, 1.0)

    # HSV saturation and hue map [0, 1] into [0, 1] (S clamped to [0, 1]), so their clip is a
    # no-op and is skipped; the grey blend can leave the range and is clipped like the others.
    saturate = (clip if saturation_mode == "grey_blend" else (lambda x: x))

    def jitter():
        x = image
        for step in range(4):
            x = tf.switch_case(order[step], [
                lambda x=x: clip(adjust_brightness(x, amount_b, brightness_mode)),
                lambda x=x: clip(adjust_contrast(x, factor_c, contrast_mode, grayscale_weights)),
                lambda x=x: saturate(adjust_saturation(x, factor_s, saturation_mode,
                                                       grayscale_weights)),
                lambda x=x: adjust_hue(x, delta_h),
            ])
        return x

    return tf.cond(_bernoulli(apply_seed, prob), jitter, lambda: image)


# Traced once per parameter set and reused by every view (images of any size): building the
# 4 x 4 switch branches once instead of once per view keeps tf.data graph construction fast.
_color_jitter_graph = tf.function(_color_jitter, autograph=False, reduce_retracing=True)


def to_grayscale(image, weights=GRAYSCALE_WEIGHTS):
    """Luma with `weights`, repeated on the three channels (F.1 step 4)."""
    return tf.tile(luma(image, weights)[..., None], [1, 1, 3])


def random_grayscale(image, seed, prob: float = 0.2, weights=GRAYSCALE_WEIGHTS):
    image = tf.convert_to_tensor(image)
    # tf.cond, not a select: the luma product is worth skipping 80 % of the time.
    return tf.cond(_bernoulli(seed, prob), lambda: to_grayscale(image, weights), lambda: image)


# ---------------------------------------------------------------------------------------------
# Blur.


def random_gaussian_blur(image, seed, prob: float, sigma_range=(0.1, 2.0),
                         kernel_fraction: float = 0.1, kernel: str = "gaussian",
                         padding: str = "reflect", kernel_size: int = 0):
    """With probability `prob`, blur with sigma ~ U[sigma_range] (F.1 step 5): a Gaussian of
    `kernel_size` taps (0: `blur.blur_kernel_radius` of the side) or PIL's box approximation."""
    apply_seed, sigma_seed = tf.unstack(_split(seed, 2))
    sigma = _uniform(sigma_seed, sigma_range[0], sigma_range[1])
    if kernel == "pil_box":
        blurred = lambda: blur.pil_box_blur(image, sigma, max_sigma=sigma_range[1])  # noqa: E731
    else:
        radius = (kernel_size // 2 if kernel_size
                  else blur.blur_kernel_radius(int(image.shape[0]), kernel_fraction))
        blurred = lambda: blur.gaussian_blur(image, sigma, radius, padding)  # noqa: E731
    return tf.cond(_bernoulli(apply_seed, prob), blurred, lambda: image)


# ---------------------------------------------------------------------------------------------
# Solarize.


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
# Photometric ops of one view.


def augment_photometric(view, seed, params: ViewAugmentation):
    """F.1 steps 3-6 on a cropped view (float32 [S, S, 3] in [0, 1])."""
    jitter_seed, gray_seed, blur_seed, solarize_seed = tf.unstack(_split(seed, 4))
    view = color_jitter(view, jitter_seed, params.brightness, params.contrast, params.saturation,
                        params.hue, params.color_jitter_prob, params.brightness_mode,
                        params.contrast_mode, params.saturation_mode, params.grayscale_weights)
    view = random_grayscale(view, gray_seed, params.grayscale_prob, params.grayscale_weights)
    if params.blur_prob > 0:
        view = random_gaussian_blur(view, blur_seed, params.blur_prob, params.blur_sigma_range,
                                    params.blur_kernel_fraction, params.blur_kernel,
                                    params.blur_padding, params.blur_kernel_size)
    if params.solarize_prob > 0:
        view = random_solarize(view, solarize_seed, params.solarize_prob,
                               params.solarize_threshold)
    return tf.clip_by_value(view, 0.0, 1.0)
