"""Example sources: every source yields the same dict of decoded examples.

`make_source(data_config, split)` -> tf.data.Dataset of
`{image: uint8 [H, W, 3], mask: uint8 [H, W, 1] (only if the source has masks; 255 = foreground),
label: int32 (-1 unknown), id: string}`, sharded per input pipeline (`input_context`, for
`strategy.distribute_datasets_from_function`) and deterministic under `seed`.

Sources (`data_config.source`):
  digits        scikit-learn's 1,797 real 8x8 digits, upsampled to 32x32 RGB; mask = ink.
  synthetic     procedural discs/squares on a textured background, with their exact masks (tests).
  image_folder  <data_dir>/<split>/<class>/*.{jpg,jpeg,png,...} (ImageNet/Imagenette layout);
                optional masks <mask_dir>/<id>.png, id = "<class>/<file stem>".
  tfds          tfds.load(tfds_name, split, data_dir).
  tfrecord      shards matching the pattern `data_dir`, layout of `tfrecord_format`.

Bad input is found at the boundary, before decoding: image files are checked in Python before
the graph is built (`check_image_file`: JPEG segments up to the scan, PNG chunks and their CRCs,
signatures; masks: present, complete PNG, the image's size), TFRecord examples by cheap byte
checks in the graph (signature, end marker, mask present; with "skip" also the sizes in the JPEG
/ PNG headers). What only the decoder finds is caught per example (`_decode_each`).
`on_bad_image="error"` stops with a message naming every bad file (the log lists them all) or the
example id, and the fix; "skip" drops them and logs each one by name (Python logging for files,
stderr lines "skipping bad example ... id: ..." for TFRecord examples and decoder failures).
Greyscale, greyscale+alpha, palette, CMYK, RGBA and 16-bit images are valid: decoded to 8-bit RGB.

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
import os
import struct
import sys
import zlib
from typing import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from relicv2_tf.data import tfrecord_format

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
DIGITS_SIZE = 32  # the 8x8 digits are upsampled to this side
DIGITS_MASK_THRESHOLD = 4.0  # ink when the 0-16 digit value exceeds a quarter of the range
DIGITS_TEST_FRACTION = 0.2  # fixed 80 / 20 train / test split
SYNTHETIC_DEFAULT_NUM_EXAMPLES = 256  # when data_config.num_examples <= 0
SYNTHETIC_MIN_SIZE = 32
TFRECORD_CYCLE_LENGTH = 16  # files read at once; fixed (not AUTOTUNE) so the order is too

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BAD_INPUT_FIX = ("fix: remove or re-encode the file(s), or set --config.data.on_bad_image=skip "
                 "to skip them (skips are counted and logged)")


class BadInputError(ValueError):
    """Raised at the boundary for unreadable images or masks when on_bad_image == "error"."""


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

    cache = data_config.cache and not (isinstance(reader, _Indexed) and reader.in_memory)
    if isinstance(reader, _Indexed) and not cache:
        size = reader.size
        end = None if repeat else (start_position // size + 1) * size

        def index_at(position):
            return tf.random.experimental.index_shuffle(
                position % size, order_key(position // size), tf.constant(size - 1, tf.int64))

        positions = (tf.data.Dataset.counter(start_position) if end is None
                     else tf.data.Dataset.range(start_position, end))
        return reader.to_examples(positions.map(index_at))

    if isinstance(reader, _Sequential):
        _check_not_empty(reader, data_config)
    if cache:  # decoded once, in the fixed order; each epoch shuffles the cached examples
        cached = _fixed_order(reader).cache()
        buffer = reader.size if isinstance(reader, _Indexed) else data_config.shuffle_buffer

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
    source = data_config.source
    if source == "digits":
        total = len(_digits_arrays(split)[0])
    elif source == "synthetic":
        total = _synthetic_count(data_config)
    elif source == "image_folder":
        total = len(_image_folder_files(data_config, split)[0])
    elif source == "tfds":
        import tensorflow_datasets as tfds
        builder = tfds.builder(data_config.tfds_name, data_dir=data_config.data_dir or None)
        try:
            total = builder.info.splits[split].num_examples
        except KeyError as error:
            raise ValueError(
                f"TFDS dataset {data_config.tfds_name!r} has no prepared split {split!r} in "
                f"data_dir={data_config.data_dir or tfds.core.constants.DATA_DIR!r}; prepare it "
                f"first (`tfds build {data_config.tfds_name}`, or manual download for "
                "imagenet2012) or fix --config.data.split / --config.data.data_dir.") from error
    elif source == "tfrecord":
        total = sum(1 for _ in tf.data.TFRecordDataset(_tfrecord_files(data_config)))
    else:
        raise ValueError(f"unknown data.source={source!r}")
    if data_config.num_examples > 0:
        total = min(total, data_config.num_examples)
    return int(total)


def has_masks(dataset: tf.data.Dataset) -> bool:
    """Whether a source dataset carries masks."""
    return "mask" in dataset.element_spec


# ---------------------------------------------------------------------------------------------
# Readers: how one input pipeline reads its shard of a source.


@dataclasses.dataclass(frozen=True)
class _Indexed:
    """A shard addressable by index: `to_examples` maps a dataset of indices in [0, size) to
    examples (digits and synthetic: arrays in memory; image_folder: files)."""

    size: int
    to_examples: Callable[[tf.data.Dataset], tf.data.Dataset]
    in_memory: bool

    def count(self) -> int:
        return self.size


@dataclasses.dataclass(frozen=True)
class _Sequential:
    """A shard read in order: `records(order_key)` -> one epoch of checked, undecoded records (or
    decoded examples, TFDS), files in the order of the stateless key (None: the fixed order);
    `to_examples` decodes them; `count()` -> records per epoch."""

    records: Callable[[tf.Tensor | None], tf.data.Dataset]
    to_examples: Callable[[tf.data.Dataset], tf.data.Dataset]
    count: Callable[[], int]


def _reader(data_config, split, input_context, file_seed):
    builders = {
        "digits": _digits_reader,
        "synthetic": _synthetic_reader,
        "image_folder": _image_folder_reader,
        "tfds": _tfds_reader,
        "tfrecord": _tfrecord_reader,
    }
    if data_config.source not in builders:
        raise ValueError(f"data.source={data_config.source!r} is not one of {sorted(builders)}; "
                         "fix --config.data.source.")
    return builders[data_config.source](data_config, split, input_context, file_seed)


def _pipelines(input_context):
    """(number of input pipelines, this pipeline's id)."""
    if input_context is None:
        return 1, 0
    return input_context.num_input_pipelines, input_context.input_pipeline_id


def _fixed_order(reader) -> tf.data.Dataset:
    if isinstance(reader, _Indexed):
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


def _try_each(dataset, fn):
    """(element, fn(element), ok) per element, in order. `fn` runs on a one-element dataset of
    its own, so an op error in it (input that passed the cheap checks but is corrupt inside) is
    caught for that element only: ok is False and the result a placeholder of fn's structure."""
    spec = dataset.map(fn).element_spec
    placeholder = tf.nest.map_structure(
        lambda s: tf.zeros([0 if d is None else d for d in s.shape], s.dtype), spec)

    def try_one(element):
        result = tf.data.Dataset.from_tensors(element).map(
            lambda e: (e, fn(e), tf.constant(True))).ignore_errors()
        return result.concatenate(tf.data.Dataset.from_tensors(
            (element, placeholder, tf.constant(False)))).take(1)

    # One element per input, so the deterministic interleave keeps the input order.
    return dataset.interleave(try_one, cycle_length=tf.data.AUTOTUNE,
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _decode_each(keys, decode, name_of, skip, what):
    """`decode` over a dataset of keys (indices, records); a key the decoder fails on stops the
    pipeline with an error naming it (`name_of(key)`), or with on_bad_image="skip" is dropped
    with a log line naming it. (A bare map would fail from inside tf.data without naming the
    input; ignore_errors would not say which.)"""
    dataset = _try_each(keys, decode)
    reason = f"cannot decode the {what} (it passed the header checks)"
    if skip:
        dataset = dataset.filter(lambda key, example, ok: tf.cond(
            ok, lambda: ok, lambda: _print_skip(name_of(key), reason, ok)))
        return dataset.map(lambda key, example, ok: example)

    def check(key, example, ok):
        assertion = tf.debugging.Assert(ok, [f"{reason}:", name_of(key), BAD_INPUT_FIX])
        with tf.control_dependencies([assertion]):
            return tf.nest.map_structure(tf.identity, example)

    return dataset.map(check)


def _check_not_empty(reader, data_config):
    """A stream of empty epochs would never end: refuse a shard without a single valid record."""
    for _ in reader.records(None).take(1):
        return
    raise BadInputError(f"data.source={data_config.source!r} (data.data_dir="
                        f"{data_config.data_dir!r}) has no valid example for this input pipeline; "
                        "fix data.data_dir (or give fewer input pipelines than records).")


def _check_on_bad_image(data_config):
    if data_config.on_bad_image not in ("error", "skip"):
        raise ValueError(f"data.on_bad_image={data_config.on_bad_image!r} must be 'error' or "
                         "'skip'.")


# ---------------------------------------------------------------------------------------------
# In-memory sources (digits, synthetic).


def _in_memory_reader(columns, input_context):
    """Index i of this pipeline's shard = row pipeline + i * pipelines (`Dataset.shard`'s rows)."""
    pipelines, pipeline = _pipelines(input_context)
    columns = {name: values[pipeline::pipelines] for name, values in columns.items()}
    tensors = {name: tf.constant(values) for name, values in columns.items()}

    def to_examples(indices):
        return indices.map(lambda i: {name: tf.gather(t, i) for name, t in tensors.items()},
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return _Indexed(len(columns["label"]), to_examples, in_memory=True)


def _digits_arrays(split):
    from sklearn.datasets import load_digits
    digits = load_digits()
    order = np.random.RandomState(0).permutation(len(digits.target))
    num_test = int(round(len(order) * DIGITS_TEST_FRACTION))
    if split == "train":
        index = order[num_test:]
    elif split in ("test", "validation", "val"):
        index = order[:num_test]
    else:
        raise ValueError(f"digits has splits 'train' and 'test', not {split!r}.")
    index = np.sort(index)
    values = digits.images[index].astype(np.float32)  # [N, 8, 8] in 0..16
    scale = DIGITS_SIZE // 8
    values = np.kron(values, np.ones((1, scale, scale), np.float32))  # nearest upsampling
    # A light 3x3 box blur softens the 4x4 blocks into strokes; the mask uses the same values.
    padded = np.pad(values, ((0, 0), (1, 1), (1, 1)), mode="edge")
    values = sum(padded[:, i:i + DIGITS_SIZE, j:j + DIGITS_SIZE]
                 for i in range(3) for j in range(3)) / 9.0
    images = np.repeat(np.round(values * 255.0 / 16.0).astype(np.uint8)[..., None], 3, axis=-1)
    masks = ((values > DIGITS_MASK_THRESHOLD).astype(np.uint8) * 255)[..., None]
    labels = digits.target[index].astype(np.int32)
    ids = np.array([f"digits/{i:04d}" for i in index])
    return images, masks, labels, ids


def _limit(arrays, data_config):
    if data_config.num_examples > 0:
        return tuple(a[:data_config.num_examples] for a in arrays)
    return arrays


def _digits_reader(data_config, split, input_context, file_seed):
    images, masks, labels, ids = _limit(_digits_arrays(split), data_config)
    return _in_memory_reader({"image": images, "mask": masks, "label": labels, "id": ids},
                             input_context)


def _synthetic_count(data_config):
    return (data_config.num_examples if data_config.num_examples > 0
            else SYNTHETIC_DEFAULT_NUM_EXAMPLES)


def synthetic_example(index: int, size: int, split_offset: int = 0):
    """One procedural example: a disc (label 0) or square (label 1) of a random colour over a
    smooth two-colour texture. Returns (image uint8 [size, size, 3], mask uint8 [size, size, 1])
    and the label; fully determined by (index, split_offset)."""
    rng = np.random.RandomState(1_000_003 * split_offset + index)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    colours = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    freq = rng.uniform(2, 6, size=2)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    weight = 0.5 + 0.5 * np.sin(2 * np.pi * freq[0] * xx + phase[0]) * np.cos(
        2 * np.pi * freq[1] * yy + phase[1])
    background = weight[..., None] * colours[0] + (1 - weight[..., None]) * colours[1]
    background += rng.normal(0, 8, size=background.shape)
    label = int(rng.randint(2))
    radius = rng.uniform(0.18, 0.32)
    cy, cx = rng.uniform(radius, 1 - radius, size=2)
    if label == 0:
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    else:
        inside = (np.abs(yy - cy) <= radius * 0.9) & (np.abs(xx - cx) <= radius * 0.9)
    colour = rng.uniform(0, 255, size=3)
    image = np.where(inside[..., None], colour, background)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    mask = (inside.astype(np.uint8) * 255)[..., None]
    return image, mask, label


def _synthetic_reader(data_config, split, input_context, file_seed):
    size = max(int(data_config.image_size), SYNTHETIC_MIN_SIZE)
    count = _synthetic_count(data_config)
    split_offset = 0 if split == "train" else 1
    examples = [synthetic_example(i, size, split_offset) for i in range(count)]
    images = np.stack([e[0] for e in examples])
    masks = np.stack([e[1] for e in examples])
    labels = np.array([e[2] for e in examples], np.int32)
    ids = np.array([f"synthetic/{split}/{i:06d}" for i in range(count)])
    return _in_memory_reader({"image": images, "mask": masks, "label": labels, "id": ids},
                             input_context)


# ---------------------------------------------------------------------------------------------
# File checks (Python, before the graph).


def check_image_file(path: str):
    """('' or why the file is not a complete image, (height, width) or None), from the file's
    structure, without decoding it: JPEG: its end-of-image marker and every segment up to the
    scan (lengths inside the file, a quantisation table and a frame header present); PNG: every
    chunk with its CRC, IHDR first and IEND last (the whole file is read); GIF, BMP and WebP:
    their signature."""
    size = os.path.getsize(path)
    if size == 0:
        return "empty file", None
    with open(path, "rb") as f:
        head = f.read(16)
        if head.startswith(JPEG_MAGIC):
            return _check_jpeg(f, size)
        if head.startswith(PNG_MAGIC):
            f.seek(0)
            return _check_png(f.read())
    if head.startswith((b"GIF87a", b"GIF89a", b"BM")) or _is_webp(head):
        return "", None
    return "not a JPEG/PNG/GIF/BMP/WebP file", None


def _is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _check_jpeg(f, size):
    f.seek(max(0, size - 16))
    if b"\xff\xd9" not in f.read(16):
        return "truncated JPEG (no end-of-image marker)", None
    offset, kinds, height_width = 2, set(), None
    while True:
        f.seek(offset)
        segment = f.read(9)
        if len(segment) < 4 or segment[0] != 0xFF:
            return f"corrupt JPEG header (no segment marker at byte {offset})", None
        kind = segment[1]
        if kind == 0xFF:  # fill byte
            offset += 1
            continue
        if kind == 0xDA:  # start of scan: the compressed data follow
            break
        if kind == 0x01 or 0xD0 <= kind <= 0xD8:  # markers without a length
            offset += 2
            continue
        length = struct.unpack(">H", segment[2:4])[0]
        if length < 2 or offset + 2 + length > size:
            return f"corrupt JPEG header (segment at byte {offset} has length {length})", None
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):  # a frame header (SOFn)
            height_width = struct.unpack(">HH", segment[5:9])
            if min(height_width) == 0:
                return f"corrupt JPEG header (frame size {height_width})", None
            kinds.add("frame")
        kinds.add(kind)
        offset += 2 + length
    if 0xDB not in kinds:
        return "corrupt JPEG header (no quantisation table before the scan)", None
    if "frame" not in kinds:
        return "corrupt JPEG header (no frame header before the scan)", None
    return "", tuple(int(v) for v in height_width)


def _check_png(data: bytes):
    offset, kinds = len(PNG_MAGIC), []
    while offset < len(data) and (not kinds or kinds[-1] != b"IEND"):
        if offset + 12 > len(data):
            return "truncated PNG (no IEND chunk)", None
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        end = offset + 12 + length
        if end > len(data):
            return f"truncated PNG (chunk {kind!r} ends past the end of the file)", None
        if zlib.crc32(data[offset + 4:end - 4]) != struct.unpack(">I", data[end - 4:end])[0]:
            return f"corrupt PNG (chunk {kind!r} at byte {offset} fails its CRC)", None
        kinds.append(kind)
        offset = end
    if not kinds or kinds[-1] != b"IEND":
        return "truncated PNG (no IEND chunk)", None
    if kinds[0] != b"IHDR" or b"IDAT" not in kinds:
        return "corrupt PNG (no IHDR header or no image data)", None
    width, height = struct.unpack(">II", data[16:24])
    return "", (int(height), int(width))


def image_size_from_bytes(data: bytes):
    """(height, width) from a PNG or JPEG header without decoding; None if not found."""
    if data.startswith(PNG_MAGIC) and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(height), int(width)
    if data.startswith(JPEG_MAGIC):
        offset = 2
        while offset + 9 < len(data):
            if data[offset] != 0xFF:
                offset += 1
                continue
            marker = data[offset + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                offset += 1 if marker == 0xFF else 2
                continue
            length = struct.unpack(">H", data[offset + 2:offset + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[offset + 5:offset + 9])
                return int(height), int(width)
            offset += 2 + length
    return None


def _report_bad(bad, total, data_config, what):
    """bad: list of (path_or_id, reason). Raises or logs according to on_bad_image."""
    if not bad:
        return
    listing = [f"  {name}: {reason}" for name, reason in bad]
    if data_config.on_bad_image == "error":
        logging.error("%d bad %s out of %d:\n%s", len(bad), what, total, "\n".join(listing))
        more = f"\n  ... and {len(bad) - 10} more (all in the log)" if len(bad) > 10 else ""
        raise BadInputError(f"{len(bad)} bad {what} out of {total}:\n"
                            f"{chr(10).join(listing[:10])}{more}\n{BAD_INPUT_FIX}")
    logging.warning("Skipping %d bad %s out of %d (data.on_bad_image=skip):\n%s", len(bad),
                    what, total, "\n".join(listing))


# ---------------------------------------------------------------------------------------------
# ImageFolder.


def _image_folder_root(data_config, split):
    root = data_config.data_dir
    if not root or not os.path.isdir(root):
        raise ValueError(f"data.data_dir={root!r} is not a directory; fix --config.data.data_dir "
                         "(the ImageFolder root, holding <split>/<class>/ or <class>/ folders).")
    if split and os.path.isdir(os.path.join(root, split)):
        root = os.path.join(root, split)
    return root


def _image_folder_files(data_config, split):
    """Validated (paths, labels, ids, mask_paths or None), sorted, limited to num_examples."""
    root = _image_folder_root(data_config, split)
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
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
        reason, image_hw = check_image_file(path)
        mask_path = None
        if not reason and mask_dir:
            mask_path = os.path.join(mask_dir, example_id + ".png")
            reason = _check_mask_file(mask_path, example_id, image_hw)
        if reason:
            bad.append((path, reason))
        else:
            good.append((path, label, example_id, mask_path))
    _report_bad(bad, len(entries), data_config, "image files")
    if not good:
        raise BadInputError(f"no valid images left under {root}.")
    paths = [g[0] for g in good]
    labels = [g[1] for g in good]
    ids = [g[2] for g in good]
    masks = [g[3] for g in good] if mask_dir else None
    return paths, labels, ids, masks


def _check_mask_file(mask_path, example_id, image_hw):
    if not os.path.exists(mask_path):
        return (f"missing mask for id {example_id!r} (expected {mask_path}; fix data.mask_dir "
                "or generate the mask)")
    with open(mask_path, "rb") as f:
        is_png = f.read(len(PNG_MAGIC)) == PNG_MAGIC
    reason, mask_hw = check_image_file(mask_path) if is_png else ("not a PNG", None)
    if reason:
        return f"mask {mask_path}: {reason}"
    if image_hw is not None and mask_hw != image_hw:
        return f"mask size {mask_hw} != image size {image_hw} for id {example_id!r}"
    return ""


def decode_image(encoded):
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> uint8 [H, W, 3] (greyscale, CMYK, RGBA -> RGB)."""
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def decode_mask(encoded):
    """PNG bytes -> uint8 [H, W, 1] (first channel)."""
    mask = tf.io.decode_png(encoded, channels=1, dtype=tf.uint8)
    return tf.ensure_shape(mask, [None, None, 1])


def _image_folder_reader(data_config, split, input_context, file_seed):
    paths, labels, ids, mask_paths = _image_folder_files(data_config, split)
    pipelines, pipeline = _pipelines(input_context)
    columns = {"path": paths, "label": np.array(labels, np.int32), "id": ids}
    if mask_paths is not None:
        columns["mask_path"] = mask_paths
    columns = {name: tf.constant(values[pipeline::pipelines]) for name, values in columns.items()}
    skip = data_config.on_bad_image == "skip"

    def load(index):
        row = {name: tf.gather(values, index) for name, values in columns.items()}
        example = {"image": decode_image(tf.io.read_file(row["path"])), "label": row["label"],
                   "id": row["id"]}
        if "mask_path" in row:  # sizes unknown from the header (GIF, BMP, WebP) checked here
            mask = decode_mask(tf.io.read_file(row["mask_path"]))
            same_size = tf.reduce_all(tf.shape(mask)[:2] == tf.shape(example["image"])[:2])
            with tf.control_dependencies([tf.debugging.Assert(same_size, ["mask size"])]):
                example["mask"] = tf.identity(mask)
        return example

    def to_examples(indices):
        return _decode_each(indices, load, lambda index: tf.gather(columns["path"], index),
                            skip, "image file (or its mask)")

    return _Indexed(int(columns["label"].shape[0]), to_examples, in_memory=False)


# ---------------------------------------------------------------------------------------------
# TFDS.


def _tfds_reader(data_config, split, input_context, file_seed):
    import tensorflow_datasets as tfds
    if not data_config.tfds_name:
        raise ValueError("data.source='tfds' needs --config.data.tfds_name (e.g. imagenet2012).")
    if data_config.num_examples > 0:
        split = f"{split}[:{data_config.num_examples}]"
    # One file order for every epoch (fixed by the seed): TFDS takes no per-epoch tensor seed.
    read_config = tfds.ReadConfig(input_context=input_context, add_tfds_id=True,
                                  shuffle_seed=file_seed, shuffle_reshuffle_each_iteration=False)
    dataset = tfds.load(data_config.tfds_name, split=split,
                        data_dir=data_config.data_dir or None,
                        shuffle_files=file_seed is not None, read_config=read_config)
    if data_config.num_examples > 0:
        dataset = dataset.take(data_config.num_examples)  # also when a reader ignores the slice

    def to_example(features):
        image = features["image"]
        if image.shape.rank == 3 and image.shape[-1] == 1:
            image = tf.tile(image, [1, 1, 3])
        label = tf.cast(features["label"], tf.int32) if "label" in features else tf.constant(-1)
        return {"image": tf.ensure_shape(tf.cast(image, tf.uint8), [None, None, 3]),
                "label": label, "id": features["tfds_id"]}

    def count():
        pipelines, _ = _pipelines(input_context)
        if pipelines == 1:
            return num_examples(data_config, split.split("[")[0])
        return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))

    return _Sequential(
        records=lambda order_key: dataset,
        to_examples=lambda records: records.map(to_example, num_parallel_calls=tf.data.AUTOTUNE,
                                                deterministic=True),
        count=count)


# ---------------------------------------------------------------------------------------------
# TFRecord.


def _tfrecord_files(data_config):
    files = sorted(tf.io.gfile.glob(data_config.data_dir)) if data_config.data_dir else []
    if not files:
        raise ValueError(f"no TFRecord files match data.data_dir={data_config.data_dir!r}; fix "
                         "--config.data.data_dir (a file pattern such as /data/train-*.tfrecord).")
    return files


def _tfrecord_has_masks(files) -> bool:
    """The source has masks when its first example carries one (then every example must)."""
    for record in tf.data.TFRecordDataset(files[:1]).take(1):
        return bool(tfrecord_format.parse_example(record)["mask"].numpy())
    return False


def _bytes_problem(encoded):
    """In-graph, cheap part of `check_image_file`: '' or the reason the bytes are no image."""
    # Zero padding keeps every fixed-position read inside the string (substr fails past its end)
    # and cannot complete a signature or an end marker.
    padded = tf.strings.join([encoded, b"\0" * 16])
    length = tf.strings.length(encoded)
    head = tf.strings.substr(padded, 0, 12)
    tail = tf.strings.substr(padded, tf.maximum(length - 16, 0), 16)
    is_jpeg = tf.strings.substr(head, 0, 3) == JPEG_MAGIC
    is_png = tf.strings.substr(head, 0, 8) == PNG_MAGIC
    # After SOI, a JPEG goes on with a segment marker (0xC0-0xFE: APPn, DQT, SOFn, DHT, COM...).
    first_marker = tf.io.decode_raw(tf.strings.substr(head, 3, 1), tf.uint8)[0]
    is_webp = ((tf.strings.substr(head, 0, 4) == b"RIFF")
               & (tf.strings.substr(head, 8, 4) == b"WEBP"))
    other = ((tf.strings.substr(head, 0, 3) == b"GIF") | (tf.strings.substr(head, 0, 2) == b"BM")
             | is_webp)
    reason = tf.where(is_jpeg & ~_contains(tail, b"\xff\xd9"), "truncated JPEG", "")
    reason = tf.where(is_jpeg & (first_marker < 0xC0), "corrupt JPEG header", reason)
    reason = tf.where(is_png & ~_contains(tail, b"IEND"), "truncated PNG", reason)
    reason = tf.where(~is_jpeg & ~is_png & ~other, "not a JPEG/PNG/GIF/BMP/WebP image", reason)
    return tf.where(length == 0, "empty image", reason)


def _contains(data, needle: bytes):
    """Whether the 16-byte string `data` contains `needle` (byte-exact, no regex)."""
    positions = tf.range(16 - len(needle) + 1)
    windows = tf.strings.substr(tf.fill(tf.shape(positions), data), positions,
                                tf.fill(tf.shape(positions), len(needle)))
    return tf.reduce_any(windows == needle)


def _png_hw(encoded):
    """int64 [height, width] from a PNG's IHDR chunk (bytes 16-24), without decoding."""
    header = tf.strings.substr(tf.strings.join([encoded, b"\0" * 24]), 16, 8)
    values = tf.cast(tf.io.decode_raw(header, tf.uint8), tf.int64)
    width, height = [values[i] * 2**24 + values[i + 1] * 2**16 + values[i + 2] * 2**8 +
                     values[i + 3] for i in (0, 4)]
    return tf.stack([height, width])


def _header_hw(encoded):
    """int64 [height, width] of an encoded JPEG or PNG from its header; [-1, -1] otherwise."""
    is_jpeg = tf.strings.substr(encoded, 0, 3) == JPEG_MAGIC
    is_png = tf.strings.substr(encoded, 0, 8) == PNG_MAGIC
    return tf.cond(
        is_jpeg, lambda: tf.cast(tf.io.extract_jpeg_shape(encoded)[:2], tf.int64),
        lambda: tf.cond(is_png, lambda: _png_hw(encoded),
                        lambda: tf.constant([-1, -1], tf.int64)))


def _mask_size_problem(raw):
    """"mask size != image size" from the headers (JPEG, PNG images), else ''."""
    image_hw = _header_hw(raw["image"])
    mismatch = (image_hw[0] >= 0) & tf.reduce_any(image_hw != _png_hw(raw["mask"]))
    return tf.where(mismatch, "mask size != image size", "")


_RECORD_COUNTS = {}  # (files and their sizes/mtimes, sharding, checks) -> records per epoch


def _tfrecord_reader(data_config, split, input_context, file_seed):
    files = _tfrecord_files(data_config)
    with_masks = _tfrecord_has_masks(files)
    pipelines, pipeline = _pipelines(input_context)
    limit = data_config.num_examples
    # Whole files per pipeline when there are enough, else every n-th record. A limited source
    # is the first `num_examples` records in sorted file order: the same subset every epoch.
    shard_files = pipelines > 1 and len(files) >= pipelines and limit <= 0
    if shard_files:
        files = files[pipeline::pipelines]
    permute_files = limit <= 0 and len(files) > 1
    skip = data_config.on_bad_image == "skip"

    def parse(serialized):
        raw = tfrecord_format.parse_example(serialized)
        problem = _bytes_problem(raw["image"])
        if with_masks:
            mask_problem = tf.where(tf.strings.length(raw["mask"]) == 0, "missing mask",
                                    tf.where(tf.strings.substr(raw["mask"], 0, 8) == PNG_MAGIC,
                                             "", "mask is not a PNG"))
            problem = tf.where(problem == "", mask_problem, problem)
        return {**raw, "problem": problem}

    def with_size_problem(record, size_problem, ok):
        """The mask-size check from the headers (skip mode: a mismatch leaves before positions
        are counted); a JPEG header libjpeg cannot read is a problem too."""
        size_problem = tf.where(ok, size_problem, "corrupt image header (no size)")
        return {**record, "problem": tf.where(record["problem"] == "", size_problem,
                                              record["problem"])}

    def records(order_key):
        names = tf.constant(files)
        if order_key is not None and permute_files:
            names = tf.gather(names, tf.random.experimental.index_shuffle(
                tf.range(len(files), dtype=tf.int64), order_key,
                tf.constant(len(files) - 1, tf.int64)))
        dataset = tf.data.Dataset.from_tensor_slices(names).interleave(
            tf.data.TFRecordDataset, cycle_length=min(len(files), TFRECORD_CYCLE_LENGTH),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if limit > 0:
            dataset = dataset.take(limit)
        if pipelines > 1 and not shard_files:
            dataset = dataset.shard(pipelines, pipeline)
        dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if skip and with_masks:
            dataset = _try_each(dataset, _mask_size_problem).map(with_size_problem)
        if skip:
            dataset = dataset.filter(_log_and_keep)
        return dataset

    def check_problem(record):
        assertion = tf.debugging.Assert(record["problem"] == "", [
            "bad TFRecord example id:", record["id"], "reason:", record["problem"],
            BAD_INPUT_FIX.replace("file(s)", "example(s)")], summarize=3)
        with tf.control_dependencies([assertion]):  # a clear message before any decoding
            return tf.nest.map_structure(tf.identity, record)

    def decode(record):
        example = {"image": decode_image(record["image"]),
                   "label": tf.cast(record["label"], tf.int32), "id": record["id"]}
        if with_masks:
            example["mask"] = decode_mask(record["mask"])
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
        examples = _decode_each(records, decode, lambda record: record["id"], skip,
                                "TFRecord example")
        if with_masks and skip:  # sizes the headers did not give (GIF, BMP images)
            return examples.filter(lambda example: tf.cond(
                same_size(example), lambda: tf.constant(True),
                lambda: _print_skip(example["id"], "mask size != image size",
                                    tf.constant(False))))
        if with_masks:
            return examples.map(check_mask_size)
        return examples

    def count():
        stats = tuple((f, tf.io.gfile.stat(f).length, tf.io.gfile.stat(f).mtime_nsec)
                      for f in files)
        key = (stats, pipelines, pipeline, limit, skip)
        if key not in _RECORD_COUNTS:
            _RECORD_COUNTS[key] = int(records(None).reduce(np.int64(0), lambda n, _: n + 1))
        return _RECORD_COUNTS[key]

    return _Sequential(records, to_examples, count)


def _log_and_keep(record):
    keep = record["problem"] == ""
    return tf.cond(keep, lambda: keep, lambda: _print_skip(record["id"], record["problem"], keep))


def _print_skip(example_id, reason, value):
    # To stderr, not TF's C++ warning log, which TF_CPP_MIN_LOG_LEVEL=2 hides.
    with tf.control_dependencies([tf.print(
            "relicv2_tf.data: skipping bad example (data.on_bad_image=skip) id:", example_id,
            "reason:", reason, output_stream=sys.stderr)]):
        return tf.identity(value)
