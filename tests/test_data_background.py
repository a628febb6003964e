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


def numpy_fill(image, mask):
    """Independent normalised-convolution fill: separable Gaussian (sigma = 0.1 x side, radius
    min(3 sigma, side - 1)), reflect padding, mean-colour fallback weighted by 1e-3."""
    side = max(image.shape[:2])
    sigma = background.FILL_SIGMA_FRACTION * side
    radius = min(int(3 * sigma), image.shape[0] - 1, image.shape[1] - 1)
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
    taps /= taps.sum()
    weight = 1.0 - mask
    stack = np.concatenate([image * weight, weight], axis=-1).astype(np.float64)
    padded = np.pad(stack, [[radius, radius], [radius, radius], [0, 0]], mode="reflect")
    blurred = np.zeros_like(stack)
    for a, ka in enumerate(taps):
        for b, kb in enumerate(taps):
            blurred += ka * kb * padded[a:a + stack.shape[0], b:b + stack.shape[1]]
    mean = (image * weight).sum((0, 1)) / (weight.sum((0, 1)) + 1e-6)
    fill = (blurred[..., :3] + 1e-3 * mean) / (blurred[..., 3:] + 1e-3)
    return mask * fill + (1 - mask) * image


def test_background_only_fills_the_object_from_its_own_background():
    image, mask = OTHER
    out = background.background_only(image, mask).numpy()
    inside = mask[..., 0] == 1
    np.testing.assert_array_equal(out[~inside], image[~inside])  # background untouched
    np.testing.assert_allclose(out, numpy_fill(image, mask), atol=1e-5)


def test_background_only_leaves_no_colour_of_the_object():
    # A pure-red object on a smooth red-free background: after removal no red remains, and the
    # fill continues the background (a gradient) instead of a flat patch.
    size = 24
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    image = np.stack([np.zeros_like(x), 0.2 + 0.6 * x, 0.8 - 0.6 * y], -1).astype(np.float32)
    mask = np.zeros([size, size, 1], np.float32)
    mask[8:16, 6:18] = 1.0
    image[mask[..., 0] == 1] = (1.0, 0.0, 0.0)
    out = background.background_only(image, mask).numpy()
    assert out[..., 0].max() < 1e-6
    inside = out[8:16, 6:18, 1]
    assert inside[:, -1].mean() - inside[:, 0].mean() > 0.1  # still rising with x


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
    # Where the other image has its own object, its removed-object fill shows instead.
    hole = ~fg & other_fg
    assert hole.any()
    np.testing.assert_allclose(out[hole], numpy_fill(other, other_mask)[hole], atol=1e-5)


# BG_Swaps on synthetic images with known masks: the anchor is noise (channels in [0, 0.5]) with a
# pure-green disc; the other image is a pure-red square on pure blue, of another size and place.
def disc_example(size=32, centre=(15, 13), radius=6):
    rng = np.random.RandomState(5)
    image = (rng.rand(size, size, 3) * 0.5).astype(np.float32)
    y, x = np.mgrid[0:size, 0:size]
    mask = (((y - centre[0]) ** 2 + (x - centre[1]) ** 2) <= radius ** 2)[..., None]
    image[mask[..., 0]] = (0.0, 1.0, 0.0)
    return image, mask.astype(np.float32)


def square_example(shape=(20, 30), box=(4, 15, 9, 9), fg=(1.0, 0.0, 0.0), bg=(0.0, 0.0, 1.0)):
    image = np.empty(shape + (3,), np.float32)
    image[:] = bg
    mask = np.zeros(shape + (1,), np.float32)
    top, left, h, w = box
    mask[top:top + h, left:left + w] = 1.0
    image[mask[..., 0] == 1] = fg
    return image, mask


def test_hard_negative_other_foreground_covers_anchor_object_on_anchor_background():
    anchor, anchor_mask = disc_example()
    other, other_mask = square_example()
    negative, moved_mask = background.bg_swaps_hard_negative(anchor, anchor_mask, other,
                                                             other_mask)
    negative, moved_mask = negative.numpy(), moved_mask.numpy()[..., 0]
    anchor_fg = anchor_mask[..., 0] == 1
    # The other's object was moved over the anchor's: it covers every anchor-object pixel.
    assert moved_mask[anchor_fg].min() > 1 - 1e-5
    # Its pixels are the other image's foreground (pure red) ...
    covered = moved_mask > 1 - 1e-5
    np.testing.assert_allclose(negative[covered], np.broadcast_to((1.0, 0.0, 0.0),
                                                                  negative[covered].shape),
                               atol=1e-5)
    # ... its background pixels the anchor's, exactly, and nothing of the anchor's green object
    # (whose silhouette the square hides) nor of the other's blue background is left.
    outside = (moved_mask == 0) & ~anchor_fg
    np.testing.assert_array_equal(negative[outside], anchor[outside])
    assert negative[..., 1].max() <= 0.5 + 1e-6
    assert outside.mean() > 0.5 and covered.mean() > anchor_fg.mean()


def test_hard_negative_uncovered_part_of_anchor_object_shows_the_fill():
    # A square anchor object under a disc: the disc covers the square's box except its corners,
    # which show the removed-object fill of the anchor's background (the documented leakage).
    anchor, anchor_mask = square_example(shape=(32, 32), box=(8, 10, 13, 13), fg=(0.0, 1.0, 0.0),
                                         bg=(0.3, 0.2, 0.4))
    anchor = anchor + np.random.RandomState(6).rand(32, 32, 3).astype(np.float32) * 0.1
    other, other_mask = disc_example(size=28, centre=(12, 16), radius=7)
    negative, moved_mask = background.bg_swaps_hard_negative(anchor, anchor_mask, other,
                                                             other_mask)
    negative, moved_mask = negative.numpy(), moved_mask.numpy()[..., 0]
    anchor_fg = anchor_mask[..., 0] == 1
    uncovered = anchor_fg & (moved_mask == 0)
    fraction = uncovered.sum() / anchor_fg.sum()
    assert 0.02 < fraction < 1 - np.pi / 4 + 0.02, fraction  # only the corners
    np.testing.assert_allclose(negative[uncovered], numpy_fill(anchor, anchor_mask)[uncovered],
                               atol=1e-5)
    assert negative[uncovered][:, 1].max() < 0.4  # the fill, not the green object


def triplet(seed, prob=1.0, other_mask_scale=1.0):
    anchor, anchor_mask = disc_example()
    positive = np.roll(anchor, 2, axis=1)  # another crop of the same image
    positive_mask = np.roll(anchor_mask, 2, axis=1)
    other, other_mask = square_example()
    # The other image cut with the positive's crop (aligned with it): here its top-left corner.
    other_crop, other_crop_mask = other[:, :20], other_mask[:, :20]
    other_crop = np.pad(other_crop, [[0, 12], [0, 12], [0, 0]], mode="edge")
    other_crop_mask = np.pad(other_crop_mask, [[0, 12], [0, 12], [0, 0]], mode="edge")
    return background.bg_swaps(anchor, anchor_mask, positive, positive_mask, other_crop,
                               other_crop_mask, other, other_mask * other_mask_scale, seed,
                               prob, 0.05)


def test_bg_swaps_triplet_positive_and_negative_share_the_other_image():
    positive, negative, applied = triplet(tf.constant([1, 2]))
    assert bool(applied)
    positive, negative = positive.numpy(), negative.numpy()
    anchor, anchor_mask = disc_example()
    fg = np.roll(anchor_mask, 2, axis=1)[..., 0] == 1
    # Positive: the anchor's object on the other image's background (pure blue, which is also
    # the fill of the other's removed square).
    np.testing.assert_array_equal(positive[fg], np.roll(anchor, 2, axis=1)[fg])
    np.testing.assert_allclose(positive[~fg], np.broadcast_to((0.0, 0.0, 1.0),
                                                              positive[~fg].shape), atol=1e-5)
    # Negative: that same other image's object (pure red) over the anchor's object.
    anchor_fg = anchor_mask[..., 0] == 1
    np.testing.assert_allclose(negative[anchor_fg], np.broadcast_to((1.0, 0.0, 0.0),
                                                                    negative[anchor_fg].shape),
                               atol=1e-5)


def test_bg_swaps_one_decision_for_the_triplet():
    results = in_tf_data(lambda s: triplet(s, prob=0.5), 200)
    applied = np.array([bool(a) for _, _, a in results])
    assert abs(applied.mean() - 0.5) <= 4.5 * math.sqrt(0.25 / 200)
    anchor, anchor_mask = disc_example()
    unchanged = np.roll(anchor, 2, axis=1)
    for positive, _, a in results:
        assert np.array_equal(positive, unchanged) != bool(a)  # swapped exactly when applied
    # Without foreground in the other image the triplet never applies.
    _, _, a = triplet(tf.constant([0, 0]), other_mask_scale=0.0)
    assert not bool(a)


def test_saliency_masking_one_masked_copy_per_image_each_view_its_own_draw():
    """Appendix E listing: x_m = remove_background(x) once (one grey ~ U[0, 1]), then each large
    view takes x_m with probability p_m, independently of the other views."""
    image, mask = ANCHOR
    results = in_tf_data(lambda s: background.saliency_masking(image, mask, s, 4, 0.1, 0.1), 500)
    applied = np.array([a for _, a in results])  # [500, 4]
    assert abs(applied.mean() - 0.1) <= 4.5 * math.sqrt(0.09 / 2000)
    results = in_tf_data(lambda s: background.saliency_masking(image, mask, s, 2, 0.5, 0.1), 800)
    applied = np.array([a for _, a in results])
    both = np.mean(applied[:, 0] & applied[:, 1])  # independent draws: 0.25
    assert abs(both - 0.25) <= 4.5 * math.sqrt(0.25 * 0.75 / 800)
    for views, a in results[:50]:  # a view is the original or the one masked copy
        for view, on in zip(views, a):
            expected = views[int(np.argmax(a))] if on else image
            np.testing.assert_array_equal(view, expected)
    fg = mask[..., 0] == 1
    greys = []
    for views, a in in_tf_data(lambda s: background.saliency_masking(image, mask, s, 3, 1.0, 0.1),
                               300):
        assert a.all()
        np.testing.assert_array_equal(views[0], views[2])  # the same masked copy
        np.testing.assert_array_equal(views[0][fg], image[fg])
        grey = views[0][~fg]
        assert np.all(grey == grey[0, 0])  # one homogeneous grey level per image
        greys.append(grey[0, 0])
    greys = np.array(greys)
    assert greys.min() >= 0 and greys.max() <= 1
    assert abs(greys.mean() - 0.5) < 0.06 and greys.min() < 0.05 and greys.max() > 0.95


def test_saliency_masking_threshold_is_on_the_whole_images_mask():
    image, mask = ANCHOR  # the mask covers 30 / 144 of the image
    _, applied = background.saliency_masking(image, mask, tf.constant([0, 0]), 2, 1.0, 0.5)
    assert not np.any(applied)
    _, applied = background.saliency_masking(image, mask, tf.constant([0, 0]), 2, 1.0, 0.2)
    assert np.all(applied)


def test_remove_background_keeps_uint8_images_uint8():
    image, mask = ANCHOR
    pixels = np.round(image * 255).astype(np.uint8)
    out = background.remove_background(tf.constant(pixels), mask, 0.3).numpy()
    assert out.dtype == np.uint8
    expected = np.round((mask * pixels / 255.0 + (1 - mask) * 0.3) * 255)
    np.testing.assert_allclose(out, expected, atol=1)  # float32 vs float64 rounding
    fg = mask[..., 0] == 1
    np.testing.assert_array_equal(out[fg], pixels[fg])
