"""Handcrafted saliency priors (RBD, MR, DSR, MC) and saliency metrics."""

import numpy as np
import pytest

from relicv2_tf.saliency import handcrafted, metrics


def disc_image(size=64, seed=0):
    """A reddish disc on a striped, noisy green background -> (uint8 [S, S, 3], bool mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = rng.uniform(0.35, 0.65, 2)
    radius = rng.uniform(0.15, 0.25)
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
    background = np.stack([0.3 + 0.1 * np.sin(xx * 40 + seed), 0.5 + 0.1 * np.sin(yy * 30),
                           0.3 + 0 * xx], -1) + rng.normal(0, 0.05, (size, size, 3))
    foreground = np.array([0.85, 0.2, 0.2]) + rng.normal(0, 0.03, (size, size, 3))
    image = np.where(mask[..., None], foreground, background)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), mask


@pytest.fixture(scope="module")
def disc_maps():
    return [(mask, handcrafted.all_priors(image)) for image, mask in
            (disc_image(64, seed) for seed in range(3))]


@pytest.mark.parametrize("name", handcrafted.PRIOR_NAMES)
def test_each_prior_finds_the_disc(disc_maps, name):
    scores = [metrics.f_beta(maps[name], mask) for mask, maps in disc_maps]
    assert min(scores) > 0.75, scores
    mask = disc_maps[0][0]
    # the same threshold rejects uninformative maps
    assert metrics.f_beta(np.random.default_rng(0).uniform(size=mask.shape), mask) < 0.5
    assert metrics.f_beta(np.full(mask.shape, 0.5), mask) < 0.5
    # and the object scores higher than the background on average
    saliency = disc_maps[0][1][name]
    assert saliency[mask].mean() > saliency[~mask].mean() + 0.3


def test_maps_are_float32_in_unit_range_at_image_size():
    image, _ = disc_image(50)
    image = image[:, :45]  # non-square
    for name, saliency in handcrafted.all_priors(image).items():
        assert saliency.shape == (50, 45) and saliency.dtype == np.float32, name
        assert saliency.min() >= 0 and saliency.max() <= 1 and saliency.max() == 1, name
    single = handcrafted.mc(image)
    np.testing.assert_allclose(single, handcrafted.all_priors(image, names=("mc",))["mc"])


def test_superpixels_graph():
    image, _ = disc_image(64)
    sp = handcrafted.superpixels(image, n_segments=50)
    assert sp.labels.shape == (64, 64) and sp.labels.max() == sp.n - 1
    assert np.array_equal(sp.adjacency, sp.adjacency.T) and not sp.adjacency.diagonal().any()
    np.testing.assert_array_equal(np.flatnonzero(sp.sides["top"]), np.unique(sp.labels[0]))
    assert sp.size.sum() == 64 * 64
    # horizontally adjacent pixels of different superpixels are adjacent superpixels
    a, b = sp.labels[:, :-1].ravel(), sp.labels[:, 1:].ravel()
    assert sp.adjacency[a[a != b], b[a != b]].all()


def test_bad_inputs_give_valid_maps_or_clear_errors():
    image, _ = disc_image(64)
    grey = image.mean(axis=-1).astype(np.uint8)
    for variant in (grey, grey[..., None], np.dstack([image, np.full((64, 64), 255, np.uint8)]),
                    image.astype(np.float32) / 255.0, np.zeros((5, 7, 3), np.uint8),
                    np.zeros((1, 1), np.uint8), image[:9, :20]):
        for name, saliency in handcrafted.all_priors(variant).items():
            assert saliency.shape == variant.shape[:2], (name, variant.shape)
            assert np.isfinite(saliency).all() and 0 <= saliency.min() <= saliency.max() <= 1
    for flat in (np.full((64, 64, 3), 128, np.uint8), np.zeros((40, 30), np.uint8)):
        for name, saliency in handcrafted.all_priors(flat).items():
            assert not saliency.any(), name  # nothing stands out: an all-zero map
    with pytest.raises(ValueError, match="float images must be finite and in"):
        handcrafted.rbd(image.astype(np.float32))
    with pytest.raises(ValueError, match="expected an RGB image"):
        handcrafted.mr(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="empty image"):
        handcrafted.dsr(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown saliency priors"):
        handcrafted.all_priors(image, names=("rbd", "hs"))


def test_priors_for_images_matches_single_calls():
    images = np.stack([disc_image(40, s)[0] for s in range(2)])
    out = handcrafted.priors_for_images(images, ("mr", "dsr"), progress=False)
    assert out["mr"].shape == (2, 40, 40) and out["mr"].dtype == np.uint8
    np.testing.assert_allclose(out["dsr"][1] / 255.0, handcrafted.dsr(images[1]), atol=0.5 / 255)


# ------------------------------------------------------------------------------ metrics
def test_mae_hand_worked():
    assert metrics.mae([[0, 0.5], [1, 1]], [[0, 1], [1, 0]]) == pytest.approx(0.375)
    with pytest.raises(ValueError, match="same shape"):
        metrics.mae(np.zeros((2, 2)), np.zeros((2, 3)))


def test_f_beta_hand_worked():
    saliency = np.array([1.0, 0.6, 0.2, 0.0])  # mean 0.45 -> threshold 0.9 -> [1, 0, 0, 0]
    truth = np.array([1, 1, 0, 0])
    assert metrics.precision_recall(saliency, truth) == (1.0, 0.5)
    assert metrics.f_beta(saliency, truth) == pytest.approx(1.3 * 0.5 / (0.3 + 0.5))  # 0.8125
    # threshold is capped at 1: mean 0.975 -> threshold 1 -> [1, 1, 1, 0]; P = 2/3, R = 1
    f = metrics.f_beta(np.array([1, 1, 1, 0.9]), np.array([1, 1, 0, 0]))
    assert f == pytest.approx(1.3 * (2 / 3) / (0.3 * 2 / 3 + 1))
    assert metrics.f_beta(np.zeros(4), truth) == 0.0  # empty prediction
    assert metrics.f_beta(saliency, np.zeros(4)) == 0.0  # empty ground truth
    assert metrics.f_beta(truth.astype(float), truth) == pytest.approx(1.0)


def test_masked_versions_fill_with_grey():
    images = np.array([[[[0.0, 1.0, 0.2]], [[1.0, 1.0, 1.0]]]])  # [1, 2, 1, 3]
    masks = np.array([[[1.0], [0.0]]])
    foreground, background = metrics.masked_versions(images, masks)
    np.testing.assert_allclose(foreground[0, :, 0], [[0.0, 1.0, 0.2], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(background[0, :, 0], [[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])


def test_foreground_background_check_separates_object_from_context():
    """Class = object colour, background independent of class: true masks keep the accuracy in
    the foreground; inverted masks keep it in the background."""
    rng = np.random.default_rng(0)
    size, num = 32, 100
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, masks, labels = [], [], []
    for i in range(num):
        label = i % 2
        cy, cx = rng.uniform(0.35, 0.65, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 0.3 ** 2
        background = rng.uniform(0.3, 0.7, 3) + rng.normal(0, 0.05, (size, size, 3))
        colour = np.array([0.9, 0.1, 0.1]) if label else np.array([0.1, 0.1, 0.9])
        image = np.where(mask[..., None], colour + rng.normal(0, 0.05, (size, size, 3)),
                         background)
        images.append(np.clip(image, 0, 1))
        masks.append(mask.astype(np.float32))
        labels.append(label)
    images, masks, labels = np.stack(images), np.stack(masks), np.array(labels)
    good = metrics.foreground_background_check(images, masks, labels)
    assert good["accuracy_original"] >= 0.9 and good["accuracy_foreground_only"] >= 0.9
    assert good["accuracy_background_only"] <= 0.75
    inverted = metrics.foreground_background_check(images, 1 - masks, labels)
    assert inverted["accuracy_foreground_only"] <= 0.75
    assert good["num_train"] + good["num_test"] == num
    assert 0.2 < good["foreground_fraction"] < 0.35
    binary = metrics.binarize(np.array([0.0, 0.2, 0.6, 1.0]))  # threshold 2 x 0.45 = 0.9
    np.testing.assert_array_equal(binary, [False, False, False, True])
    binary = metrics.binarize(np.array([0.0, 0.2, 0.6, 1.0]), factor=1.0)  # threshold 0.45
    np.testing.assert_array_equal(binary, [False, False, True, True])
