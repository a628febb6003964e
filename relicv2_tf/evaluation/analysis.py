"""Representation analysis: class concentration (ReLICv2 section 3.1, Figure 4) and the
nearest-neighbour confusion figure (appendix C, Figure 7).

Class concentration: for each test example i, with Euclidean distances d between representations,
    ratio_i = mean_{j: y_j != y_i} d(i, j) / mean_{j != i: y_j == y_i} d(i, j),
the between-class over within-class distance. A distribution shifted to higher ratios means
classes that are tighter and further apart (the Fisher-discriminant intuition of the paper).
The paper does not say whether the ratio is per example or per class; per example gives the
distribution the figure shows. Features are L2-normalised first by default, so encoders with
different feature scales are comparable.

Nearest-neighbour confusion: a few classes, `per_class` images each, ordered contiguously; each
row shows where the k nearest neighbours (among the selected images) of one image fall, coloured
by distance. A perfectly class-aligned representation gives a block-diagonal picture.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from relicv2_tf.evaluation import features as features_lib
from relicv2_tf.evaluation import inputs, results
from relicv2_tf.models import encoder_io

RANDOM_INIT = "random"  # an encoders entry naming this instead of a directory


def _normalise(features):
    features = np.asarray(features, np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)


def pairwise_distances(a, b):
    """Euclidean distances [len(a), len(b)]."""
    squared = (np.sum(a ** 2, 1)[:, None] + np.sum(b ** 2, 1)[None, :] - 2.0 * a @ b.T)
    return np.sqrt(np.maximum(squared, 0.0))


def class_concentration_ratios(features, labels, *, l2_normalize: bool = True,
                               chunk_size: int = 1024) -> np.ndarray:
    """Between-class / within-class mean distance for every example with a classmate: [M]."""
    features = _normalise(features) if l2_normalize else np.asarray(features, np.float64)
    labels = np.asarray(labels)
    ratios = []
    for start in range(0, len(labels), chunk_size):
        rows = slice(start, start + chunk_size)
        distances = pairwise_distances(features[rows], features)
        same = labels[rows][:, None] == labels[None, :]
        self_mask = np.zeros_like(same)
        idx = np.arange(start, min(start + chunk_size, len(labels)))
        self_mask[idx - start, idx] = True
        within_mask = same & ~self_mask
        between_mask = ~same
        within_count = within_mask.sum(1)
        between_count = between_mask.sum(1)
        valid = (within_count > 0) & (between_count > 0)
        within = (distances * within_mask).sum(1) / np.maximum(within_count, 1)
        between = (distances * between_mask).sum(1) / np.maximum(between_count, 1)
        ratios.append(between[valid] / np.maximum(within[valid], 1e-12))
    return np.concatenate(ratios) if ratios else np.zeros(0)


def nearest_neighbours(features, k: int = 5, *, l2_normalize: bool = False):
    """k nearest neighbours of each row among the others: (indices [N, k], distances [N, k])."""
    features = _normalise(features) if l2_normalize else np.asarray(features, np.float64)
    distances = pairwise_distances(features, features)
    np.fill_diagonal(distances, np.inf)
    k = min(k, len(features) - 1)
    index = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return index, np.take_along_axis(distances, index, axis=1)


def neighbour_label_agreement(neighbour_index, labels) -> float:
    """Fraction of nearest neighbours that share the query's label (1.0 = block diagonal)."""
    labels = np.asarray(labels)
    return float(np.mean(labels[neighbour_index] == labels[:, None]))


def select_contiguous(labels, classes, per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of `per_class` random examples of each of `classes`, grouped class by class."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            raise ValueError(f"class {c} has no examples in the analysed split.")
        chosen.append(np.sort(rng.choice(members, min(per_class, len(members)), replace=False)))
    return np.concatenate(chosen)


def plot_concentration(ratios_by_name: dict, path: str, bins: int = 50) -> str:
    """Overlaid histograms of the ratio distributions (one per encoder), with their means."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    pooled = np.concatenate([np.asarray(r) for r in ratios_by_name.values()])
    edges = np.linspace(pooled.min(), pooled.max(), bins + 1)  # shared bins: comparable bars
    for name, ratios in ratios_by_name.items():
        ax.hist(ratios, bins=edges, alpha=0.5, density=True,
                label=f"{name} (mean {np.mean(ratios):.3f})")
    ax.set_xlabel("between-class / within-class distance")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_neighbour_confusion(neighbour_index, neighbour_distances, labels, path: str,
                             class_names=None) -> str:
    """Scatter: row = image, x = position of each of its nearest neighbours, colour = distance."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n, k = neighbour_index.shape
    rows = np.repeat(np.arange(n), k)
    fig, ax = plt.subplots(figsize=(5, 5))
    points = ax.scatter(neighbour_index.reshape(-1), rows, c=neighbour_distances.reshape(-1),
                        s=4, cmap="viridis")
    labels = np.asarray(labels)
    boundaries = np.flatnonzero(np.diff(labels)) + 0.5
    for b in boundaries:
        ax.axhline(b, color="grey", lw=0.5)
        ax.axvline(b, color="grey", lw=0.5)
    if class_names is not None:
        starts = np.concatenate([[0], boundaries + 0.5])
        ends = np.concatenate([boundaries + 0.5, [n]])
        ax.set_yticks((starts + ends) / 2)
        ax.set_yticklabels(class_names)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel("nearest neighbour (image index)")
    ax.set_ylabel("image")
    fig.colorbar(points, ax=ax, label="distance")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the protocol
def run(config, output_dir: str, *, encoders: dict, classes=(0, 1, 2, 3), per_class: int = 50,
        num_neighbours: int = 5, strategy=None, progress: bool = True) -> dict:
    """`relicv2-analysis`: class concentration and nearest-neighbour confusion of each of
    `encoders` ({name: encoder directory, or "random" for a random-init encoder of
    `config.model`}) on the test split of a linear-eval config (its data, `test_split`,
    `eval_batch_size` and `linear` image / resize sizes). Writes `class_concentration.png`,
    `nn_confusion_<name>.png` and `analysis.json` to `output_dir`."""
    if not encoders:
        raise ValueError("no encoders to analyse; pass name=encoder_dir pairs.")
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():  # every directory is read before the first (slow) extraction
        loaded = {name: (inputs.random_init_encoder(config.model, config.seed)
                         if path == RANDOM_INIT else encoder_io.load_encoder(path))
                  for name, path in encoders.items()}
    os.makedirs(output_dir, exist_ok=True)
    examples = inputs.labelled_examples(config.data, config.test_split)
    ratios, metrics, details = {}, {}, {}
    for name, encoder in loaded.items():
        features, labels = features_lib.centre_crop_features(
            encoder, examples, batch_size=config.eval_batch_size,
            image_size=config.linear.image_size, resize_size=config.linear.resize_size,
            progress=progress, description=name, strategy=strategy)
        ratios[name] = class_concentration_ratios(features, labels)
        chosen = select_contiguous(labels, classes, per_class, config.seed)
        index, distances = nearest_neighbours(features[chosen], num_neighbours)
        figure = plot_neighbour_confusion(
            index, distances, labels[chosen], os.path.join(output_dir, f"nn_confusion_{name}.png"),
            class_names=[str(c) for c in classes])
        metrics[f"{name}/mean_ratio"] = float(ratios[name].mean())
        metrics[f"{name}/nn_label_agreement"] = neighbour_label_agreement(index, labels[chosen])
        details[name] = {"encoder_dir": encoders[name], "nn_figure": figure,
                         "ratio_quantiles_0_25_50_75_100": np.quantile(
                             ratios[name], [0.0, 0.25, 0.5, 0.75, 1.0]).tolist()}
    details["concentration_figure"] = plot_concentration(
        ratios, os.path.join(output_dir, "class_concentration.png"))
    results.write_result(output_dir, "analysis", metrics, config=config, details=details)
    return metrics
