"""Example sources: what `data.source` may name, and every source's examples in training order.

`make_source(data_config, split)` -> tf.data.Dataset of
`{image: uint8 [H, W, 3], mask: uint8 [H, W, 1] (only if the source has masks; 255 = foreground),
label: int32 (-1 unknown), id: string}`, sharded per input pipeline (`input_context`, for
`strategy.distribute_datasets_from_function`) and deterministic under `seed`.

`SOURCES` is the one list of sources, each with its config check (`check_config`, which
`config.validate` calls); the kNN monitor's labelled splits and the evaluation's class counts read
it. Each source's reader (`readers`, `image_folder_reader`,
`tfds_reader`, `tfrecord_reader`) checks its input at the boundary, before decoding
(`image_checks`), and applies `data.on_bad_image` (`readers`).

Example order (`example_stream`, what pretraining reads): an input pipeline's stream is a
concatenation of epochs over its shard; epoch e's order is a pure function of (seed, pipeline,
stream, e), so the example at any position of the stream is known without reading the ones before:
  digits, synthetic, image_folder  (index-addressable) a stateless permutation of the indices per
      epoch (`tf.random.experimental.index_shuffle`); position -> (epoch, offset) -> index -> load.
  tfrecord, tfds  (sequential) per epoch a stateless file order (tfrecord; TFDS reads its files in
      one order fixed by the seed) and a `data.shuffle_buffer` shuffle seeded by the epoch's key
      (reshuffle_each_iteration=False), over the undecoded records (tfrecord) or the examples
      (tfds, which decodes while reading).
  data.cache  (image_folder, tfrecord, tfds) the decoded examples are cached in the source's fixed
      order, then shuffled per epoch (the whole shard for image_folder, `data.shuffle_buffer`
      otherwise). digits and synthetic are arrays in memory already: cache changes nothing.
`start_position=p0` starts at epoch p0 // N and skips its first p0 % N keys (indices, undecoded
records) before they are decoded (N = examples per epoch of this pipeline; sequential sources
count their records once, only when p0 > 0). Bad input that "skip" drops leaves before positions
are counted when a check finds it; a file that passes the checks but fails to decode leaves after,
which shifts the rest of that stream by one example (docs/RELIABILITY.md).
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Callable

import tensorflow as tf

from relicv2_tf.data import demo_data, image_folder_reader, readers, tfds_reader, tfrecord_reader


@dataclasses.dataclass(frozen=True)
class Source:
    """One `data.source`.

    reader: (data_config, split, input_context, file_seed) -> this input pipeline's shard
        (`readers.Indexed` or `readers.Sequential`); file_seed None: the fixed file order.
    count: (data_config, split) -> examples of the split (`num_examples` applies the limit).
    masks: data_config -> whether every example has a mask; None when only the data tell.
    num_classes: (data_config, split) -> number of classes; None when the source cannot tell.
    eval_splits: (train, held-out) splits of a labelled source; None when it has no such pair.
    check: (data_config, fail) -> None, the source's settings before anything is read; None when
        it has none.
    """

    reader: Callable
    count: Callable
    masks: Callable
    num_classes: Callable | None
    eval_splits: tuple[str, str] | None
    check: Callable | None = None


def _check_image_folder(data_config, fail):
    if not os.path.isdir(data_config.data_dir):
        fail(f"data.data_dir={data_config.data_dir!r} is not a directory; point it at an "
             "ImageFolder root (class sub-folders of images), e.g. "
             "--config.data.data_dir=/data/imagenette.")


def _check_tfds(data_config, fail):
    if not data_config.tfds_name:
        fail("data.source='tfds' needs data.tfds_name (e.g. --config.data.tfds_name=imagenet2012).")


def _check_tfrecord(data_config, fail):
    if not glob.glob(data_config.data_dir):
        fail(f"data.data_dir={data_config.data_dir!r} matches no TFRecord files; give the pattern "
             "of the shards written by `relicv2-saliency --stage=generate` (images with their "
             "masks), e.g. --config.data.data_dir='/data/imagenet_masks/train-*'.")


SOURCES = {
    # scikit-learn's 1,797 real 8x8 digits, upsampled to 32x32 RGB; mask = ink.
    "digits": Source(readers.digits_reader, readers.digits_count, masks=lambda _: True,
                     num_classes=lambda *_: demo_data.DIGITS_NUM_CLASSES,
                     eval_splits=("train", "test")),
    # Procedural discs / squares on a textured background, with their exact masks (tests).
    "synthetic": Source(readers.synthetic_reader, readers.synthetic_count, masks=lambda _: True,
                        num_classes=lambda *_: demo_data.SYNTHETIC_NUM_CLASSES,
                        eval_splits=("train", "test")),
    # <data_dir>/<split>/<class>/*.jpg ...; masks <mask_dir>/<class>/<stem>.png when mask_dir.
    "image_folder": Source(image_folder_reader.reader, image_folder_reader.count,
                           masks=lambda data_config: bool(data_config.get("mask_dir", "")),
                           num_classes=image_folder_reader.num_classes,
                           eval_splits=("train", "val"), check=_check_image_folder),
    # tfds.load(tfds_name, split, data_dir): images and labels only.
    "tfds": Source(tfds_reader.reader, tfds_reader.count, masks=lambda _: False,
                   num_classes=tfds_reader.num_classes, eval_splits=("train", "validation"),
                   check=_check_tfds),
    # Shards matching the pattern data_dir (`tfrecord_format`): masks when the first record has
    # one, which only reading tells (`views.pretrain_dataset` checks).
    "tfrecord": Source(tfrecord_reader.reader, tfrecord_reader.count, masks=lambda _: None,
                       num_classes=None, eval_splits=None, check=_check_tfrecord),
}


def check_config(config, fail):
    """`config.data.source` names a source, and that source's own check."""
    source = config.data.source
    if source not in SOURCES:
        fail(f"data.source={source!r}; choose one of {tuple(SOURCES)}.")
    if SOURCES[source].check is not None:
        SOURCES[source].check(config.data, fail)


def source_has_masks(data_config):
    """Whether `data_config`'s source gives a mask per image: True / False, or None when only
    reading the data tells (TFRecord shards: `views.pretrain_dataset` checks their first
    record and refuses mask features on shards without masks)."""
    return _source(data_config).masks(data_config)


# ---------------------------------------------------------------------------------------------
# Public API.


def make_source(data_config, split=None, *, input_context=None, seed: int = 0,
                shuffle_files: bool = True) -> tf.data.Dataset:
    """One epoch of `data_config.source` (see the module docstring): in the source's fixed order,
    or (shuffle_files) in the order of epoch 0 of `example_stream(seed=seed)`."""
    split = split or data_config.split
    _check_on_bad_image(data_config)
    if shuffle_files:
        return example_stream(data_config, split, seed=seed, input_context=input_context,
                              repeat=False)
    return _fixed_order(_reader(data_config, split, input_context, file_seed=None))


def example_stream(data_config, split=None, *, seed: int, input_context=None,
                   start_position: int = 0, repeat: bool = True,
                   stream: int = 0) -> tf.data.Dataset:
    """This input pipeline's examples in training order, from `start_position` on.

    The stream is a concatenation of epochs whose orders are pure functions of
    (seed, input pipeline, `stream`, epoch) (module docstring), so the examples from position p0
    of a fresh stream are exactly the examples from p0 on of a stream started at 0. `stream`
    tells apart independent streams of one source (0: the examples, 1: BG_Random / BG_Swaps's
    "other image"). `repeat=False`: up to the end of the epoch holding `start_position`.
    """
    split = split or data_config.split
    _check_on_bad_image(data_config)
    if start_position < 0:
        raise ValueError(f"start_position={start_position} must be >= 0.")
    reader = _reader(data_config, split, input_context, file_seed=seed)
    pipeline = input_context.input_pipeline_id if input_context is not None else 0

    def order_key(epoch):
        return epoch_order_key(seed, pipeline, stream, epoch)

    cache = data_config.cache and not (isinstance(reader, readers.Indexed) and reader.in_memory)
    if isinstance(reader, readers.Indexed) and not cache:
        size = reader.size
        end = None if repeat else (start_position // size + 1) * size

        def index_at(position):
            return tf.random.experimental.index_shuffle(
                position % size, order_key(position // size), tf.constant(size - 1, tf.int64))

        positions = (tf.data.Dataset.counter(start_position) if end is None
                     else tf.data.Dataset.range(start_position, end))
        return reader.to_examples(positions.map(index_at))

    if isinstance(reader, readers.Sequential):
        _check_not_empty(reader, data_config)
    if cache:  # decoded once, in the fixed order; each epoch shuffles the cached examples
        cached = _fixed_order(reader).cache()
        buffer = (reader.size if isinstance(reader, readers.Indexed)
                  else data_config.shuffle_buffer)

        def epoch_keys(epoch):
            return _shuffle(cached, buffer, order_key(epoch))
    else:  # undecoded records, shuffled and skipped before decoding
        def epoch_keys(epoch):
            key = order_key(epoch)
            return _shuffle(reader.records(key), data_config.shuffle_buffer, key)
    first_epoch, skip = divmod(start_position, reader.count()) if start_position else (0, 0)

    def epoch_from_start(epoch):
        return epoch_keys(epoch).skip(tf.where(epoch == first_epoch, tf.constant(skip, tf.int64),
                                               tf.constant(0, tf.int64)))

    epochs = (tf.data.Dataset.counter(first_epoch) if repeat
              else tf.data.Dataset.range(first_epoch, first_epoch + 1))
    examples = epochs.flat_map(epoch_from_start)
    return examples if cache else reader.to_examples(examples)


def epoch_order_key(seed, pipeline, stream, epoch):
    """The stateless seed [2] of epoch `epoch`'s order. The salt -1 - stream is negative, so these
    seeds never equal an augmentation seed fold_in([seed, pipeline], position >= 0)."""
    base = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, pipeline], tf.int64), tf.constant(-1 - stream, tf.int64))
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))


def num_examples(data_config, split=None) -> int:
    """Number of examples of the (possibly limited) split, before sharding."""
    split = split or data_config.split
    total = _source(data_config).count(data_config, split)
    if data_config.num_examples > 0:
        total = min(total, data_config.num_examples)
    return int(total)


def has_masks(dataset: tf.data.Dataset) -> bool:
    """Whether a source dataset carries masks."""
    return "mask" in dataset.element_spec


# ---------------------------------------------------------------------------------------------
# The source's reader, and its order.


def _source(data_config) -> Source:
    if data_config.source not in SOURCES:
        raise ValueError(f"data.source={data_config.source!r} is not one of {sorted(SOURCES)}; "
                         "fix --config.data.source.")
    return SOURCES[data_config.source]


def _reader(data_config, split, input_context, file_seed):
    return _source(data_config).reader(data_config, split, input_context, file_seed)


def _fixed_order(reader) -> tf.data.Dataset:
    if isinstance(reader, readers.Indexed):
        return reader.to_examples(tf.data.Dataset.range(reader.size))
    return reader.to_examples(reader.records(None))


def _shuffle(dataset, buffer_size, order_key):
    """tf.data's buffer shuffle seeded by the epoch's key alone, the same order on every
    iteration. Called while a dataset function is traced (a graph of its own): tf.data pairs an
    op seed with the graph-level seed (`tf.random.set_seed`), and with a graph seed of 0 it
    cannot take a tensor op seed at all, so the seed of that graph is cleared for the call."""
    if buffer_size <= 1:
        return dataset
    seed = tf.random.stateless_uniform([], order_key, minval=None, maxval=None, dtype=tf.int64)
    graph = tf.compat.v1.get_default_graph()
    assert not tf.executing_eagerly(), "called inside a dataset function"
    graph_seed, graph.seed = graph.seed, None
    try:
        return dataset.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=False)
    finally:
        graph.seed = graph_seed


def _check_not_empty(reader, data_config):
    """A stream of empty epochs would never end: refuse a shard without a single valid record."""
    for _ in reader.records(None).take(1):
        return
    raise readers.BadInputError(
        f"data.source={data_config.source!r} (data.data_dir={data_config.data_dir!r}) has no "
        "valid example for this input pipeline; fix data.data_dir (or give fewer input pipelines "
        "than records).")


def _check_on_bad_image(data_config):
    if data_config.on_bad_image not in ("error", "skip"):
        raise ValueError(f"data.on_bad_image={data_config.on_bad_image!r} must be 'error' or "
                         "'skip'.")
