"""The image_folder source: <data_dir>/<split>/<class>/*.{jpg,jpeg,png,bmp,gif} (or
<data_dir>/<class>/...), the ImageNet / Imagenette layout; label = sorted class index, id =
"<class>/<file stem>"; optional masks <mask_dir>/<id>.png.

Every file is checked in Python before the graph is built (`image_checks.check_image_file`,
`check_mask_file`); a file that passes but fails to decode is named by `readers.decode_each`.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from relicv2_tf.data import image_checks, readers

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _split_root(data_dir, split):
    """<data_dir>/<split> when that folder exists, else <data_dir>."""
    if split and os.path.isdir(os.path.join(data_dir, split)):
        return os.path.join(data_dir, split)
    return data_dir


def _classes(root):
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def _root(data_config, split):
    root = data_config.data_dir
    if not root or not os.path.isdir(root):
        raise ValueError(f"data.data_dir={root!r} is not a directory; fix --config.data.data_dir "
                         "(the ImageFolder root, holding <split>/<class>/ or <class>/ folders).")
    return _split_root(root, split)


def files(data_config, split):
    """Validated (paths, labels, ids, mask_paths or None), sorted, limited to num_examples."""
    root = _root(data_config, split)
    classes = _classes(root)
    if not classes:
        raise ValueError(f"{root} has no class sub-folders; an ImageFolder root holds "
                         "<class>/<image> files. Fix --config.data.data_dir / data.split.")
    entries = []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        for file_name in sorted(os.listdir(folder)):
            if file_name.lower().endswith(IMAGE_EXTENSIONS):
                stem = os.path.splitext(file_name)[0]
                entries.append((os.path.join(folder, file_name), label, f"{name}/{stem}"))
    if not entries:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}.")
    if data_config.num_examples > 0:
        # An evenly spread, deterministic subset so that every class is represented.
        step = max(1, len(entries) // data_config.num_examples)
        entries = entries[::step][:data_config.num_examples]
    mask_dir = data_config.get("mask_dir", "")
    bad, good = [], []
    for path, label, example_id in entries:
        reason, image_hw = image_checks.check_image_file(path)
        mask_path = None
        if not reason and mask_dir:
            mask_path = os.path.join(mask_dir, example_id + ".png")
            reason = image_checks.check_mask_file(mask_path, example_id, image_hw)
        if reason:
            bad.append((path, reason))
        else:
            good.append((path, label, example_id, mask_path))
    readers.report_bad(bad, len(entries), data_config, "image files")
    if not good:
        raise readers.BadInputError(f"no valid images left under {root}.")
    paths = [g[0] for g in good]
    labels = [g[1] for g in good]
    ids = [g[2] for g in good]
    masks = [g[3] for g in good] if mask_dir else None
    return paths, labels, ids, masks


def count(data_config, split) -> int:
    return len(files(data_config, split)[0])


def num_classes(data_config, split) -> int:
    """The number of class folders."""
    root = _split_root(data_config.data_dir, split)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data.data_dir={data_config.data_dir!r} is not a directory "
                                "of class folders.")
    return len(_classes(root))


def reader(data_config, split, input_context, file_seed):
    paths, labels, ids, mask_paths = files(data_config, split)
    num_pipelines, pipeline = readers.pipelines(input_context)
    columns = {"path": paths, "label": np.array(labels, np.int32), "id": ids}
    if mask_paths is not None:
        columns["mask_path"] = mask_paths
    columns = {name: tf.constant(values[pipeline::num_pipelines])
               for name, values in columns.items()}
    skip = data_config.on_bad_image == "skip"

    def load(index):
        row = {name: tf.gather(values, index) for name, values in columns.items()}
        example = {"image": readers.decode_image(tf.io.read_file(row["path"])),
                   "label": row["label"], "id": row["id"]}
        if "mask_path" in row:  # sizes unknown from the header (GIF, BMP, WebP) checked here
            mask = readers.decode_mask(tf.io.read_file(row["mask_path"]))
            same_size = tf.reduce_all(tf.shape(mask)[:2] == tf.shape(example["image"])[:2])
            with tf.control_dependencies([tf.debugging.Assert(same_size, ["mask size"])]):
                example["mask"] = tf.identity(mask)
        return example

    def to_examples(indices):
        return readers.decode_each(indices, load,
                                   lambda index: tf.gather(columns["path"], index), skip,
                                   "image file (or its mask)")

    return readers.Indexed(int(columns["label"].shape[0]), to_examples, in_memory=False)
