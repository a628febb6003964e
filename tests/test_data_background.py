"""relicv2_tf.data.background on images with known masks: what is kept, what is replaced."""

import math

import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf.data import background

SIZE = 12


def known_example(seed, box):
    """Noise image with a rectangular foreground (mask 1 inside `box` = (top, left, h, w))."""
    rng = np.random.RandomState(seed)
    image = rng.rand(SIZE, SIZE, 3).astype(np.float32)
    mask = np.zeros([SIZE, SIZE, 1], np.float32)
    top, left, h, w = box
    mask[top:top + h, left:left + w] = 1.0
    return image, mask


ANCHOR = known_example(0, (2, 2, 6, 5))
OTHER = known_example(1, (5, 4, 5, 6))


def seeds(n):
    return tf.stack([tf.fill([n], 11), tf.range(n)], axis=1)


def in_tf_data(fn, n):
    return list(tf.data.Dataset.from_tensor_slices(seeds(n)).map(fn).as_numpy_iterator())


def test_composite_keeps_foreground_and_replaces_background():
    image, mask = ANCHOR
    out = background.composite(image, mask, 0.25).numpy()
    inside = mask[..., 0] == 1
    np.testing.assert_array_equal(out[inside], image[inside])
    np.testing.assert_array_equal(out[~inside], 0.25)


def test_background_only_fills_foreground_with_mean_background_colour():
    image, mask = OTHER
    out = background.background_only(image, mask).numpy()
    inside = mask[..., 0] == 1
    np.testing.assert_array_equal(out[~inside], image[~inside])
    np.testing.assert_allclose(out[inside], np.broadcast_to(image[~inside].mean(0), out[inside].shape),
                               atol=1e-5)


@pytest.mark.parametrize("mode", ["eager", "tf.data"])
def test_bg_rm_replaces_only_background_with_grey(mode):
    image, mask = ANCHOR
    fn = lambda s: background.bg_rm(image, mask, s, prob=1.0, min_fraction=0.1)  # noqa: E731
    results = ([fn(s) for s in tf.unstack(seeds(3))] if mode == "eager" else in_tf_data(fn, 3))
    inside = mask[..., 0] == 1
    for out, applied in results:
        out = np.asarray(out)
        assert bool(applied)
        np.testing.assert_array_equal(out[inside], image[inside])
        np.testing.assert_array_equal(out[~inside], 0.5)


def test_bg_rm_probability_and_min_fraction():
    image, mask = ANCHOR
    results = in_tf_data(lambda s: background.bg_rm(image, mask, s, 0.3, 0.1), 400)
    applied = np.array([a for _, a in results])
    assert abs(applied.mean() - 0.3) <= 4.5 * math.sqrt(0.3 * 0.7 / 400)
    for out, a in results:
        if not a:
            np.testing.assert_array_equal(out, image)
    # Coverage 30/144 < 0.5: never applied, whatever the probability.
    out, applied = background.bg_rm(image, mask, tf.constant([0, 1]), 1.0, min_fraction=0.5)
    assert not bool(applied)
    np.testing.assert_array_equal(out.numpy(), image)
    # An all-zero (missing) mask never greys out the whole view.
    out, applied = background.bg_rm(image, np.zeros_like(mask), tf.constant([0, 1]), 1.0, 0.0)
    assert bool(applied)  # min_fraction 0 allows it; the caller's default is > 0
    out, applied = background.bg_rm(image, np.zeros_like(mask), tf.constant([0, 1]), 1.0, 0.01)
    assert not bool(applied)


def test_bg_random_pastes_foreground_on_other_background():
    image, mask = ANCHOR
    other, other_mask = OTHER
    out, applied = background.bg_random(image, mask, other, other_mask, tf.constant([2, 3]),
                                        1.0, 0.1)
    out = out.numpy()
    assert bool(applied)
    fg = mask[..., 0] == 1
    other_fg = other_mask[..., 0] == 1
    np.testing.assert_array_equal(out[fg], image[fg])  # foreground untouched
    both_bg = ~fg & ~other_fg
    np.testing.assert_allclose(out[both_bg], other[both_bg], atol=1e-6)  # other's background
    # Where the other image has its own object, its mean background colour shows instead.
    hole = ~fg & other_fg
    assert hole.any()
    np.testing.assert_allclose(out[hole], np.broadcast_to(other[~other_fg].mean(0),
                                                          out[hole].shape), atol=1e-5)


def test_bg_swaps_hard_negative_is_other_foreground_on_anchor_background():
    image, mask = ANCHOR
    other, other_mask = OTHER
    negative = background.bg_swaps_hard_negative(image, mask, other, other_mask).numpy()
    fg = mask[..., 0] == 1
    other_fg = other_mask[..., 0] == 1
    np.testing.assert_array_equal(negative[other_fg], other[other_fg])  # other's object
    anchor_bg = ~fg & ~other_fg
    np.testing.assert_allclose(negative[anchor_bg], image[anchor_bg], atol=1e-6)  # anchor's bg
    # The anchor's own object is removed (filled with its background colour), not kept.
    anchor_object = fg & ~other_fg
    assert anchor_object.any()
    np.testing.assert_allclose(negative[anchor_object],
                               np.broadcast_to(image[~fg].mean(0), negative[anchor_object].shape),
                               atol=1e-5)
    assert np.abs(negative[anchor_object] - image[anchor_object]).max() > 0.1
    # The positive of BG_Swaps is the anchor's object on the other background.
    positive, _ = background.bg_swaps_positive(image, mask, other, other_mask,
                                               tf.constant([0, 0]), 1.0, 0.1)
    np.testing.assert_array_equal(positive.numpy()[fg], image[fg])


def test_bg_swaps_valid_needs_both_masks_and_probability():
    _, mask = ANCHOR
    _, other_mask = OTHER
    valid = [bool(v) for v in in_tf_data(
        lambda s: background.bg_swaps_hard_negative_valid(mask, other_mask, s, 0.5, 0.1), 300)]
    assert abs(np.mean(valid) - 0.5) <= 4.5 * math.sqrt(0.25 / 300)
    assert not bool(background.bg_swaps_hard_negative_valid(mask, np.zeros_like(other_mask),
                                                            tf.constant([0, 0]), 1.0, 0.1))


def test_saliency_masking_grey_level_uniform_per_image_and_probability():
    image, mask = ANCHOR
    results = in_tf_data(lambda s: background.saliency_masking(image, mask, s, 0.1, 0.1), 500)
    applied = np.array([a for _, a in results])
    assert abs(applied.mean() - 0.1) <= 4.5 * math.sqrt(0.09 / 500)
    fg = mask[..., 0] == 1
    results = in_tf_data(lambda s: background.saliency_masking(image, mask, s, 1.0, 0.1), 300)
    greys = []
    for out, a in results:
        assert a
        np.testing.assert_array_equal(out[fg], image[fg])
        grey = out[~fg]
        assert np.all(grey == grey[0, 0])  # one homogeneous grey level per image
        greys.append(grey[0, 0])
    greys = np.array(greys)
    assert greys.min() >= 0 and greys.max() <= 1
    assert abs(greys.mean() - 0.5) < 0.06 and greys.min() < 0.05 and greys.max() > 0.95
    # Not applied when the mask covers less than the threshold.
    _, applied = background.saliency_masking(image, mask, tf.constant([0, 0]), 1.0, 0.5)
    assert not bool(applied)
