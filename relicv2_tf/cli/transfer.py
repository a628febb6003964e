"""`relicv2-transfer`: linear / fine-tuned transfer to other datasets (ReLICv2 appendix B.3).

  relicv2-transfer --config=experiments/configs/transfer.py \
      --config.encoder_dir=runs/r50/encoder --config.datasets=cifar10,dtd \
      --output_dir=runs/r50/transfer

Writes <output_dir>/transfer.json (the paper's metric per dataset, chosen hyper-parameters and
the validation sweep) and prints a one-line summary.
"""

from __future__ import annotations

import copy
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. experiments/configs/transfer.py.", lock_config=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory for results.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def dataset_config(config, name: str):
    """The data config and splits of one transfer dataset."""
    from relicv2_tf.evaluation import transfer
    if name not in transfer.TRANSFER_DATASETS:
        raise ValueError(f"unknown transfer dataset {name!r}; fix --config.datasets (one of "
                         f"{sorted(transfer.TRANSFER_DATASETS)}).")
    spec = transfer.TRANSFER_DATASETS[name]
    data = copy.deepcopy(config.data)
    data.unlock()
    if spec["tfds_name"]:
        data.source = "tfds"
        data.tfds_name = spec["tfds_name"]
    else:
        if not config.image_folder_root:
            raise ValueError(f"{name} is read as an ImageFolder: set "
                             "--config.image_folder_root (holding <name>/train, <name>/test).")
        data.source = "image_folder"
        data.data_dir = os.path.join(config.image_folder_root, name)
        if not os.path.isdir(os.path.join(data.data_dir, spec["validation_split"] or "-")):
            spec = {**spec, "validation_split": ""}
    return data, spec


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, output_dir = _CONFIG.value, _OUTPUT_DIR.value
    if config is None or not output_dir:
        raise app.UsageError("relicv2-transfer needs --config=<file> and --output_dir=<dir>.")
    if config.protocol not in ("linear", "finetune", "both"):
        raise app.UsageError("--config.protocol must be linear | finetune | both.")
    from relicv2_tf.evaluation import linear, results, transfer

    progress = _PROGRESS.value
    names = [n.strip() for n in config.datasets.split(",") if n.strip()]
    try:
        encoder = linear.encoder_from_config(config)
        specs = {name: dataset_config(config, name) for name in names}
    except (ValueError, FileNotFoundError) as error:
        print(f"relicv2-transfer: {error}", file=sys.stderr)
        sys.exit(2)
    lin = config.linear
    headline, details = {}, {}
    for name, (data, spec) in specs.items():
        num_classes = linear.infer_num_classes(data, spec["train_split"])
        train = linear.labelled_examples(data, spec["train_split"])
        test = linear.labelled_examples(data, spec["test_split"])
        validation = (linear.labelled_examples(data, spec["validation_split"])
                      if spec["validation_split"] else None)
        if config.protocol in ("linear", "both"):
            def features(examples, what):
                return linear.extract_features(
                    encoder, linear.eval_batches(examples, config.eval_batch_size,
                                                 lin.image_size, lin.resize_size),
                    progress=progress, description=f"{name} {what}")
            outcome = transfer.linear_transfer(
                features(train, "train"), features(test, "test"), num_classes=num_classes,
                metric=spec["metric"], sweep=config.linear_sweep.to_dict(),
                validation_features=features(validation, "val") if validation else None,
                validation_fraction=config.validation_fraction, seed=config.seed,
                batch_size=lin.batch_size, num_epochs=lin.num_epochs, momentum=lin.momentum,
                nesterov=lin.nesterov, schedule=lin.schedule)
            headline[f"{name}/linear"] = outcome["score"]
            details[f"{name}/linear"] = {k: v for k, v in outcome.items() if k != "head"}
        if config.protocol in ("finetune", "both"):
            outcome = transfer.finetune_transfer(
                lambda: linear.encoder_from_config(config), train, test,
                num_classes=num_classes, metric=spec["metric"],
                sweep=config.finetune_sweep.to_dict(), validation_examples=validation,
                validation_fraction=config.validation_fraction, seed=config.seed,
                resize_size=lin.resize_size, progress=progress, **config.finetune.to_dict())
            headline[f"{name}/finetune"] = outcome["score"]
            details[f"{name}/finetune"] = {k: v for k, v in outcome.items()
                                           if k not in ("head", "encoder")}
    results.write_result(output_dir, "transfer", headline, config=config, details=details)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
