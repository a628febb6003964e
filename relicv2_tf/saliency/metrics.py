"""Salient-object-detection metrics against ground truth: MAE, F-beta, S-measure, E-measure.

The field's protocol (the MATLAB toolbox of Borji et al. / Fan et al., mirrored by the PyPI
package `pysodmetrics`, which tests/test_saliency_metrics.py checks these functions against on
real dev-set maps). A map S is prepared as MATLAB's `mapminmax(im2double(S))`: uint8 maps are
divided by 255, then every map is min-max normalised to [0, 1] (a constant map is left as it
is). Ground truth G is binary (uint8: > 128, otherwise > 0.5).

    MAE         mean |S - G|                                       (Perazzi et al. CVPR 2012)
    F-beta      (1 + beta^2) P R / (beta^2 P + R), beta^2 = 0.3    (Achanta et al. CVPR 2009)
                of the binary map S >= T; P = |B & G| / |B|, R = |B & G| / |G|, F = 0 when
                |B & G| = 0. Adaptive: T = min(2 mean(S), 1). Curve: T = t / 255 on the uint8
                quantisation floor(255 S) for t = 255 .. 0.
    S-measure   alpha S_object + (1 - alpha) S_region, alpha = 0.5 (Fan et al. ICCV 2017,
                eqs. 1-10): S_object compares foreground / background distributions, S_region
                is the area-weighted SSIM of the four blocks split at the ground truth centroid.
    E-measure   sum of the enhanced alignment matrix (1 + xi)^2 / 4 over pixels / (H W - 1),
                xi = 2 phi_G phi_B / (phi_G^2 + phi_B^2), phi = the mean-removed binary maps
                (Fan et al. IJCAI 2018, eqs. 3-6), at the adaptive threshold or along the curve.

Dataset scores (`dataset_scores`) follow the field too: per-image values averaged over the
images, and for the curves the image-averaged curve's maximum (maxF, maxE) or mean (meanF,
meanE). One deliberate difference from `pysodmetrics` 1.6.2: an empty quadrant in S_region
(foreground centroid in the last row or column) contributes 0 with weight 0 instead of NaN.
"""

from __future__ import annotations

import numpy as np

BETA_SQUARED = 0.3
S_MEASURE_ALPHA = 0.5
NUM_THRESHOLDS = 256
EPS = np.spacing(1)  # MATLAB's eps, used where the reference implementation uses it


def prepare(saliency, ground_truth):
    """-> (float64 map in [0, 1], bool mask): im2double + mapminmax, ground truth binarised."""
    saliency = np.asarray(saliency)
    ground_truth = np.asarray(ground_truth)
    if saliency.shape != ground_truth.shape:
        raise ValueError(f"saliency map {saliency.shape} and ground truth {ground_truth.shape} "
                         "must have the same shape.")
    prediction = saliency / 255.0 if saliency.dtype == np.uint8 else saliency.astype(np.float64)
    low, high = prediction.min(), prediction.max()
    if high > low:
        prediction = (prediction - low) / (high - low)
    mask = ground_truth > (128 if ground_truth.dtype == np.uint8 else 0.5)
    return prediction, mask


# ------------------------------------------------------------------------------ per image
def _binary_counts(prediction, mask, threshold):
    """|B & G|, |B|, |G| for B = prediction >= threshold (default: the adaptive one)."""
    binary = prediction >= (adaptive_threshold(prediction) if threshold is None else threshold)
    return (np.count_nonzero(binary & mask), np.count_nonzero(binary),
            np.count_nonzero(mask))


def adaptive_threshold(prediction) -> float:
    return float(min(2.0 * np.asarray(prediction, np.float64).mean(), 1.0))


def _f_from_counts(hits, predicted, positives, beta_squared):
    """F-beta from |B & G|, |B| and |G| (arrays or scalars); 0 where |B & G| = 0."""
    hits = np.asarray(hits, np.float64)
    precision = hits / np.maximum(predicted, 1)
    recall = hits / max(positives, 1)
    numerator = (1 + beta_squared) * precision * recall
    return np.where(hits > 0, numerator / np.where(hits > 0, beta_squared * precision + recall,
                                                   1.0), 0.0)


def _e_from_counts(hits, predicted, positives, total):
    """E-measure of a binary map from |B & G|, |B|, |G| and the pixel count (IJCAI 2018, eq. 6):
    the enhanced alignment matrix takes one value on each of the four (B, G) combinations."""
    hits = np.asarray(hits, np.float64)
    predicted = np.asarray(predicted, np.float64)
    if positives == 0:
        return (total - predicted) / (total - 1 + EPS)
    if positives == total:
        return predicted / (total - 1 + EPS)
    phi_b = {True: 1 - predicted / total, False: -predicted / total}
    phi_g = {True: 1 - positives / total, False: -positives / total}
    counts = {(True, True): hits, (True, False): predicted - hits,
              (False, True): positives - hits, (False, False): total - predicted - positives + hits}
    enhanced = 0.0
    for (in_b, in_g), count in counts.items():
        xi = 2 * phi_b[in_b] * phi_g[in_g] / (phi_b[in_b] ** 2 + phi_g[in_g] ** 2 + EPS)
        enhanced = enhanced + (1 + xi) ** 2 / 4 * count
    return enhanced / (total - 1 + EPS)


def mae(saliency, ground_truth) -> float:
    prediction, mask = prepare(saliency, ground_truth)
    return float(np.abs(prediction - mask).mean())


def precision_recall(saliency, ground_truth, threshold: float | None = None):
    """Precision and recall of S >= threshold (default: the adaptive one); 0 for 0 / 0."""
    hits, predicted, positives = _binary_counts(*prepare(saliency, ground_truth), threshold)
    return (hits / predicted if predicted else 0.0, hits / positives if positives else 0.0)


def f_beta(saliency, ground_truth, beta_squared: float = BETA_SQUARED,
           threshold: float | None = None) -> float:
    """F-beta at the adaptive threshold min(2 mean S, 1), or at `threshold`."""
    counts = _binary_counts(*prepare(saliency, ground_truth), threshold)
    return float(_f_from_counts(*counts, beta_squared))


def e_measure(saliency, ground_truth, threshold: float | None = None) -> float:
    """E-measure of S >= threshold (default: the adaptive one)."""
    prediction, mask = prepare(saliency, ground_truth)
    return float(_e_from_counts(*_binary_counts(prediction, mask, threshold), mask.size))


def _curves(prediction, mask, beta_squared):
    """F-beta and E-measure of B_t = floor(255 S) >= t for t = 255, 254, ..., 0 (the field's
    curve order), from two histograms instead of 256 thresholded maps."""
    levels = (prediction * 255).astype(np.uint8)
    hits = np.cumsum(np.bincount(levels[mask], minlength=NUM_THRESHOLDS)[::-1])
    predicted = hits + np.cumsum(np.bincount(levels[~mask], minlength=NUM_THRESHOLDS)[::-1])
    positives = np.count_nonzero(mask)
    return {"f_beta": _f_from_counts(hits, predicted, positives, beta_squared),
            "e_measure": _e_from_counts(hits, predicted, positives, mask.size)}


def curves(saliency, ground_truth, beta_squared: float = BETA_SQUARED) -> dict:
    """{"f_beta": [256], "e_measure": [256]} along thresholds 255 .. 0."""
    return _curves(*prepare(saliency, ground_truth), beta_squared)


def _object_similarity(values) -> float:
    """O = 2 x / (x^2 + 1 + sigma_x) over one region (S-measure eq. 7, sample std)."""
    mean = values.mean()
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return 2 * mean / (mean ** 2 + 1 + std + EPS)


def _ssim(prediction, truth) -> float:
    """Single-window SSIM of one block as in the S-measure (eq. 9, without the constants)."""
    n = prediction.size
    x, y = prediction.mean(), truth.mean()
    var_x = ((prediction - x) ** 2).sum() / (n - 1 + EPS)
    var_y = ((truth - y) ** 2).sum() / (n - 1 + EPS)
    cov = ((prediction - x) * (truth - y)).sum() / (n - 1 + EPS)
    alpha = 4 * x * y * cov
    beta = (x ** 2 + y ** 2) * (var_x + var_y)
    if alpha != 0:
        return alpha / (beta + EPS)
    return 1.0 if beta == 0 else 0.0


def _s_measure(prediction, mask, alpha) -> float:
    fraction = mask.mean()
    if fraction == 0:
        return float(1 - prediction.mean())
    if fraction == 1:
        return float(prediction.mean())
    s_object = (fraction * _object_similarity(prediction[mask])
                + (1 - fraction) * _object_similarity(1 - prediction[~mask]))
    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    # split below / right of the rounded centroid (the reference's 1-based `1:X` blocks)
    row, col = int(np.round(rows.mean())) + 1, int(np.round(cols.mean())) + 1
    truth = mask.astype(np.float64)
    s_region = 0.0
    for row_block in (slice(0, row), slice(row, height)):
        for col_block in (slice(0, col), slice(col, width)):
            block = prediction[row_block, col_block]
            if block.size:
                s_region += (_ssim(block, truth[row_block, col_block]) * block.size
                             / mask.size)
    return float(max(0.0, alpha * s_object + (1 - alpha) * s_region))


def s_measure(saliency, ground_truth, alpha: float = S_MEASURE_ALPHA) -> float:
    """Structure measure (Fan et al. ICCV 2017): alpha S_object + (1 - alpha) S_region."""
    return _s_measure(*prepare(saliency, ground_truth), alpha)


# ------------------------------------------------------------------------------ dataset
def dataset_scores(maps, ground_truths, beta_squared: float = BETA_SQUARED) -> dict:
    """The field's table row over pairs (map, mask) of any sizes: mae, adaptive_f, max_f,
    mean_f, s_measure, adaptive_e, mean_e, max_e."""
    per_image = {"mae": [], "adaptive_f": [], "s_measure": [], "adaptive_e": []}
    f_curve, e_curve = 0.0, 0.0
    count = 0
    for saliency, truth in zip(maps, ground_truths):
        prediction, mask = prepare(saliency, truth)
        counts = _binary_counts(prediction, mask, None)
        per_image["mae"].append(float(np.abs(prediction - mask).mean()))
        per_image["adaptive_f"].append(float(_f_from_counts(*counts, beta_squared)))
        per_image["s_measure"].append(_s_measure(prediction, mask, S_MEASURE_ALPHA))
        per_image["adaptive_e"].append(float(_e_from_counts(*counts, mask.size)))
        curve = _curves(prediction, mask, beta_squared)
        f_curve, e_curve = f_curve + curve["f_beta"], e_curve + curve["e_measure"]
        count += 1
    if count == 0:
        raise ValueError("dataset_scores needs at least one (map, ground truth) pair.")
    f_curve, e_curve = f_curve / count, e_curve / count
    scores = {k: float(np.mean(v)) for k, v in per_image.items()}
    scores.update(max_f=float(f_curve.max()), mean_f=float(f_curve.mean()),
                  max_e=float(e_curve.max()), mean_e=float(e_curve.mean()))
    return scores
