"""The linear classifier on top of an encoder: its one file format, and how it is scored.

`<output_dir>/linear_head.keras` is exactly `keras.Sequential([keras.Input((feature_dim,)),
keras.layers.Dense(num_classes, name="linear_head")])`, written by linear evaluation, fine-tuning
and the supervised baseline, read by the zero-shot protocols (robustness, backgrounds) and the
serving export.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from relicv2_tf import atomic
from relicv2_tf.evaluation import features as features_lib
from relicv2_tf.evaluation import results

HEAD_FILE = "linear_head.keras"


def make_linear_head(feature_dim: int, num_classes: int, seed: int | None = None
                     ) -> keras.Sequential:
    """A new head. `seed` makes the (Glorot-uniform) initial weights reproducible, so an
    interrupted and resumed run and an uninterrupted one start from the same head."""
    dense = keras.layers.Dense(num_classes, name="linear_head",
                               kernel_initializer=keras.initializers.GlorotUniform(seed))
    return keras.Sequential([keras.Input((feature_dim,)), dense])


def save_head(head: keras.Model, output_dir: str) -> str:
    """Writes `<output_dir>/linear_head.keras` (via a temporary name); returns its path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, HEAD_FILE)
    with atomic.temporary_path(path) as tmp:
        head.save(tmp)
    return path


def load_head(path: str, flag: str = "--config.head_path") -> keras.Model:
    """A head written by `save_head`; `flag` names the setting to fix when it is missing."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}={path!r} is not a file; pass the {HEAD_FILE} written "
                                "by relicv2-linear-eval.")
    return keras.models.load_model(path)


def predict_top_k(head, features, k: int = 5, class_subset=None, batch_size: int = 4096):
    """Top-k class indices [N, k] of head(features).

    `class_subset` (indices into the head's classes) restricts the scores to those classes before
    ranking (zero-shot evaluation on 200-class subsets); returned indices stay in the head's space.
    """
    tops = []
    subset = None if class_subset is None else np.asarray(class_subset)
    for start in range(0, len(features), batch_size):
        logits = np.asarray(head(features[start:start + batch_size], training=False))
        if subset is not None:
            tops.append(subset[results.top_k_predictions(logits[:, subset], k)])
        else:
            tops.append(results.top_k_predictions(logits, k))
    return np.concatenate(tops) if tops else np.zeros((0, k), np.int64)


def evaluate_head(encoder, head, test_examples, *, num_classes: int, batch_size: int = 256,
                  image_size: int = 224, resize_size: int = 256, progress: bool = True,
                  strategy=None) -> dict:
    """top1 / top5 / mean per-class accuracy of encoder + head on centre-cropped test images."""
    features, labels = features_lib.centre_crop_features(
        encoder, test_examples, batch_size=batch_size, image_size=image_size,
        resize_size=resize_size, progress=progress, description="test features",
        strategy=strategy)
    return results.classification_metrics(predict_top_k(head, features, 5), labels, num_classes)
