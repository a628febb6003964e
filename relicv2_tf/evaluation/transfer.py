"""Transfer to other classification datasets: linear and fine-tuned (ReLICv2 appendix B.3).

Protocol of SimCLR / BYOL: hyper-parameters are chosen on a validation split (the dataset's own
when it has one, otherwise a held-out part of its training split), then the model is retrained on
train + validation with the chosen values and scored once on the test split. Metric per dataset:
mean per-class accuracy for Pets, Flowers, Caltech101 and Aircraft; top-1 otherwise.

Linear transfer trains the head on features of centre crops computed once (BYOL: no augmentation
for linear transfer), so a sweep point costs seconds. Fine-tuning reuses `finetune.finetune`.
"""

from __future__ import annotations

import itertools

import numpy as np

from relicv2_tf.evaluation import finetune as finetune_lib
from relicv2_tf.evaluation import linear, results

TOP1 = "top1"
MEAN_PER_CLASS = "mean_per_class_accuracy"

# name -> TFDS name, splits and metric. `validation_split` "" = hold out part of train.
TRANSFER_DATASETS = {
    "food101": dict(tfds_name="food101", train_split="train", validation_split="",
                    test_split="validation", metric=TOP1),
    "cifar10": dict(tfds_name="cifar10", train_split="train", validation_split="",
                    test_split="test", metric=TOP1),
    "cifar100": dict(tfds_name="cifar100", train_split="train", validation_split="",
                     test_split="test", metric=TOP1),
    "sun397": dict(tfds_name="sun397/standard-part1-120k", train_split="train",
                   validation_split="validation", test_split="test", metric=TOP1),
    "dtd": dict(tfds_name="dtd", train_split="train", validation_split="validation",
                test_split="test", metric=TOP1),
    "cars196": dict(tfds_name="cars196", train_split="train", validation_split="",
                    test_split="test", metric=TOP1),
    "oxford_iiit_pet": dict(tfds_name="oxford_iiit_pet", train_split="train",
                            validation_split="", test_split="test", metric=MEAN_PER_CLASS),
    "caltech101": dict(tfds_name="caltech101", train_split="train", validation_split="",
                       test_split="test", metric=MEAN_PER_CLASS),
    "oxford_flowers102": dict(tfds_name="oxford_flowers102", train_split="train",
                              validation_split="validation", test_split="test",
                              metric=MEAN_PER_CLASS),
    # Not in TFDS: ImageFolder roots with train/ (val/) test/ folders.
    "aircraft": dict(tfds_name="", train_split="train", validation_split="val",
                     test_split="test", metric=MEAN_PER_CLASS),
    "birdsnap": dict(tfds_name="", train_split="train", validation_split="",
                     test_split="test", metric=TOP1),
}


def metric_value(metrics: dict, metric: str) -> float:
    return float(metrics[metric])


def holdout_indices(num_examples: int, validation_fraction: float, seed: int = 0):
    """Deterministic random split of range(num_examples) -> (train_indices, validation_indices)."""
    order = np.random.default_rng(seed).permutation(num_examples)
    num_validation = max(1, int(round(num_examples * validation_fraction)))
    return np.sort(order[num_validation:]), np.sort(order[:num_validation])


def holdout_examples(examples, validation_fraction: float):
    """(train, validation) datasets: every round(1 / fraction)-th example is held out."""
    period = max(2, int(round(1.0 / validation_fraction)))
    indexed = examples.enumerate()
    train = indexed.filter(lambda i, x: i % period != 0).map(lambda i, x: x)
    validation = indexed.filter(lambda i, x: i % period == 0).map(lambda i, x: x)
    return train, validation


def sweep_grid(sweep: dict) -> list[dict]:
    """{"learning_rate": [...], "weight_decay": [...]} -> list of every combination."""
    keys = sorted(sweep)
    return [dict(zip(keys, values)) for values in itertools.product(*(sweep[k] for k in keys))]


def _fit_head_on_features(features, labels, num_classes, *, seed, progress, **hyper):
    head, _ = linear.train_linear_head(None, None, num_classes=num_classes, augment=False,
                                       seed=seed, train_features=(features, labels),
                                       progress=progress, **hyper)
    return head


def linear_transfer(train_features, test_features, *, num_classes: int, metric: str,
                    sweep: dict, validation_features=None, validation_fraction: float = 0.2,
                    seed: int = 0, progress: bool = False, **fixed) -> dict:
    """Sweep on validation, retrain on train + validation, score on test.

    *_features are (features, labels) pairs. `sweep` maps `train_linear_head` argument names to
    candidate values; `fixed` holds the other arguments (batch_size, num_epochs, ...).
    Returns {"metric", "test": metrics, "best": hyper, "sweep": [(hyper, validation score)]}.
    """
    train_x, train_y = train_features
    if validation_features is None:
        fit_index, val_index = holdout_indices(len(train_y), validation_fraction, seed)
        fit_set = (train_x[fit_index], train_y[fit_index])
        validation_features = (train_x[val_index], train_y[val_index])
        full_set = train_features
    else:
        fit_set = train_features
        full_set = (np.concatenate([train_x, validation_features[0]]),
                    np.concatenate([train_y, validation_features[1]]))
    table = []
    for hyper in sweep_grid(sweep):
        head = _fit_head_on_features(*fit_set, num_classes, seed=seed, progress=progress,
                                     **fixed, **hyper)
        val_metrics = results.classification_metrics(
            linear.predict_top_k(head, validation_features[0], 5), validation_features[1],
            num_classes)
        table.append((hyper, metric_value(val_metrics, metric)))
    best = max(table, key=lambda row: row[1])[0]
    head = _fit_head_on_features(*full_set, num_classes, seed=seed, progress=progress, **fixed,
                                 **best)
    test_metrics = results.classification_metrics(
        linear.predict_top_k(head, test_features[0], 5), test_features[1], num_classes)
    return {"metric": metric, "score": metric_value(test_metrics, metric), "test": test_metrics,
            "best": best, "sweep": table, "head": head}


def finetune_transfer(load_encoder, train_examples, test_examples, *, num_classes: int,
                      metric: str, sweep: dict, validation_examples=None,
                      validation_fraction: float = 0.2, batch_size: int = 64,
                      image_size: int = 224, resize_size: int = 256, progress: bool = False,
                      **fixed) -> dict:
    """Fine-tuning transfer with the same sweep / retrain / test logic as `linear_transfer`.

    `load_encoder()` returns a fresh copy of the pretrained encoder for every sweep point.
    `sweep` / `fixed` map `finetune.finetune` arguments (e.g. encoder_learning_rate); a
    `learning_rate` entry sets the encoder and head learning rates together.
    """
    if validation_examples is None:
        fit_examples, validation_examples = holdout_examples(train_examples, validation_fraction)
        full_examples = train_examples
    else:
        fit_examples = train_examples
        full_examples = train_examples.concatenate(validation_examples)

    def run(examples, hyper):
        if "learning_rate" in hyper:  # one learning rate for encoder and head (SimCLR / BYOL)
            hyper = dict(hyper)
            hyper["encoder_learning_rate"] = hyper["head_learning_rate"] = hyper.pop(
                "learning_rate")
        encoder = load_encoder()
        head, _ = finetune_lib.finetune(encoder, examples, num_classes=num_classes,
                                        batch_size=batch_size, image_size=image_size,
                                        progress=progress, **{**fixed, **hyper})
        return encoder, head

    def score(encoder, head, examples):
        return linear.evaluate_head(encoder, head, examples, num_classes=num_classes,
                                    batch_size=batch_size, image_size=image_size,
                                    resize_size=resize_size, progress=progress)
    table = []
    for hyper in sweep_grid(sweep):
        encoder, head = run(fit_examples, hyper)
        table.append((hyper, metric_value(score(encoder, head, validation_examples), metric)))
    best = max(table, key=lambda row: row[1])[0]
    encoder, head = run(full_examples, best)
    test_metrics = score(encoder, head, test_examples)
    return {"metric": metric, "score": metric_value(test_metrics, metric), "test": test_metrics,
            "best": best, "sweep": table, "head": head, "encoder": encoder}
