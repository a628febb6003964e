"""The tfrecord source: shards matching the pattern `data.data_dir`, layout `tfrecord_format`.

The source has masks when its first example carries one (then every example must). Records are
checked in the graph before decoding (`image_checks.bytes_problem`, `mask_bytes_problem`; with
on_bad_image="skip" also `mask_size_problem` from the headers), so "skip" drops them before
positions are counted; a record that passes but fails to decode is named by
`readers.decode_each`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from relicv2_tf.data import image_checks, readers, tfrecord_format

TFRECORD_CYCLE_LENGTH = 16  # files read at once; fixed (not AUTOTUNE) so the order is too

_RECORD_COUNTS = {}  # (files and their sizes/mtimes, sharding, checks) -> records per epoch


def files(data_config):
    found = sorted(tf.io.gfile.glob(data_config.data_dir)) if data_config.data_dir else []
    if not found:
        raise ValueError(f"no TFRecord files match data.data_dir={data_config.data_dir!r}; fix "
                         "--config.data.data_dir (a file pattern such as /data/train-*.tfrecord).")
    return found


def count(data_config, split) -> int:
    """Records in every matching file (the pattern is the split)."""
    return sum(1 for _ in tf.data.TFRecordDataset(files(data_config)))


def _has_masks(paths) -> bool:
    """The source has masks when its first example carries one (then every example must)."""
    for record in tf.data.TFRecordDataset(paths[:1]).take(1):
        return bool(tfrecord_format.parse_example(record)["mask"].numpy())
    return False


def reader(data_config, split, input_context, file_seed):
    paths = files(data_config)
    with_masks = _has_masks(paths)
    num_pipelines, pipeline = readers.pipelines(input_context)
    limit = data_config.num_examples
    # Whole files per pipeline when there are enough, else every n-th record. A limited source
    # is the first `num_examples` records in sorted file order: the same subset every epoch.
    shard_files = num_pipelines > 1 and len(paths) >= num_pipelines and limit <= 0
    if shard_files:
        paths = paths[pipeline::num_pipelines]
    permute_files = limit <= 0 and len(paths) > 1
    skip = data_config.on_bad_image == "skip"

    def parse(serialized):
        raw = tfrecord_format.parse_example(serialized)
        problem = image_checks.bytes_problem(raw["image"])
        if with_masks:
            problem = tf.where(problem == "", image_checks.mask_bytes_problem(raw["mask"]),
                               problem)
        return {**raw, "problem": problem}

    def with_size_problem(record, size_problem, ok):
        """The mask-size check from the headers (skip mode: a mismatch leaves before positions
        are counted); a JPEG header libjpeg cannot read is a problem too."""
        size_problem = tf.where(ok, size_problem, "corrupt image header (no size)")
        return {**record, "problem": tf.where(record["problem"] == "", size_problem,
                                              record["problem"])}

    def records(order_key):
        names = tf.constant(paths)
        if order_key is not None and permute_files:
            names = tf.gather(names, tf.random.experimental.index_shuffle(
                tf.range(len(paths), dtype=tf.int64), order_key,
                tf.constant(len(paths) - 1, tf.int64)))
        dataset = tf.data.Dataset.from_tensor_slices(names).interleave(
            tf.data.TFRecordDataset, cycle_length=min(len(paths), TFRECORD_CYCLE_LENGTH),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if limit > 0:
            dataset = dataset.take(limit)
        if num_pipelines > 1 and not shard_files:
            dataset = dataset.shard(num_pipelines, pipeline)
        dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if skip and with_masks:
            dataset = readers.try_each(dataset, image_checks.mask_size_problem).map(
                with_size_problem)
        if skip:
            dataset = dataset.filter(_log_and_keep)
        return dataset

    def check_problem(record):
        assertion = tf.debugging.Assert(record["problem"] == "", [
            "bad TFRecord example id:", record["id"], "reason:", record["problem"],
            readers.BAD_INPUT_FIX.replace("file(s)", "example(s)")], summarize=3)
        with tf.control_dependencies([assertion]):  # a clear message before any decoding
            return tf.nest.map_structure(tf.identity, record)

    def decode(record):
        example = {"image": readers.decode_image(record["image"]),
                   "label": tf.cast(record["label"], tf.int32), "id": record["id"]}
        if with_masks:
            example["mask"] = readers.decode_mask(record["mask"])
        return example

    def same_size(example):
        return tf.reduce_all(tf.shape(example["mask"])[:2] == tf.shape(example["image"])[:2])

    def check_mask_size(example):
        assertion = tf.debugging.Assert(same_size(example), [
            "mask size", tf.shape(example["mask"])[:2], "!= image size",
            tf.shape(example["image"])[:2], "for id:", example["id"],
            "fix: regenerate the mask at the image's size, or "
            "set --config.data.on_bad_image=skip"], summarize=3)
        with tf.control_dependencies([assertion]):
            return tf.nest.map_structure(tf.identity, example)

    def to_examples(records):
        if not skip:
            records = records.map(check_problem)
        examples = readers.decode_each(records, decode, lambda record: record["id"], skip,
                                       "TFRecord example")
        if with_masks and skip:  # sizes the headers did not give (GIF, BMP images)
            return examples.filter(lambda example: tf.cond(
                same_size(example), lambda: tf.constant(True),
                lambda: readers.print_skip(example["id"], "mask size != image size",
                                           tf.constant(False))))
        if with_masks:
            return examples.map(check_mask_size)
        return examples

    def records_per_epoch():
        stats = tuple((f, tf.io.gfile.stat(f).length, tf.io.gfile.stat(f).mtime_nsec)
                      for f in paths)
        key = (stats, num_pipelines, pipeline, limit, skip)
        if key not in _RECORD_COUNTS:
            _RECORD_COUNTS[key] = int(records(None).reduce(np.int64(0), lambda n, _: n + 1))
        return _RECORD_COUNTS[key]

    return readers.Sequential(records, to_examples, records_per_epoch)


def _log_and_keep(record):
    keep = record["problem"] == ""
    return tf.cond(keep, lambda: keep,
                   lambda: readers.print_skip(record["id"], record["problem"], keep))
