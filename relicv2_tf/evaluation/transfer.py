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
import os

import numpy as np
import tensorflow as tf

from relicv2_tf.evaluation import features as features_lib
from relicv2_tf.evaluation import finetune as finetune_lib
from relicv2_tf.evaluation import inputs, linear, linear_head, results

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


PROTOCOLS = ("linear", "finetune", "both")


def dataset_config(config, name: str):
    """(data config, spec) of one transfer dataset: `config.data` pointed at its TFDS name, or at
    `<config.image_folder_root>/<name>` for the ImageFolder ones (no `val/` folder: held out)."""
    if name not in TRANSFER_DATASETS:
        raise ValueError(f"unknown transfer dataset {name!r}; fix --config.datasets (one of "
                         f"{sorted(TRANSFER_DATASETS)}).")
    spec = TRANSFER_DATASETS[name]
    if spec["tfds_name"]:
        return inputs.data_section(config.data, source="tfds", tfds_name=spec["tfds_name"]), spec
    if not config.image_folder_root:
        raise ValueError(f"{name} is read as an ImageFolder: set --config.image_folder_root "
                         "(holding <name>/train, <name>/test).")
    data = inputs.data_section(config.data, source="image_folder",
                               data_dir=os.path.join(config.image_folder_root, name))
    if not os.path.isdir(os.path.join(data.data_dir, spec["validation_split"] or "-")):
        spec = {**spec, "validation_split": ""}
    return data, spec


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


def _fit_head_on_features(features, labels, num_classes, *, seed, progress, strategy,
                          **hyper):
    head, _ = linear.train_linear_head(None, None, num_classes=num_classes, augment=False,
                                       seed=seed, train_features=(features, labels),
                                       progress=progress, strategy=strategy, **hyper)
    return head


def linear_transfer(train_features, test_features, *, num_classes: int, metric: str,
                    sweep: dict, validation_features=None, validation_fraction: float = 0.2,
                    seed: int = 0, progress: bool = False, strategy=None, **fixed) -> dict:
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
                                     strategy=strategy, **fixed, **hyper)
        val_metrics = results.classification_metrics(
            linear_head.predict_top_k(head, validation_features[0], 5), validation_features[1],
            num_classes)
        table.append((hyper, float(val_metrics[metric])))
    best = max(table, key=lambda row: row[1])[0]
    head = _fit_head_on_features(*full_set, num_classes, seed=seed, progress=progress,
                                 strategy=strategy, **fixed, **best)
    test_metrics = results.classification_metrics(
        linear_head.predict_top_k(head, test_features[0], 5), test_features[1], num_classes)
    return {"metric": metric, "score": float(test_metrics[metric]), "test": test_metrics,
            "best": best, "sweep": table, "head": head}


def finetune_transfer(load_encoder, train_examples, test_examples, *, num_classes: int,
                      metric: str, sweep: dict, validation_examples=None,
                      validation_fraction: float = 0.2, batch_size: int = 64,
                      image_size: int = 224, resize_size: int = 256, progress: bool = False,
                      strategy=None, **fixed) -> dict:
    """Fine-tuning transfer with the same sweep / retrain / test logic as `linear_transfer`.

    `load_encoder()` returns a fresh copy of the pretrained encoder for every sweep point (built
    in the scope of `strategy`, whose replicas split every batch).
    `sweep` / `fixed` map `finetune.finetune` arguments (e.g. encoder_learning_rate); a
    `learning_rate` entry sets the encoder and head learning rates together.
    """
    strategy = strategy or tf.distribute.get_strategy()
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
        with strategy.scope():
            encoder = load_encoder()
        head, _ = finetune_lib.finetune(encoder, examples, num_classes=num_classes,
                                        batch_size=batch_size, image_size=image_size,
                                        progress=progress, strategy=strategy,
                                        **{**fixed, **hyper})
        return encoder, head

    def score(encoder, head, examples):
        return linear_head.evaluate_head(encoder, head, examples, num_classes=num_classes,
                                         batch_size=batch_size, image_size=image_size,
                                         resize_size=resize_size, progress=progress,
                                         strategy=strategy)
    table = []
    for hyper in sweep_grid(sweep):
        encoder, head = run(fit_examples, hyper)
        table.append((hyper, float(score(encoder, head, validation_examples)[metric])))
    best = max(table, key=lambda row: row[1])[0]
    encoder, head = run(full_examples, best)
    test_metrics = score(encoder, head, test_examples)
    return {"metric": metric, "score": float(test_metrics[metric]), "test": test_metrics,
            "best": best, "sweep": table, "head": head, "encoder": encoder}


def run(config, output_dir: str, *, strategy=None, progress: bool = True) -> dict:
    """`relicv2-transfer`: linear and / or fine-tuned transfer (`config.protocol`) of the config's
    encoder to each of `config.datasets`; writes `transfer.json` (the paper's metric per dataset,
    the chosen hyper-parameters and the validation sweep) to `output_dir`."""
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"--config.protocol={config.protocol!r} is not one of {PROTOCOLS}.")
    strategy = strategy or tf.distribute.get_strategy()
    names = [n.strip() for n in config.datasets.split(",") if n.strip()]
    specs = {name: dataset_config(config, name) for name in names}
    with strategy.scope():
        encoder = inputs.encoder_from_config(config)
    lin = config.linear
    headline, details = {}, {}
    for name, (data, spec) in specs.items():
        num_classes = inputs.infer_num_classes(data, spec["train_split"])
        train = inputs.labelled_examples(data, spec["train_split"])
        test = inputs.labelled_examples(data, spec["test_split"])
        validation = (inputs.labelled_examples(data, spec["validation_split"])
                      if spec["validation_split"] else None)
        if config.protocol in ("linear", "both"):
            def features(examples, what):
                return features_lib.centre_crop_features(
                    encoder, examples, batch_size=config.eval_batch_size,
                    image_size=lin.image_size, resize_size=lin.resize_size, progress=progress,
                    description=f"{name} {what}", strategy=strategy)
            outcome = linear_transfer(
                features(train, "train"), features(test, "test"), num_classes=num_classes,
                metric=spec["metric"], sweep=config.linear_sweep.to_dict(),
                validation_features=features(validation, "val") if validation else None,
                validation_fraction=config.validation_fraction, seed=config.seed,
                batch_size=lin.batch_size, num_epochs=lin.num_epochs, momentum=lin.momentum,
                nesterov=lin.nesterov, schedule=lin.schedule, strategy=strategy)
            headline[f"{name}/linear"] = outcome["score"]
            details[f"{name}/linear"] = {k: v for k, v in outcome.items() if k != "head"}
        if config.protocol in ("finetune", "both"):
            outcome = finetune_transfer(
                lambda: inputs.encoder_from_config(config), train, test,
                num_classes=num_classes, metric=spec["metric"],
                sweep=config.finetune_sweep.to_dict(), validation_examples=validation,
                validation_fraction=config.validation_fraction, seed=config.seed,
                resize_size=lin.resize_size, progress=progress, strategy=strategy,
                **config.finetune.to_dict())
            headline[f"{name}/finetune"] = outcome["score"]
            details[f"{name}/finetune"] = {k: v for k, v in outcome.items()
                                           if k not in ("head", "encoder")}
    results.write_result(output_dir, "transfer", headline, config=config, details=details)
    return headline
