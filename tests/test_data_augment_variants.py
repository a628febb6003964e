"""The op variants of the baselines' code bases, each against an independent computation
(numpy, and PIL / OpenCV themselves where the variant comes from them)."""

import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageFilter

from relicv2_tf.data import augment, augment_tables, blur

RNG = np.random.RandomState(11)
IMAGE = RNG.rand(12, 17, 3).astype(np.float32) * 0.8 + 0.1
IMAGE_U8 = (RNG.rand(16, 21, 3) * 255).astype(np.uint8)
PIL_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


def pil_float(pil_image):
    return np.asarray(pil_image).astype(np.float32) / 255.0


def seeds(n):
    return tf.stack([tf.fill([n], 5), tf.range(n)], axis=1)


def map_over_seeds(fn, n=400):
    dataset = tf.data.Dataset.from_tensor_slices(seeds(n)).map(fn).batch(n)
    return next(iter(dataset.as_numpy_iterator()))


# ---------------------------------------------------------------------------------------------
# Colour.


@pytest.mark.parametrize("factor", [0.3, 1.0, 1.7])
def test_multiplicative_brightness_is_x_times_factor_as_pil(factor):
    out = augment.adjust_brightness(IMAGE, factor, "multiplicative").numpy()
    np.testing.assert_allclose(out, IMAGE * factor, atol=1e-6)
    pil = pil_float(ImageEnhance.Brightness(Image.fromarray(IMAGE_U8)).enhance(factor))
    ours = np.clip(augment.adjust_brightness(IMAGE_U8 / 255.0, factor, "multiplicative"), 0, 1)
    np.testing.assert_allclose(ours, pil, atol=1 / 255 + 1e-6)


def test_additive_brightness_is_x_plus_delta():
    np.testing.assert_allclose(augment.adjust_brightness(IMAGE, -0.2, "additive").numpy(),
                               IMAGE - 0.2, atol=1e-6)


@pytest.mark.parametrize("factor", [0.2, 0.7, 1.6])
def test_grey_mean_contrast_matches_numpy_and_pil(factor):
    mean = (IMAGE @ PIL_WEIGHTS).mean()
    out = augment.adjust_contrast(IMAGE, factor, "grey_mean", tuple(PIL_WEIGHTS)).numpy()
    np.testing.assert_allclose(out, (IMAGE - mean) * factor + mean, atol=1e-6)
    # PIL rounds the grey mean to an integer level and the result to uint8.
    pil = pil_float(ImageEnhance.Contrast(Image.fromarray(IMAGE_U8)).enhance(factor))
    ours = np.clip(augment.adjust_contrast(IMAGE_U8 / 255.0, factor, "grey_mean",
                                           tuple(PIL_WEIGHTS)), 0, 1)
    np.testing.assert_allclose(ours, pil, atol=(1 + abs(1 - factor)) / 255 + 1e-6)


def test_channel_mean_contrast_matches_numpy():
    mean = IMAGE.mean(axis=(0, 1), keepdims=True)
    np.testing.assert_allclose(augment.adjust_contrast(IMAGE, 1.4, "channel_mean").numpy(),
                               (IMAGE - mean) * 1.4 + mean, atol=1e-6)


@pytest.mark.parametrize("factor", [0.2, 0.9, 1.8])
def test_grey_blend_saturation_matches_numpy_and_pil(factor):
    grey = (IMAGE @ PIL_WEIGHTS)[..., None]
    out = augment.adjust_saturation(IMAGE, factor, "grey_blend", tuple(PIL_WEIGHTS)).numpy()
    np.testing.assert_allclose(out, (IMAGE - grey) * factor + grey, atol=1e-6)
    pil = pil_float(ImageEnhance.Color(Image.fromarray(IMAGE_U8)).enhance(factor))
    ours = np.clip(augment.adjust_saturation(IMAGE_U8 / 255.0, factor, "grey_blend",
                                             tuple(PIL_WEIGHTS)), 0, 1)
    np.testing.assert_allclose(ours, pil, atol=(1 + factor) / 255 + 1e-6)


def test_pil_grayscale_weights_match_numpy_and_pil():
    out = augment.to_grayscale(IMAGE_U8 / 255.0, tuple(PIL_WEIGHTS)).numpy()
    expected = (IMAGE_U8 / 255.0) @ PIL_WEIGHTS
    for channel in range(3):
        np.testing.assert_allclose(out[..., channel], expected, atol=1e-6)
    pil = pil_float(Image.fromarray(IMAGE_U8).convert("L"))
    np.testing.assert_allclose(out[..., 0], pil, atol=0.5 / 255 + 1e-6)


def test_multiplicative_brightness_factor_range_and_probability():
    image = tf.fill([4, 4, 3], 0.5)

    def jitter(seed):
        return augment.color_jitter(image, seed, brightness=0.8, contrast=0.0, saturation=0.0,
                                    hue=0.0, prob=0.8, brightness_mode="multiplicative")

    factor = map_over_seeds(jitter)[:, 0, 0, 0] / 0.5
    applied = np.abs(factor - 1) > 1e-6
    assert abs(applied.mean() - 0.8) <= 4.5 * math.sqrt(0.16 / 400)
    assert factor.min() >= 0.2 - 1e-6 and factor.max() <= 1.8 + 1e-6  # U[max(0, 1-b), 1+b]
    assert factor[applied].min() < 0.3 and factor[applied].max() > 1.7


def test_torchvision_color_jitter_equals_its_ops_in_order_with_clips():
    image = tf.constant(RNG.rand(9, 11, 3), tf.float32)
    seed = tf.constant([2, 7], tf.int64)
    _, order_seed, b_seed, c_seed, s_seed, h_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 6))
    b = tf.random.stateless_uniform([], b_seed, 0.2, 1.8).numpy()
    c = tf.random.stateless_uniform([], c_seed, 0.2, 1.8).numpy()
    s = tf.random.stateless_uniform([], s_seed, 0.2, 1.8).numpy()
    h = tf.random.stateless_uniform([], h_seed, -0.2, 0.2)
    order = np.argsort(tf.random.stateless_uniform([4], order_seed).numpy())
    x = image.numpy()
    for step in order:
        if step == 0:
            x = x * b
        elif step == 1:
            mean = (x @ PIL_WEIGHTS).mean()
            x = (x - mean) * c + mean
        elif step == 2:
            grey = (x @ PIL_WEIGHTS)[..., None]
            x = (x - grey) * s + grey
        else:
            x = tf.image.adjust_hue(x, h).numpy()
        x = np.clip(x, 0.0, 1.0)
    out = augment.color_jitter(image, seed, 0.8, 0.8, 0.8, 0.2, prob=1.0,
                               brightness_mode="multiplicative", contrast_mode="grey_mean",
                               saturation_mode="grey_blend", grayscale_weights=tuple(PIL_WEIGHTS))
    np.testing.assert_allclose(out.numpy(), x, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Blur.


def numpy_separable(image, taps, pad_mode, passes=1):
    """Each axis: `passes` 1-D convolutions with `taps` (odd length), numpy.pad `pad_mode`."""
    radius = len(taps) // 2
    out = image.astype(np.float64)
    for axis in (0, 1):
        for _ in range(passes):
            pad = [[0, 0]] * 3
            pad[axis] = [radius, radius]
            padded = np.pad(out, pad, mode=pad_mode)
            n = out.shape[axis]
            out = sum(t * np.take(padded, np.arange(k, k + n), axis=axis)
                      for k, t in enumerate(taps))
    return out


def gaussian_numpy_taps(sigma, radius):
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
    return taps / taps.sum()


@pytest.mark.parametrize("sigma,radius", [(1.3, 3), (2.0, 11)])
def test_zero_padded_gaussian_blur_matches_numpy(sigma, radius):
    # BYOL / SimCLR: a 'SAME' convolution pads with zeros, darkening the borders.
    image = RNG.rand(24, 20, 3).astype(np.float32)
    out = blur.gaussian_blur(image, sigma, radius, padding="zeros").numpy()
    expected = numpy_separable(image, gaussian_numpy_taps(sigma, radius), "constant")
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out[0].mean() < image[0].mean() - 0.05  # the darkened border


def test_fixed_23_tap_gaussian_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    image = RNG.rand(40, 36, 3).astype(np.float32)  # SwAV's 23 taps, even on a small crop
    for sigma in (0.4, 1.7):
        expected = cv2.GaussianBlur(image, (23, 23), sigma)  # BORDER_REFLECT_101
        out = augment.random_gaussian_blur(tf.constant(image), tf.constant([0, 1]), prob=1.0,
                                           sigma_range=(sigma, sigma), kernel_size=23).numpy()
        np.testing.assert_allclose(out, expected, atol=1e-5)


def pil_box_numpy_taps(sigma, passes=3):
    sigma2 = sigma * sigma / passes
    length = math.sqrt(12 * sigma2 + 1)
    whole = math.floor((length - 1) / 2)
    radius = whole + ((2 * whole + 1) * (whole * (whole + 1) - 3 * sigma2)
                      / (6 * (sigma2 - (whole + 1) ** 2)))
    inner = 1 / (2 * radius + 1)
    r = int(radius)
    outer = (1 - (2 * r + 1) * inner) / 2
    return np.array([outer] + [inner] * (2 * r + 1) + [outer])


@pytest.mark.parametrize("sigma", [0.1, 0.8, 1.45, 2.0])
def test_pil_box_blur_matches_numpy_and_pil(sigma):
    image = IMAGE_U8.astype(np.float32) / 255.0
    taps = pil_box_numpy_taps(sigma)
    np.testing.assert_allclose(taps.sum(), 1.0, atol=1e-9)
    variance = 3 * (taps * (np.arange(len(taps)) - len(taps) // 2) ** 2).sum()
    np.testing.assert_allclose(variance, sigma ** 2, rtol=1e-4)  # PIL's "radius" is sigma
    out = blur.pil_box_blur(image, sigma).numpy()
    np.testing.assert_allclose(out, numpy_separable(image, taps, "edge", passes=3), atol=1e-5)
    # PIL itself: the same up to its uint8 rounding after each of its six passes.
    pil = pil_float(Image.fromarray(IMAGE_U8).filter(ImageFilter.GaussianBlur(radius=sigma)))
    assert np.abs(out - pil).max() <= 3.5 / 255 and np.abs(out - pil).mean() < 1.5 / 255
    assert abs((out - pil).mean()) < 0.2 / 255  # rounding noise, no bias


def test_random_blur_picks_the_kernel_of_the_table():
    image = tf.constant(RNG.rand(20, 20, 3), tf.float32)
    seed = tf.constant([1, 3])
    params = augment_tables.MOCO_V2_TABLE[("odd", "large")]
    out = augment.random_gaussian_blur(image, seed, 1.0, (1.2, 1.2), kernel=params.blur_kernel,
                                       padding=params.blur_padding).numpy()
    np.testing.assert_allclose(out, blur.pil_box_blur(image, 1.2).numpy(), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Crop and resize.


@pytest.mark.parametrize("size", [9, 30])
def test_bilinear_antialias_resize_matches_pil(size):
    # torchvision's RandomResizedCrop on PIL images: PIL's bilinear filter, whose support widens
    # when shrinking (computed by PIL in float mode "F", channel by channel).
    crop = RNG.rand(19, 23, 3).astype(np.float32)
    out = augment.resize(crop, size, "bilinear_antialias").numpy()
    for channel in range(3):
        pil = np.asarray(Image.fromarray(crop[..., channel], mode="F").resize(
            (size, size), Image.BILINEAR))
        np.testing.assert_allclose(out[..., channel], pil, atol=1e-4)


def test_byol_crop_box_matches_numpy_formula():
    height, width = 60.0, 90.0
    draws = RNG.rand(200, 4)
    for area_u, ratio_u, top_u, left_u in draws:
        area_fraction = 0.08 + 0.92 * area_u
        log_ratio = math.log(3 / 4) + ratio_u * (math.log(4 / 3) - math.log(3 / 4))
        box = augment.byol_crop_box(tf.constant(height), tf.constant(width),
                                    tf.constant(area_fraction, tf.float32),
                                    tf.constant(log_ratio, tf.float32),
                                    tf.constant([top_u, left_u], tf.float32)).numpy()
        area = area_fraction * height * width
        w = min(round(math.sqrt(area * math.exp(log_ratio))), width)
        h = min(round(math.sqrt(area / math.exp(log_ratio))), height)
        expected = [math.floor(top_u * (height - h + 1)), math.floor(left_u * (width - w + 1)),
                    h, w]
        assert list(box) == expected


def test_byol_sampler_clamps_instead_of_retrying():
    # Area up to 100 % on a square image: candidates wider than the image are clamped (full
    # width) rather than redrawn, so many crops span the whole width.
    boxes = map_over_seeds(lambda s: augment.sample_crop_box(
        tf.constant([50, 50, 3]), s, (0.5, 1.0), sampler="byol"))
    assert (boxes[:, 3] <= 50).all() and (boxes[:, 2] <= 50).all()
    assert (boxes[:, 3] == 50).mean() > 0.1
    retried = map_over_seeds(lambda s: augment.sample_crop_box(
        tf.constant([50, 50, 3]), s, (0.5, 1.0), sampler="torchvision"))
    assert (retried[:, 3] == 50).mean() < (boxes[:, 3] == 50).mean() / 2


def test_tf_distorted_box_sampler_uniform_aspect_and_min_covered():
    # SimCLR's sampler: aspect ratio uniform (not log-uniform) and crops of at least
    # min_object_covered = 10 % of the image even when the area range starts at 1 %.
    def box(seed, area_range):
        return augment.sample_crop_box(tf.constant([400, 400, 3]), seed, area_range,
                                       max_attempts=100,
                                       sampler="tf_sample_distorted_bounding_box",
                                       min_object_covered=0.1)

    boxes = map_over_seeds(lambda s: box(s, (0.01, 0.5)), n=1500).astype(np.float64)
    top, left, h, w = boxes.T
    area = h * w / 400 ** 2
    assert area.min() >= 0.1 - 0.005 and area.max() <= 0.5 + 0.01
    assert (top + h <= 400).all() and (left + w <= 400).all()
    ratio = w / h
    assert ratio.min() >= 0.74 and ratio.max() <= 1.35
    uniform_mean = (3 / 4 + 4 / 3) / 2
    log_uniform_mean = (4 / 3 - 3 / 4) / math.log(16 / 9)
    assert abs(ratio.mean() - uniform_mean) < abs(ratio.mean() - log_uniform_mean)
    assert abs(ratio.mean() - uniform_mean) < 0.012
