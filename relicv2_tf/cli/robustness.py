"""`relicv2-robustness`: zero-shot robustness / OOD evaluation (ReLICv2 section 4.1, B.4).

  relicv2-robustness --config=experiments/configs/robustness.py \
      --config.encoder_dir=runs/r50/encoder --config.head_path=runs/r50/linear/linear_head.keras \
      --output_dir=runs/r50/robustness

Writes <output_dir>/robustness.json (top-1 per set, ImageNet-C mean and per corruption).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from relicv2_tf import config as config_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. experiments/configs/robustness.py.", lock_config=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory for results.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")

GROUPS = ("imagenet_v2", "imagenet_c", "imagenet_r", "imagenet_sketch", "imagenet_a",
          "objectnet")


def _data_config(config, **fields):
    data = config_lib.get_default_config().data
    data.num_examples = config.num_examples
    for key, value in fields.items():
        data[key] = value
    return data


def test_sets(config):
    """(name, data_config, split, folder_dir or "") of every set in config.datasets."""
    from relicv2_tf.evaluation import robustness
    sets = []
    for group in [g.strip() for g in config.datasets.split(",") if g.strip()]:
        if group not in GROUPS:
            raise ValueError(f"unknown test set {group!r}; fix --config.datasets (any of "
                             f"{', '.join(GROUPS)}).")
        folder = config.image_folders.get(group, "")
        if group == "objectnet" and not folder:
            raise ValueError("objectnet is read from an ImageFolder: set "
                             "--config.image_folders.objectnet and --config.objectnet_class_map.")
        names = [n for n in robustness.TFDS_TEST_SETS if n.split("/")[0] == group]
        if group == "objectnet":
            names = ["objectnet"]
        for name in names:
            if folder:
                sub = name.split("/", 1)[1] if "/" in name else ""
                root = os.path.join(folder, sub) if sub else folder
                data = _data_config(config, source="image_folder", data_dir=root, split="")
                sets.append((name, data, "", root))
            else:
                tfds_name, split = robustness.TFDS_TEST_SETS[name]
                sets.append((name, _data_config(config, source="tfds", tfds_name=tfds_name,
                                                data_dir=config.tfds_data_dir), split, ""))
    return sets


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, output_dir = _CONFIG.value, _OUTPUT_DIR.value
    if config is None or not output_dir:
        raise app.UsageError("relicv2-robustness needs --config=<file> and --output_dir=<dir>.")
    import keras

    from relicv2_tf.evaluation import linear, results, robustness

    try:
        encoder = linear.encoder_from_config(config)
        if not os.path.exists(config.head_path):
            raise FileNotFoundError(f"--config.head_path={config.head_path!r} does not exist; "
                                    "pass the linear_head.keras written by relicv2-linear-eval.")
        head = keras.models.load_model(config.head_path)
        wnids = robustness.imagenet_wnids(config.wnids_file)
        sets = test_sets(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"relicv2-robustness: {error}", file=sys.stderr)
        sys.exit(2)
    per_set = {}
    for name, data, split, folder in sets:
        examples = linear.labelled_examples(data, split or None)
        kwargs = {}
        if folder:
            class_names = robustness.folder_class_names(folder)
            if name == "objectnet":
                kwargs["label_sets"] = robustness.label_sets_from_json(
                    config.objectnet_class_map, class_names, wnids)
            else:
                kwargs["label_map"] = robustness.class_index_mapping(class_names, wnids)
                kwargs["restrict_to_present_classes"] = name in robustness.SUBSET_200
        else:
            kwargs["restrict_to_present_classes"] = name in robustness.SUBSET_200
        per_set[name] = robustness.evaluate_zero_shot(
            encoder, head, examples, batch_size=config.batch_size, image_size=config.image_size,
            resize_size=config.resize_size, progress=_PROGRESS.value, **kwargs)
        print(results.summary_line(f"robustness {name}", per_set[name]), flush=True)
    headline = {name: m["top1"] for name, m in per_set.items()
                if not name.startswith("imagenet_c/")}
    corruption = robustness.imagenet_c_summary(per_set)
    if corruption:
        headline["imagenet_c_mean_top1"] = corruption["imagenet_c_mean_top1"]
    results.write_result(output_dir, "robustness", headline, config=config,
                         details={"per_set": per_set, "imagenet_c": corruption})


def run():
    app.run(main)


if __name__ == "__main__":
    run()
