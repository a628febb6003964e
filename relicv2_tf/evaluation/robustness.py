"""Robustness and out-of-distribution generalisation, zero-shot (ReLICv2 section 4.1, appendix B.4).

The ImageNet linear head (trained by linear evaluation) is applied unchanged to the test sets:
ImageNetV2 (matched-frequency, threshold-0.7, top-images), ImageNet-C (top-1 averaged over the
15 benchmark corruptions x 5 severities), ImageNet-R, ImageNet-Sketch, ImageNet-A and ObjectNet.

Class spaces: predictions live in the 1000-class ImageNet space whose order is the sorted wnid list
(the TFDS `imagenet2012` label order). For 200-class sets (ImageNet-R / -A) the logits are
restricted to the classes of the set before ranking (the published protocol of Hendrycks et al.).
For ImageFolder copies each folder name is a wnid (or a class index for ImageNetV2's "0".."999"
folders) and is mapped into the 1000-class space; ObjectNet folders map to *sets* of ImageNet
classes (a JSON file {folder: [wnid, ...]}), a prediction counting as correct if it is in the set.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from relicv2_tf.evaluation import features as features_lib
from relicv2_tf.evaluation import inputs, linear_head, results

# The 15 benchmark corruptions of Hendrycks & Dietterich (2019); TFDS imagenet2012_corrupted
# configs are "<corruption>_<severity>".
IMAGENET_C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
IMAGENET_C_SEVERITIES = (1, 2, 3, 4, 5)
IMAGENET_V2_VARIANTS = ("matched-frequency", "threshold-0.7", "topimages")

# Test sets in TFDS (labels already in the 1000-class space) -> (tfds_name, split).
TFDS_TEST_SETS = {
    **{f"imagenet_v2/{v}": (f"imagenet_v2/{v}", "test") for v in IMAGENET_V2_VARIANTS},
    "imagenet_r": ("imagenet_r", "test"),
    "imagenet_a": ("imagenet_a", "test"),
    "imagenet_sketch": ("imagenet_sketch", "test"),
    **{f"imagenet_c/{c}_{s}": (f"imagenet2012_corrupted/{c}_{s}", "validation")
       for c in IMAGENET_C_CORRUPTIONS for s in IMAGENET_C_SEVERITIES},
}
SUBSET_200 = ("imagenet_r", "imagenet_a")  # zero-shot on the classes present in the set
# The names `config.datasets` accepts: a group of TFDS_TEST_SETS, or objectnet (ImageFolder only).
GROUPS = ("imagenet_v2", "imagenet_c", "imagenet_r", "imagenet_sketch", "imagenet_a",
          "objectnet")


def imagenet_wnids(path: str = "") -> list[str]:
    """The 1000 ImageNet wnids in label order (sorted).

    `path` may be a text file (one wnid per line) or an ImageNet ImageFolder split directory
    (its class folders); by default the list shipped with tensorflow-datasets is used.
    """
    if not path:
        import tensorflow_datasets as tfds
        path = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012",
                            "labels.txt")
    if os.path.isdir(path):
        wnids = folder_class_names(path)
    else:
        with open(path) as f:
            wnids = [line.strip() for line in f if line.strip()]
    if wnids != sorted(wnids):
        raise ValueError(f"{path}: the wnid list is not sorted; ImageNet label order is the "
                         "sorted wnid list.")
    return wnids


def folder_class_names(directory: str) -> list[str]:
    """Class folder names of an ImageFolder directory, in label order (sorted, as data.sources)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory} is not a directory of class folders.")
    return sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))


def class_index_mapping(class_names, wnids) -> np.ndarray:
    """Local label i -> index in the 1000-class space, for folder names that are wnids or
    decimal class indices (ImageNetV2's "0".."999" folders)."""
    position = {w: i for i, w in enumerate(wnids)}
    mapping = []
    for name in class_names:
        if name.isdigit():
            index = int(name)
            if not 0 <= index < len(wnids):
                raise ValueError(f"class folder {name!r} is not an index in [0, {len(wnids)}).")
        elif name in position:
            index = position[name]
        else:
            raise ValueError(f"class folder {name!r} is neither an ImageNet wnid nor a class "
                             "index; rename the folders or pass a class-map JSON (ObjectNet).")
        mapping.append(index)
    return np.asarray(mapping, np.int64)


def label_sets_from_json(path: str, class_names, wnids) -> list[list[int]]:
    """ObjectNet-style mapping {folder: [wnid, ...]} -> per local label, its ImageNet indices."""
    with open(path) as f:
        mapping = json.load(f)
    position = {w: i for i, w in enumerate(wnids)}
    sets = []
    for name in class_names:
        if name not in mapping:
            raise ValueError(f"{path} has no entry for class folder {name!r}.")
        sets.append(sorted(position[w] for w in mapping[name]))
    return sets


def accuracy_with_label_sets(top_predictions, label_sets, k: int) -> float:
    """A row is correct when any of its first k predictions is in its set of correct classes."""
    top_predictions = np.asarray(top_predictions)[:, :k]
    hits = [bool(set(row.tolist()) & set(correct)) for row, correct in
            zip(top_predictions, label_sets)]
    return float(np.mean(hits)) if hits else float("nan")


def zero_shot_metrics(head, features, labels, *, label_map=None, label_sets=None,
                      class_subset=None) -> dict:
    """top1 / top5 of the ImageNet head on features of an ImageNet-like test set.

    labels: local labels; `label_map` (array) or `label_sets` (list of index lists) moves them to
    the 1000-class space (identity when both are None). `class_subset` restricts the logits.
    """
    labels = np.asarray(labels)
    if label_sets is None:
        mapped = labels if label_map is None else np.asarray(label_map)[labels]
        sets = [[int(c)] for c in mapped]
    else:
        sets = [label_sets[int(c)] for c in labels]
    top = linear_head.predict_top_k(head, features, 5, class_subset=class_subset)
    return {"top1": accuracy_with_label_sets(top, sets, 1),
            "top5": accuracy_with_label_sets(top, sets, 5),
            "num_examples": int(len(labels))}


def evaluate_zero_shot(encoder, head, examples, *, batch_size: int = 256, image_size: int = 224,
                       resize_size: int = 256, label_map=None, label_sets=None,
                       restrict_to_present_classes: bool = False, class_subset=None,
                       progress: bool = True, strategy=None) -> dict:
    """Extracts centre-crop features of (image, label) examples and scores them zero-shot.

    `restrict_to_present_classes` takes the class subset from the (mapped) labels themselves, for
    TFDS ImageNet-R / -A whose labels are already 1000-class indices of their 200 classes.
    """
    test_features, labels = features_lib.centre_crop_features(
        encoder, examples, batch_size=batch_size, image_size=image_size,
        resize_size=resize_size, progress=progress, strategy=strategy)
    if restrict_to_present_classes and class_subset is None:
        mapped = labels if label_map is None else np.asarray(label_map)[labels]
        class_subset = np.unique(mapped)
    if class_subset is None and label_sets is not None:
        class_subset = np.unique([c for s in label_sets for c in s])
    return zero_shot_metrics(head, test_features, labels, label_map=label_map,
                             label_sets=label_sets, class_subset=class_subset)


def imagenet_c_summary(per_set: dict) -> dict:
    """Mean top-1 over every `imagenet_c/<corruption>_<severity>` entry, plus per corruption."""
    per_corruption = {}
    for name, metrics in per_set.items():
        if name.startswith("imagenet_c/"):
            corruption = name.split("/", 1)[1].rsplit("_", 1)[0]
            per_corruption.setdefault(corruption, []).append(metrics["top1"])
    if not per_corruption:
        return {}
    summary = {f"imagenet_c/{c}": float(np.mean(v)) for c, v in per_corruption.items()}
    summary["imagenet_c_mean_top1"] = float(np.mean([a for v in per_corruption.values()
                                                     for a in v]))
    summary["imagenet_c_num_sets"] = int(sum(len(v) for v in per_corruption.values()))
    return summary


# --------------------------------------------------------------------------- the protocol
def test_sets(config) -> list[tuple]:
    """(name, data config, split, ImageFolder directory or "") of every set in `config.datasets`:
    TFDS unless `config.image_folders.<group>` names a folder."""
    sets = []
    for group in [g.strip() for g in config.datasets.split(",") if g.strip()]:
        if group not in GROUPS:
            raise ValueError(f"unknown test set {group!r}; fix --config.datasets (any of "
                             f"{', '.join(GROUPS)}).")
        folder = config.image_folders.get(group, "")
        if group == "objectnet" and not (folder and config.objectnet_class_map):
            raise ValueError("objectnet is read from an ImageFolder: set "
                             "--config.image_folders.objectnet and --config.objectnet_class_map.")
        names = (["objectnet"] if group == "objectnet" else
                 [n for n in TFDS_TEST_SETS if n.split("/")[0] == group])
        for name in names:
            if folder:
                sub = name.split("/", 1)[1] if "/" in name else ""
                root = os.path.join(folder, sub) if sub else folder
                data = inputs.data_section(source="image_folder", data_dir=root, split="",
                                           num_examples=config.num_examples)
                sets.append((name, data, "", root))
            else:
                tfds_name, split = TFDS_TEST_SETS[name]
                data = inputs.data_section(source="tfds", tfds_name=tfds_name,
                                           data_dir=config.tfds_data_dir,
                                           num_examples=config.num_examples)
                sets.append((name, data, split, ""))
    return sets


def class_space(name: str, folder: str, config, wnids) -> dict:
    """How a test set's labels map into the head's 1000 classes (`evaluate_zero_shot` kwargs)."""
    if not folder:  # TFDS: labels are 1000-class indices already
        return {"restrict_to_present_classes": name in SUBSET_200}
    class_names = folder_class_names(folder)
    if name == "objectnet":
        return {"label_sets": label_sets_from_json(config.objectnet_class_map, class_names,
                                                   wnids)}
    return {"label_map": class_index_mapping(class_names, wnids),
            "restrict_to_present_classes": name in SUBSET_200}


def run(config, output_dir: str, *, strategy=None, progress: bool = True) -> dict:
    """`relicv2-robustness`: the ImageNet head `config.head_path` applied zero-shot to every set
    of `config.datasets`; writes `robustness.json` (top-1 per set, ImageNet-C mean and per
    corruption) to `output_dir`."""
    strategy = strategy or tf.distribute.get_strategy()
    sets = test_sets(config)
    wnids = imagenet_wnids(config.wnids_file)
    with strategy.scope():
        encoder = inputs.encoder_from_config(config)
        head = linear_head.load_head(config.head_path)
    per_set = {}
    for name, data, split, folder in sets:
        per_set[name] = evaluate_zero_shot(
            encoder, head, inputs.labelled_examples(data, split or None),
            batch_size=config.batch_size, image_size=config.image_size,
            resize_size=config.resize_size, progress=progress, strategy=strategy,
            **class_space(name, folder, config, wnids))
        print(results.summary_line(f"robustness {name}", per_set[name]), flush=True)
    headline = {name: m["top1"] for name, m in per_set.items()
                if not name.startswith("imagenet_c/")}
    corruption = imagenet_c_summary(per_set)
    if corruption:
        headline["imagenet_c_mean_top1"] = corruption["imagenet_c_mean_top1"]
    results.write_result(output_dir, "robustness", headline, config=config,
                         details={"per_set": per_set, "imagenet_c": corruption})
    return headline
