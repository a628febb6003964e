"""What an evaluation reports: metric definitions and the result file, shared by every protocol.

Metrics (ReLICv2 appendix B, following SimCLR / BYOL):
  * top-k accuracy: the label is among the k highest-scoring classes;
  * mean per-class accuracy: the unweighted mean over classes of each class's top-1 accuracy
    (the transfer metric for Pets, Flowers, Caltech101 and Aircraft).

Every protocol ends with `write_result`, which writes `<output_dir>/<protocol>.json` atomically
and returns (and prints) the one-line summary `relicv2 <protocol>: key=value ...`; in a
multi-worker run only the chief's outputs remain (`written_by_chief`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os

import numpy as np

from relicv2_tf import atomic, distribute


def top_k_predictions(scores, k: int = 5) -> np.ndarray:
    """Class indices of the k highest scores per row, best first: [N, C] -> [N, min(k, C)].

    Ties are broken towards the lower class index (stable sort), so results are deterministic.
    """
    scores = np.asarray(scores)
    k = min(k, scores.shape[-1])
    return np.argsort(-scores, axis=-1, kind="stable")[:, :k]


def top_k_accuracy(top_predictions, labels, k: int) -> float:
    """Fraction of rows whose label is among the first k of `top_predictions` [N, >=k]."""
    top_predictions = np.asarray(top_predictions)
    labels = np.asarray(labels).reshape(-1, 1)
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(np.any(top_predictions[:, :k] == labels, axis=1)))


def per_class_accuracy(predictions, labels, num_classes: int) -> np.ndarray:
    """Top-1 accuracy of each class [num_classes]; NaN for classes absent from `labels`."""
    predictions = np.asarray(predictions).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    correct = np.bincount(labels, weights=(predictions == labels).astype(np.float64),
                          minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)


def mean_per_class_accuracy(predictions, labels, num_classes: int) -> float:
    """Mean over the classes present in `labels` of their top-1 accuracy."""
    return float(np.nanmean(per_class_accuracy(predictions, labels, num_classes)))


def classification_metrics(top_predictions, labels, num_classes: int) -> dict:
    """top1, top5 (when at least 5 classes are scored), mean_per_class_accuracy, num_examples."""
    top_predictions = np.asarray(top_predictions)
    labels = np.asarray(labels)
    metrics = {"top1": top_k_accuracy(top_predictions, labels, 1)}
    if top_predictions.shape[1] >= 5:
        metrics["top5"] = top_k_accuracy(top_predictions, labels, 5)
    metrics["mean_per_class_accuracy"] = mean_per_class_accuracy(top_predictions[:, 0], labels,
                                                                 num_classes)
    metrics["num_examples"] = int(len(labels))
    return metrics


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "to_dict"):  # ml_collections.ConfigDict
        return _jsonable(value.to_dict())
    return value


def summary_line(protocol: str, metrics: dict) -> str:
    """`relicv2 <protocol>: top1=0.7412 top5=0.9150 ...` from the scalar entries of `metrics`."""
    parts = []
    for key, value in metrics.items():
        if isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, (float, np.floating)):
            parts.append(f"{key}={float(value):.4f}")
        elif isinstance(value, (int, np.integer)):
            parts.append(f"{key}={int(value)}")
    return f"relicv2 {protocol}: " + " ".join(parts)


@contextlib.contextmanager
def written_by_chief(output_dir: str, strategy=None):
    """The directory this process writes a protocol's outputs to: `output_dir` on the chief;
    on another worker of a multi-worker run (`distribute.WorkerRole`) its own temporary
    directory, deleted when the block ends, so only the chief's files remain."""
    role = distribute.worker_role(strategy)
    yield role.write_dir(output_dir)
    role.remove_worker_dir(output_dir)


def write_result(output_dir: str, protocol: str, metrics: dict, *, config=None,
                 details: dict | None = None, print_summary: bool = True) -> str:
    """Writes `<output_dir>/<protocol>.json` atomically; returns the one-line summary.

    The file holds {"protocol", "metrics", "summary", "config", "details", "time"}; `metrics` keeps
    the headline numbers, `details` anything larger (per-dataset / per-corruption breakdowns).
    """
    os.makedirs(output_dir, exist_ok=True)
    line = summary_line(protocol, metrics)
    record = {
        "protocol": protocol,
        "metrics": _jsonable(metrics),
        "summary": line,
        "config": _jsonable(config) if config is not None else None,
        "details": _jsonable(details or {}),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path = os.path.join(output_dir, f"{protocol}.json")
    atomic.write_json(path, record, indent=2, sort_keys=False, allow_nan=True)
    if print_summary:
        print(line, flush=True)
    return line


def read_result(output_dir: str, protocol: str) -> dict:
    with open(os.path.join(output_dir, f"{protocol}.json")) as f:
        return json.load(f)
