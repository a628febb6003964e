"""Label-free foreground / background check for saliency masks of data without ground truth.

A classifier is fitted and scored on three versions of the same images - original,
foreground-only (background filled with grey) and background-only (foreground filled with grey).
A mask that captures the object keeps foreground-only accuracy near the original while the
background-only accuracy falls. Class labels are used only by this evaluation, never to make
masks. (Against ground-truth masks use `saliency.metrics`.)
"""

from __future__ import annotations

import numpy as np

GREY = 0.5


def binarize(saliency, factor: float = 2.0) -> np.ndarray:
    """Foreground = saliency >= min(factor x mean, 1); factor 2 is the F-beta threshold."""
    saliency = np.asarray(saliency, np.float32)
    threshold = min(factor * float(saliency.mean()), 1.0)
    return (saliency >= threshold) & (saliency > 0)


def masked_versions(images, masks):
    """images float [N, H, W, 3] in [0, 1], masks [N, H, W] in [0, 1] (binary or soft) ->
    (foreground_only, background_only), the other part filled with grey 0.5."""
    images = np.asarray(images, np.float32)
    masks = np.asarray(masks, np.float32)[..., None]
    foreground = images * masks + GREY * (1 - masks)
    background = images * (1 - masks) + GREY * masks
    return foreground, background


def colour_texture_features(images) -> np.ndarray:
    """Simple label-free image features for the check: a joint 4x4x4 RGB histogram, per-channel
    mean / std, an 8-bin gradient-orientation histogram weighted by magnitude (2x2 cells) and the
    mean colour of a 4x4 grid. images float [N, H, W, 3] in [0, 1] -> [N, 64 + 6 + 32 + 48]."""
    images = np.asarray(images, np.float32)
    n = images.shape[0]
    quantised = np.clip((images * 4).astype(np.int64), 0, 3)
    codes = quantised[..., 0] * 16 + quantised[..., 1] * 4 + quantised[..., 2]
    offsets = (np.arange(n) * 64)[:, None, None]
    hist = np.bincount((codes + offsets).ravel(), minlength=n * 64).reshape(n, 64)
    hist = hist / hist.sum(axis=1, keepdims=True)
    stats = np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2))], axis=1)
    grey = images.mean(axis=-1)
    gy, gx = np.gradient(grey, axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    orientation = ((np.arctan2(gy, gx) % np.pi) / np.pi * 8).astype(np.int64).clip(0, 7)
    height, width = grey.shape[1:]
    cell = (np.arange(height)[:, None] >= height // 2) * 2 + (np.arange(width)[None] >= width // 2)
    bins = cell[None] * 8 + orientation  # [N, H, W] in 0..31
    offsets = (np.arange(n) * 32)[:, None, None]
    grad_hist = np.bincount((bins + offsets).ravel(), weights=magnitude.ravel(),
                            minlength=n * 32).reshape(n, 32)
    grad_hist = grad_hist / np.maximum(grad_hist.sum(axis=1, keepdims=True), 1e-12)
    rows = np.array_split(np.arange(height), 4)
    cols = np.array_split(np.arange(width), 4)
    layout = np.concatenate([images[:, r][:, :, c].mean(axis=(1, 2)) for r in rows for c in cols],
                            axis=1)  # 4x4 grid of mean colours
    return np.concatenate([hist, stats, grad_hist, layout], axis=1).astype(np.float32)


def classifier_accuracy(train_features, train_labels, test_features, test_labels,
                        max_iter: int = 2000, C: float = 1.0) -> float:
    """Standardised multinomial logistic regression, accuracy on the test split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C))
    model.fit(train_features, train_labels)
    return float((model.predict(test_features) == np.asarray(test_labels)).mean())


def foreground_background_check(images, masks, labels, features_fn=colour_texture_features,
                                train_fraction: float = 0.5, seed: int = 0) -> dict:
    """Accuracy on original / foreground-only / background-only images.

    For each version a classifier is fitted on `train_fraction` of the images (that version) and
    scored on the rest, so each number measures how much class evidence the version keeps.
    `masks` are soft or binary maps in [0, 1]; pass `binarize(map)` for hard masks.
    Returns accuracies plus the mean foreground fraction (a mask covering everything would
    trivially keep the foreground accuracy: read the two numbers together).
    """
    images = np.asarray(images, np.float32)
    masks = np.asarray(masks, np.float32)
    labels = np.asarray(labels)
    if not (len(images) == len(masks) == len(labels)):
        raise ValueError(f"images ({len(images)}), masks ({len(masks)}) and labels "
                         f"({len(labels)}) must have the same length.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    cut = int(round(train_fraction * len(images)))
    train, test = order[:cut], order[cut:]
    foreground, background = masked_versions(images, masks)
    result = {}
    for name, version in (("original", images), ("foreground_only", foreground),
                          ("background_only", background)):
        features = features_fn(version)
        result[f"accuracy_{name}"] = classifier_accuracy(
            features[train], labels[train], features[test], labels[test])
    result["foreground_fraction"] = float(masks.mean())
    result["num_train"] = int(len(train))
    result["num_test"] = int(len(test))
    return result
