"""The tfds source: tfds.load(data.tfds_name, split, data.data_dir); id = the `tfds_id`.

TFDS decodes while it reads, so its shard is `readers.Sequential` over decoded examples.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from relicv2_tf.data import readers


def _builder(data_config):
    import tensorflow_datasets as tfds
    return tfds.builder(data_config.tfds_name, data_dir=data_config.data_dir or None)


def _not_prepared(data_config, split) -> ValueError:
    import tensorflow_datasets as tfds
    return ValueError(
        f"TFDS dataset {data_config.tfds_name!r} has no prepared split {split!r} in "
        f"data_dir={data_config.data_dir or tfds.core.constants.DATA_DIR!r}; prepare it "
        f"first (`tfds build {data_config.tfds_name}`; imagenet2012 needs its manual download, "
        "see the TFDS catalog) or fix --config.data.split / --config.data.data_dir.")


def count(data_config, split) -> int:
    """Examples of the prepared split (from the dataset's metadata)."""
    builder = _builder(data_config)
    try:
        return builder.info.splits[split].num_examples
    except KeyError as error:
        raise _not_prepared(data_config, split) from error


def num_classes(data_config, split) -> int:
    return int(_builder(data_config).info.features["label"].num_classes)


def reader(data_config, split, input_context, file_seed):
    import tensorflow_datasets as tfds
    if not data_config.tfds_name:
        raise ValueError("data.source='tfds' needs --config.data.tfds_name (e.g. imagenet2012).")
    limit = data_config.num_examples
    sliced_split = f"{split}[:{limit}]" if limit > 0 else split
    # One file order for every epoch (fixed by the seed): TFDS takes no per-epoch tensor seed.
    read_config = tfds.ReadConfig(input_context=input_context, add_tfds_id=True,
                                  shuffle_seed=file_seed, shuffle_reshuffle_each_iteration=False)
    try:  # never download or prepare here: a missing dataset is the user's to build
        dataset = tfds.load(data_config.tfds_name, split=sliced_split,
                            data_dir=data_config.data_dir or None, download=False,
                            shuffle_files=file_seed is not None, read_config=read_config)
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as error:
        raise _not_prepared(data_config, split) from error
    if limit > 0:
        dataset = dataset.take(limit)  # also when a reader ignores the slice

    def to_example(features):
        image = features["image"]
        if image.shape.rank == 3 and image.shape[-1] == 1:
            image = tf.tile(image, [1, 1, 3])
        label = tf.cast(features["label"], tf.int32) if "label" in features else tf.constant(-1)
        return {"image": tf.ensure_shape(tf.cast(image, tf.uint8), [None, None, 3]),
                "label": label, "id": features["tfds_id"]}

    def records_per_epoch():
        num_pipelines, _ = readers.pipelines(input_context)
        if num_pipelines == 1:
            total = count(data_config, split)
            return int(min(total, limit) if limit > 0 else total)
        return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))

    return readers.Sequential(
        records=lambda order_key: dataset,
        to_examples=lambda records: records.map(to_example, num_parallel_calls=tf.data.AUTOTUNE,
                                                deterministic=True),
        count=records_per_epoch)
