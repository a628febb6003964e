"""relicv2_tf.data.augment and .blur: each op against numpy, its probability and ranges, eager
and in tf.data."""

import math

import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf import config as config_lib
from relicv2_tf.data import augment, augment_tables, blur, normalize
from relicv2_tf.data import views as views_lib

NUM_SAMPLES = 400


def seeds(n, offset=0):
    return tf.stack([tf.fill([n], 7), tf.range(offset, offset + n)], axis=1)


def map_over_seeds(fn, n=NUM_SAMPLES, batch=100):
    """fn(seed) over n seeds inside a tf.data map; returns the stacked numpy results."""
    dataset = tf.data.Dataset.from_tensor_slices(seeds(n)).map(fn).batch(batch)
    parts = list(dataset.as_numpy_iterator())
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(p) for p in zip(*parts))
    return np.concatenate(parts)


def binomial_ok(hits, n, p, sigmas=4.5):
    return abs(hits / n - p) <= sigmas * math.sqrt(p * (1 - p) / n) + 1e-9


def pretraining_view(image, seed, size, params, mask=None):
    """One large view the way pretraining makes it (`views.make_views`: `crop_flip` then
    `finish_view`, default data config); with `mask`, also the view's mask."""
    mask = None if mask is None else normalize.to_unit_float(tf.convert_to_tensor(mask))
    crop = views_lib.crop_flip(image, mask, None, None, seed, size, params)
    view = views_lib.finish_view(crop, params, config_lib.get_default_config().data)
    return view if mask is None else (view, crop.mask)


def test_table_16_parities_and_sizes():
    # 1st and 3rd large views and the 1st small view are "odd" (appendix F.1).
    assert augment_tables.view_parity(0) == augment_tables.view_parity(2) == "odd"
    assert augment_tables.view_parity(1) == augment_tables.view_parity(3) == "even"
    odd_large = augment_tables.view_augmentation(0, "large")
    even_large = augment_tables.view_augmentation(1, "large")
    assert (odd_large.blur_prob, odd_large.solarize_prob) == (0.1, 0.2)
    assert (even_large.blur_prob, even_large.solarize_prob) == (1.0, 0.0)
    assert odd_large.crop_area_range == (0.14, 1.0)
    assert even_large.crop_area_range == (0.08, 1.0)
    for index in (0, 1):
        small = augment_tables.view_augmentation(index, "small")
        assert small.crop_area_range == (0.05, 0.14)
    assert augment_tables.view_augmentation(0, "small").solarize_prob == 0.2
    assert augment_tables.view_augmentation(1, "small").blur_prob == 1.0
    for params in augment_tables.TABLE_16.values():
        assert (params.brightness, params.contrast, params.saturation, params.hue) == (
            0.4, 0.4, 0.2, 0.1)
        assert (params.color_jitter_prob, params.grayscale_prob, params.flip_prob) == (
            0.8, 0.2, 0.5)


def test_crop_box_area_and_log_uniform_aspect():
    height, width = 300, 300

    def box(seed):
        return augment.sample_crop_box(tf.constant([height, width, 3]), seed, (0.05, 0.14))

    boxes = map_over_seeds(box, n=1000, batch=500).astype(np.float64)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    area = h * w / (height * width)
    assert area.min() >= 0.05 * 0.97 and area.max() <= 0.14 * 1.03
    assert abs(area.mean() - 0.095) < 0.004  # uniform in area
    log_ratio = np.log(w / h)
    # Log-uniform on [log 3/4, log 4/3]: compare the empirical CDF with the uniform one.
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    assert log_ratio.min() >= lo - 0.03 and log_ratio.max() <= hi + 0.03
    grid = np.linspace(lo, hi, 21)
    empirical = np.array([(log_ratio <= g).mean() for g in grid])
    assert np.abs(empirical - (grid - lo) / (hi - lo)).max() < 0.05


def test_crop_box_falls_back_to_whole_image_for_extreme_aspect():
    # A 10 x 200 strip: no 8-100 % box with aspect 3/4-4/3 fits, so the centre crop clamped to
    # the aspect range is used.
    box = augment.sample_crop_box(tf.constant([10, 200, 3]), tf.constant([1, 2]))
    assert box.numpy().tolist() == [0, 93, 10, 13]


@pytest.mark.parametrize("size", [16, 32, 224])
def test_pretraining_crop_flip_keeps_mask_aligned(size):
    rng = np.random.RandomState(0)
    mask = np.zeros([64, 80, 1], np.uint8)
    mask[10:40, 20:50] = 255
    mask[45:60, 60:75] = 255
    image = np.repeat(mask, 3, axis=-1).astype(np.float32) / 255.0
    image[..., 1] = rng.rand(64, 80)  # an unrelated channel

    params = augment_tables.ViewAugmentation(crop_area_range=(0.2, 1.0), blur_prob=0.0,
                                             solarize_prob=0.0)

    def crop(seed):  # what `views.make_views` does with an example's image and mask
        cropped = views_lib.crop_flip(image, normalize.to_unit_float(tf.constant(mask)), None,
                                      None, seed, size, params)
        return cropped.view, cropped.mask

    views, masks = map_over_seeds(crop, n=100)
    assert views.shape == (100, size, size, 3) and masks.shape == (100, size, size, 1)
    assert masks.min() >= 0 and masks.max() <= 1
    image_fg, mask_fg = views[..., 0] > 0.5, masks[..., 0] > 0.5
    agree = (image_fg == mask_fg).mean()
    assert agree > 0.97, agree


def test_random_flip_probability_and_exactness():
    image = tf.reshape(tf.range(2 * 3 * 3, dtype=tf.float32), [2, 3, 3])
    flipped = map_over_seeds(lambda s: augment.random_flip(image, s))
    is_flipped = np.all(flipped == image.numpy()[:, ::-1], axis=(1, 2, 3))
    is_same = np.all(flipped == image.numpy(), axis=(1, 2, 3))
    assert np.all(is_flipped ^ is_same)
    assert binomial_ok(is_flipped.sum(), NUM_SAMPLES, 0.5)


def test_brightness_is_additive_uniform_delta_with_probability_08():
    image = tf.fill([4, 4, 3], 0.5)

    def jitter(seed):  # brightness only: contrast/saturation/hue factors are exactly 1 / 0
        return augment.color_jitter(image, seed, brightness=0.4, contrast=0.0, saturation=0.0,
                                    hue=0.0, prob=0.8)

    out = map_over_seeds(jitter)
    delta = out - 0.5
    constant = np.abs(delta - delta[:, :1, :1, :1]).max(axis=(1, 2, 3)) < 1e-5
    assert constant.all()  # additive: every pixel moves by the same delta
    delta = delta[:, 0, 0, 0]
    applied = np.abs(delta) > 1e-6
    assert binomial_ok(applied.sum(), NUM_SAMPLES, 0.8)
    assert np.abs(delta).max() <= 0.4 + 1e-6
    assert np.abs(delta[applied]).max() > 0.35  # reaches the range
    assert abs(delta[applied].mean()) < 0.05


def test_adjust_contrast_saturation_hue_match_numpy():
    skimage_color = pytest.importorskip("skimage.color")
    rng = np.random.RandomState(1)
    image = rng.rand(6, 7, 3).astype(np.float32) * 0.8 + 0.1
    mean = image.mean(axis=(0, 1), keepdims=True)
    np.testing.assert_allclose(augment.adjust_contrast(image, 1.3).numpy(),
                               (image - mean) * 1.3 + mean, atol=1e-6)
    hsv = skimage_color.rgb2hsv(image)
    saturated = hsv.copy()
    saturated[..., 1] = np.clip(hsv[..., 1] * 1.2, 0, 1)
    np.testing.assert_allclose(augment.adjust_saturation(image, 1.2).numpy(),
                               skimage_color.hsv2rgb(saturated), atol=1e-5)
    hued = hsv.copy()
    hued[..., 0] = (hsv[..., 0] + 0.07) % 1.0
    np.testing.assert_allclose(augment.adjust_hue(image, 0.07).numpy(),
                               skimage_color.hsv2rgb(hued), atol=1e-5)


def test_color_jitter_stays_in_unit_range_and_changes_with_seed():
    rng = np.random.RandomState(2)
    image = tf.constant(rng.rand(8, 8, 3), tf.float32)
    out = map_over_seeds(lambda s: augment.color_jitter(image, s), n=100)
    assert out.min() >= 0.0 and out.max() <= 1.0
    changed = np.abs(out - image.numpy()).max(axis=(1, 2, 3)) > 1e-6
    assert binomial_ok(changed.sum(), 100, 0.8)
    assert len({round(float(v), 5) for v in out[changed].mean(axis=(1, 2, 3))}) > 50


def test_grayscale_weights_and_probability():
    rng = np.random.RandomState(3)
    image = rng.rand(5, 5, 3).astype(np.float32)
    expected = image @ np.array([0.2989, 0.5870, 0.1140], np.float32)
    gray = augment.to_grayscale(image).numpy()
    for channel in range(3):
        np.testing.assert_allclose(gray[..., channel], expected, atol=1e-6)
    out = map_over_seeds(lambda s: augment.random_grayscale(tf.constant(image), s, 0.2))
    is_gray = np.abs(out - gray).max(axis=(1, 2, 3)) < 1e-6
    assert binomial_ok(is_gray.sum(), NUM_SAMPLES, 0.2)


def test_blur_kernel_sizes():
    assert 2 * blur.blur_kernel_radius(224) + 1 == 23  # BYOL / paper
    assert 2 * blur.blur_kernel_radius(96) + 1 == 9
    assert 2 * blur.blur_kernel_radius(32) + 1 == 3
    assert 2 * blur.blur_kernel_radius(16) + 1 == 3  # never a 1-tap no-op


@pytest.mark.parametrize("shape,sigma,radius", [((32, 40, 3), 1.3, 3), ((24, 24, 3), 0.1, 11),
                                                ((16, 16, 3), 2.0, 1)])
def test_gaussian_blur_matches_numpy_convolution(shape, sigma, radius):
    rng = np.random.RandomState(4)
    image = rng.rand(*shape).astype(np.float32)
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    padded = np.pad(image, [[radius, radius], [radius, radius], [0, 0]], mode="reflect")
    expected = np.zeros_like(image)
    for a, ka in enumerate(kernel):
        for b, kb in enumerate(kernel):
            expected += ka * kb * padded[a:a + shape[0], b:b + shape[1]]
    np.testing.assert_allclose(blur.gaussian_blur(image, sigma, radius).numpy(), expected,
                               atol=1e-5)


def test_random_blur_probability_and_sigma_range():
    image = np.zeros([24, 24, 3], np.float32)
    image[12, 12] = 1.0  # an impulse: the blurred centre row is the kernel itself

    def random_blur(seed):
        return augment.random_gaussian_blur(tf.constant(image), seed, prob=0.1)

    out = map_over_seeds(random_blur)
    blurred = np.abs(out - image).max(axis=(1, 2, 3)) > 1e-6
    assert binomial_ok(blurred.sum(), NUM_SAMPLES, 0.1)
    out = map_over_seeds(lambda s: augment.random_gaussian_blur(tf.constant(image), s, prob=1.0))
    # Recover sigma from the impulse response's second moment along the row (radius 1 at 24 px
    # truncates, so compare with the truncated-kernel moments of sigma 0.1 and 2.0).
    row = out[:, 12, 11:14, 0]
    row /= row.sum(axis=1, keepdims=True)
    moment = row[:, 0] + row[:, 2]

    def truncated_moment(sigma):
        k = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * sigma ** 2))
        return (k[0] + k[2]) / k.sum()

    assert moment.min() >= truncated_moment(0.1) - 1e-4
    assert moment.max() <= truncated_moment(2.0) + 1e-4
    assert moment.max() - moment.min() > 0.3  # sigma really varies


def test_solarize_and_probability():
    values = np.linspace(0, 1, 11, dtype=np.float32).reshape(1, 11, 1).repeat(3, axis=-1)
    expected = np.where(values < 0.5, values, 1 - values)
    np.testing.assert_allclose(augment.solarize(values).numpy(), expected)
    image = tf.constant(values)
    out = map_over_seeds(lambda s: augment.random_solarize(image, s, 0.2))
    solarized = np.abs(out - expected).max(axis=(1, 2, 3)) < 1e-7
    assert binomial_ok(solarized.sum(), NUM_SAMPLES, 0.2)


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_solarize_equals_the_definition_bit_for_bit(threshold):
    # The threshold-0.5 fast path (min(x, 1 - x)) must equal "x if x < t else 1 - x" exactly,
    # also just around the threshold and outside [0, 1].
    values = np.concatenate([np.linspace(-0.5, 1.5, 2001, dtype=np.float32),
                             np.nextafter(np.float32(threshold), [0, 1]).astype(np.float32),
                             np.float32([threshold])])
    expected = np.where(values < threshold, values, np.float32(1) - values)
    np.testing.assert_array_equal(augment.solarize(values, threshold).numpy(), expected)


def test_saturation_and_hue_keep_the_unit_range_so_color_jitter_skips_their_clip():
    # color_jitter clips only after brightness and contrast; that is BYOL's clip-after-every-step
    # only if these two never leave [0, 1] for inputs in [0, 1] (edge values included).
    rng = np.random.RandomState(3)
    image = rng.rand(16, 64, 64, 3).astype(np.float32)
    image = np.concatenate([image, np.round(image), np.ones_like(image[:2]),
                            np.zeros_like(image[:2])])
    for factor in (0.0, 0.8, 1.2, 3.0):
        out = augment.adjust_saturation(image, factor).numpy()
        assert out.min() >= 0.0 and out.max() <= 1.0, factor
    for delta in (-0.1, 0.03, 0.1, 0.5):
        out = augment.adjust_hue(image, delta).numpy()
        assert out.min() >= 0.0 and out.max() <= 1.0, delta


def test_color_jitter_equals_clipping_after_every_step():
    # Reference: BYOL's order of four ops, each followed by a clip, in numpy/tf.image directly.
    rng = np.random.RandomState(4)
    image = tf.constant(rng.rand(9, 11, 3), tf.float32)
    seed = tf.constant([3, 9], tf.int64)
    apply_seed, order_seed, b_seed, c_seed, s_seed, h_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 6))
    draws = [tf.random.stateless_uniform([], b_seed, -0.4, 0.4),
             tf.random.stateless_uniform([], c_seed, 0.6, 1.4),
             tf.random.stateless_uniform([], s_seed, 0.8, 1.2),
             tf.random.stateless_uniform([], h_seed, -0.1, 0.1)]
    order = np.argsort(tf.random.stateless_uniform([4], order_seed).numpy())
    x = image
    for step in order:
        x = [lambda x: x + draws[0], lambda x: tf.image.adjust_contrast(x, draws[1]),
             lambda x: tf.image.adjust_saturation(x, draws[2]),
             lambda x: tf.image.adjust_hue(x, draws[3])][step](x)
        x = tf.clip_by_value(x, 0.0, 1.0)
    out = augment.color_jitter(image, seed, prob=1.0)
    np.testing.assert_allclose(out.numpy(), x.numpy(), atol=1e-6)


OPS = {
    "random_resized_crop": lambda x, s: augment.random_resized_crop(x, s, 12, (0.08, 1.0)),
    "random_flip": lambda x, s: augment.random_flip(x, s),
    "color_jitter": lambda x, s: augment.color_jitter(x, s, prob=1.0),
    "random_grayscale": lambda x, s: augment.random_grayscale(x, s, 0.5),
    "random_gaussian_blur": lambda x, s: augment.random_gaussian_blur(x, s, 1.0),
    "random_solarize": lambda x, s: augment.random_solarize(x, s, 0.5),
    "pretraining_view": lambda x, s: pretraining_view(
        x, s, 16, augment_tables.view_augmentation(0, "large")),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_are_deterministic_and_identical_eagerly_and_in_tf_data(name):
    op = OPS[name]
    image = tf.constant(np.random.RandomState(5).rand(20, 20, 3), tf.float32)
    seed = tf.constant([3, 9], tf.int64)
    eager = op(image, seed).numpy()
    np.testing.assert_array_equal(eager, op(image, seed).numpy())
    in_data = next(iter(tf.data.Dataset.from_tensors(seed).map(lambda s: op(image, s))))
    np.testing.assert_allclose(in_data.numpy(), eager, atol=1e-6)
    others = [op(image, tf.constant([3, k], tf.int64)).numpy() for k in range(10, 30)]
    assert any(o.shape != eager.shape or np.abs(o - eager).max() > 1e-6 for o in others)


@pytest.mark.parametrize("size", [16, 32, 96])
def test_pretraining_view_ranges_at_small_sizes(size):
    image = tf.constant(np.random.RandomState(6).randint(0, 256, [40, 50, 3]), tf.uint8)
    mask = tf.constant(np.random.RandomState(7).randint(0, 2, [40, 50, 1]) * 255, tf.uint8)
    for index in range(2):
        params = augment_tables.view_augmentation(index, "large")
        view, view_mask = pretraining_view(image, tf.constant([1, index]), size, params,
                                           mask=mask)
        assert view.shape == (size, size, 3) and view_mask.shape == (size, size, 1)
        assert view.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(view)) and float(tf.reduce_max(view)) <= 1.0
        assert 0.0 <= float(tf.reduce_min(view_mask)) and float(tf.reduce_max(view_mask)) <= 1.0
