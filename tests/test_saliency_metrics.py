"""Saliency metrics (MAE, F-beta, S-measure, E-measure) by hand and against `pysodmetrics`."""

import functools
import os
import warnings

import numpy as np
import pytest

from relicv2_tf.saliency import dev_set, generate, handcrafted, metrics

PYSOD_HINT = ("pysodmetrics is the reference for tests/test_saliency_metrics.py; it caps numpy / "
              "scikit-image below this project's pins, so install it without its dependencies: "
              "pip install --no-deps pysodmetrics==1.6.2 opencv-python-headless==4.14.0.94")


# ------------------------------------------------------------------------------ by hand
def test_mae_hand_worked():
    assert metrics.mae([[0, 0.5], [1, 1]], [[0, 1], [1, 0]]) == pytest.approx(0.375)
    # uint8 maps are divided by 255, every map is min-max normalised (MATLAB's mapminmax)
    assert metrics.mae(np.array([[0, 51], [102, 255]], np.uint8), np.zeros((2, 2))) == \
        pytest.approx((0 + 0.2 + 0.4 + 1) / 4)
    assert metrics.mae(np.array([[0.2, 0.6]]), np.array([[0, 1]])) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        metrics.mae(np.zeros((2, 2)), np.zeros((2, 3)))


def test_f_beta_hand_worked():
    saliency = np.array([1.0, 0.6, 0.2, 0.0])  # mean 0.45 -> threshold 0.9 -> [1, 0, 0, 0]
    truth = np.array([1, 1, 0, 0])
    assert metrics.precision_recall(saliency, truth) == (1.0, 0.5)
    assert metrics.f_beta(saliency, truth) == pytest.approx(1.3 * 0.5 / (0.3 + 0.5))  # 0.8125
    # threshold capped at 1: [1, 1, 1, 0.9] -> [1, 1, 1, 0] -> mean 0.75 -> B = [1, 1, 1, 0]
    f = metrics.f_beta(np.array([1, 1, 1, 0.9]), np.array([1, 1, 0, 0]))
    assert f == pytest.approx(1.3 * (2 / 3) / (0.3 * 2 / 3 + 1))
    # an all-zero map has threshold 0, so every pixel is foreground (the field's convention)
    assert metrics.f_beta(np.zeros(4), truth) == pytest.approx(1.3 * 0.5 / (0.3 * 0.5 + 1))
    assert metrics.f_beta(saliency, np.zeros(4)) == 0.0  # empty ground truth
    assert metrics.f_beta(truth.astype(float), truth) == pytest.approx(1.0)


def test_s_and_e_measure_extremes():
    truth = np.zeros((20, 30), bool)
    truth[5:12, 8:20] = True
    perfect = truth.astype(np.float64)
    assert metrics.s_measure(perfect, truth) == pytest.approx(1.0)
    assert metrics.e_measure(perfect, truth) == pytest.approx(600 / 599)  # sum / (HW - 1)
    assert metrics.s_measure(1 - perfect, truth) < 0.1
    assert metrics.e_measure(1 - perfect, truth) < 0.1
    # empty ground truth: S = 1 - mean(S), E counts the pixels predicted as background
    assert metrics.s_measure(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    curves = metrics.curves(perfect, truth)
    assert curves["f_beta"].shape == curves["e_measure"].shape == (256,)
    assert curves["f_beta"].max() == pytest.approx(1.0)


def test_dataset_scores_average_images_and_take_the_curve_maximum():
    truth = np.zeros((8, 8), bool)
    truth[2:6, 2:6] = True
    good, blank = truth.astype(np.float64), np.zeros((8, 8))
    both = metrics.dataset_scores([good, blank], [truth, truth])
    single = [metrics.dataset_scores([m], [truth]) for m in (good, blank)]
    for key in ("mae", "adaptive_f", "s_measure", "adaptive_e"):
        assert both[key] == pytest.approx((single[0][key] + single[1][key]) / 2)
    assert both["max_f"] <= (single[0]["max_f"] + single[1]["max_f"]) / 2 + 1e-12
    with pytest.raises(ValueError, match="at least one"):
        metrics.dataset_scores([], [])


def test_centre_gaussian_baseline():
    centre = dev_set.centre_gaussian(30, 40, sigma=0.25)
    assert centre.shape == (30, 40) and centre.dtype == np.float32
    assert np.unravel_index(centre.argmax(), centre.shape) in {(14, 19), (14, 20), (15, 19),
                                                               (15, 20)}
    np.testing.assert_allclose(centre, centre[::-1, ::-1], atol=1e-6)  # symmetric
    # one sigma (a quarter of the width) from the centre: exp(-1/2)
    wide = dev_set.centre_gaussian(1, 4000)
    assert wide[0, 2000 + 1000] == pytest.approx(np.exp(-0.5), abs=1e-3)


# ------------------------------------------------------------------------------ vs pysodmetrics
def _pysod_scores(maps, masks):
    py_sod_metrics = pytest.importorskip("py_sod_metrics", reason=PYSOD_HINT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure's deprecation notice
        evaluators = {"f": py_sod_metrics.Fmeasure(), "mae": py_sod_metrics.MAE(),
                      "s": py_sod_metrics.Smeasure(), "e": py_sod_metrics.Emeasure()}
        for saliency, mask in zip(maps, masks):
            for evaluator in evaluators.values():
                evaluator.step(pred=saliency, gt=mask)
    f = evaluators["f"].get_results()["fm"]
    e = evaluators["e"].get_results()["em"]
    return {"mae": evaluators["mae"].get_results()["mae"], "adaptive_f": f["adp"],
            "max_f": f["curve"].max(), "mean_f": f["curve"].mean(),
            "s_measure": evaluators["s"].get_results()["sm"], "adaptive_e": e["adp"],
            "mean_e": e["curve"].mean(), "max_e": e["curve"].max()}


@pytest.fixture
def dev_pairs(data_root):
    return _dev_pairs(str(data_root / "saliency_dev"))


@functools.lru_cache(maxsize=1)
def _dev_pairs(root):
    """uint8 maps (as saved by saliency methods) and uint8 masks from the real dev set: MR and
    DSR at 128 px resized back, the centre baseline, and degenerate maps / masks."""
    examples = (dev_set.load_folder(os.path.join(root, "salbenchmark_set1"), 4)
                + dev_set.load_folder(os.path.join(root, "davis2016_val_every10"), 30)[::10])
    maps, masks = [], []
    for example in examples:
        mask = example.mask.astype(np.uint8) * 255
        priors = handcrafted.all_priors(generate.resize_uint8(example.image, 128), ("mr", "dsr"))
        for saliency in list(priors.values()) + [dev_set.centre_gaussian(*mask.shape)]:
            resized = generate.resize_map(saliency, *mask.shape)
            maps.append(np.round(resized * 255).astype(np.uint8))
            masks.append(mask)
    height, width = masks[0].shape
    maps += [np.zeros((height, width), np.uint8), np.full((height, width), 90, np.uint8),
             maps[0], maps[1]]
    masks += [masks[0], masks[0], np.zeros((height, width), np.uint8),
              np.full((height, width), 255, np.uint8)]
    return maps, masks


@pytest.mark.shared_data("saliency_dev")
def test_dataset_scores_match_pysodmetrics_on_real_maps(dev_pairs):
    maps, masks = dev_pairs
    reference = _pysod_scores(maps, masks)
    ours = metrics.dataset_scores(maps, masks)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.shared_data("saliency_dev")
def test_per_image_values_and_curves_match_pysodmetrics(dev_pairs):
    py_sod_metrics = pytest.importorskip("py_sod_metrics", reason=PYSOD_HINT)
    maps, masks = dev_pairs
    for saliency, mask in list(zip(maps, masks))[::3] + list(zip(maps, masks))[-4:]:
        s_ref, e_ref = py_sod_metrics.Smeasure(), py_sod_metrics.Emeasure()
        s_ref.step(pred=saliency, gt=mask)
        e_ref.step(pred=saliency, gt=mask)
        assert metrics.s_measure(saliency, mask) == pytest.approx(s_ref.get_results()["sm"],
                                                                 abs=1e-9)
        e = e_ref.get_results()["em"]
        assert metrics.e_measure(saliency, mask) == pytest.approx(e["adp"], abs=1e-9)
        np.testing.assert_allclose(metrics.curves(saliency, mask)["e_measure"], e["curve"],
                                   atol=1e-9)
