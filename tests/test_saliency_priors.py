"""Handcrafted saliency priors (RBD, MR, DSR, MC), their superpixels and the label-free check."""

import numpy as np
import pytest

from relicv2_tf.saliency import dev_set, generate, handcrafted, label_free, metrics


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
    for mask, maps in disc_maps:
        assert metrics.s_measure(maps[name], mask) > 0.9
        assert metrics.curves(maps[name], mask)["f_beta"].max() > 0.95
    mask = disc_maps[0][0]
    # the same measures reject uninformative maps
    assert metrics.s_measure(np.random.default_rng(0).uniform(size=mask.shape), mask) < 0.5
    assert metrics.s_measure(np.full(mask.shape, 0.5), mask) < 0.5
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


def test_superpixels_follow_colour_edges():
    """Superpixels must adhere to the disc's outline: labelling each superpixel by its majority
    recovers the mask. (A Lab array handed to scikit-image's SLIC is min-max squashed and gives
    a regular grid instead, IoU 0.81-0.90 on these images.)"""
    for seed in range(3):
        image, mask = disc_image(96, seed)
        labels = handcrafted.superpixels(image).labels
        count = np.bincount(labels.ravel())
        majority = (np.bincount(labels.ravel(), mask.ravel(), len(count)) / count > 0.5)[labels]
        assert (majority & mask).sum() / (majority | mask).sum() > 0.92, seed


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


# ------------------------------------------------------------------------------ label-free check
def test_masked_versions_fill_with_grey():
    images = np.array([[[[0.0, 1.0, 0.2]], [[1.0, 1.0, 1.0]]]])  # [1, 2, 1, 3]
    masks = np.array([[[1.0], [0.0]]])
    foreground, background = label_free.masked_versions(images, masks)
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
    good = label_free.foreground_background_check(images, masks, labels)
    assert good["accuracy_original"] >= 0.9 and good["accuracy_foreground_only"] >= 0.9
    assert good["accuracy_background_only"] <= 0.75
    inverted = label_free.foreground_background_check(images, 1 - masks, labels)
    assert inverted["accuracy_foreground_only"] <= 0.75
    assert good["num_train"] + good["num_test"] == num
    assert 0.2 < good["foreground_fraction"] < 0.35
    binary = label_free.binarize(np.array([0.0, 0.2, 0.6, 1.0]))  # threshold 2 x 0.45 = 0.9
    np.testing.assert_array_equal(binary, [False, False, False, True])
    binary = label_free.binarize(np.array([0.0, 0.2, 0.6, 1.0]), factor=1.0)  # threshold 0.45
    np.testing.assert_array_equal(binary, [False, False, True, True])


# ------------------------------------------------------------------------------ real photos
@pytest.mark.shared_data("saliency_dev")
def test_priors_beat_a_centre_gaussian_on_real_photos(data_root):
    """The first frame of each of the 20 DAVIS validation videos (independent scenes, one
    primary object each), square-resized to 128 px as the pipeline does: every prior beats the
    content-free centre Gaussian on S-measure and MAE by a clear margin. Catches a prior (or
    the shared SLIC) that silently degrades to a blob."""
    folder = data_root / "saliency_dev" / "davis2016_val_every10"
    first_frames = {}
    for example in dev_set.load_folder(str(folder)):
        first_frames.setdefault(example.group, example)
    images = [generate.resize_uint8(e.image, 128) for e in first_frames.values()]
    masks = [generate.resize_uint8(e.mask.astype(np.uint8) * 255, 128) > 127
             for e in first_frames.values()]
    centre = metrics.dataset_scores([dev_set.centre_gaussian(128, 128)] * len(masks), masks)
    maps = [handcrafted.all_priors(image) for image in images]
    for name in handcrafted.PRIOR_NAMES:
        scores = metrics.dataset_scores([m[name] for m in maps], masks)
        assert scores["s_measure"] > centre["s_measure"] + 0.04, (name, scores, centre)
        assert scores["mae"] < centre["mae"] - 0.05, (name, scores, centre)
