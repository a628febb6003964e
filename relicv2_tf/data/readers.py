"""What every reader shares, and the in-memory readers of the demo sources (digits, synthetic).

A reader turns (data_config, split, input_context, file_seed) into this input pipeline's shard of
a source, `Indexed` (addressable by index) or `Sequential` (read in order); `sources` puts the
shard in training order. Examples are `{image: uint8 [H, W, 3], mask: uint8 [H, W, 1] (if any),
label: int32, id: string}`.

Bad input (`data.on_bad_image`): what the checks (`image_checks`) reject is reported by
`report_bad` (files, in Python: "error" raises `BadInputError` naming every bad file, "skip" logs
them) or by `print_skip` (records, in the graph); what only the decoder rejects, by `decode_each`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import tensorflow as tf
from absl import logging

from relicv2_tf.data import demo_data

BAD_INPUT_FIX = ("fix: remove or re-encode the file(s), or set --config.data.on_bad_image=skip "
                 "to skip them (skips are counted and logged)")


class BadInputError(ValueError):
    """Raised at the boundary for unreadable images or masks when on_bad_image == "error"."""


@dataclasses.dataclass(frozen=True)
class Indexed:
    """A shard addressable by index: `to_examples` maps a dataset of indices in [0, size) to
    examples (digits and synthetic: arrays in memory; image_folder: files)."""

    size: int
    to_examples: Callable[[tf.data.Dataset], tf.data.Dataset]
    in_memory: bool

    def count(self) -> int:
        return self.size


@dataclasses.dataclass(frozen=True)
class Sequential:
    """A shard read in order: `records(order_key)` -> one epoch of checked, undecoded records (or
    decoded examples, TFDS), files in the order of the stateless key (None: the fixed order);
    `to_examples` decodes them; `count()` -> records per epoch."""

    records: Callable[[tf.Tensor | None], tf.data.Dataset]
    to_examples: Callable[[tf.data.Dataset], tf.data.Dataset]
    count: Callable[[], int]


def pipelines(input_context):
    """(number of input pipelines, this pipeline's id)."""
    if input_context is None:
        return 1, 0
    return input_context.num_input_pipelines, input_context.input_pipeline_id


def decode_image(encoded):
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> uint8 [H, W, 3] (greyscale, CMYK, RGBA -> RGB)."""
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def decode_mask(encoded):
    """PNG bytes -> uint8 [H, W, 1] (first channel)."""
    mask = tf.io.decode_png(encoded, channels=1, dtype=tf.uint8)
    return tf.ensure_shape(mask, [None, None, 1])


# ---------------------------------------------------------------------------------------------
# In memory: digits and synthetic (`demo_data`).


def in_memory(arrays, input_context):
    """(images, masks, labels, ids) arrays -> this pipeline's shard. Index i of the shard = row
    pipeline + i * pipelines (`Dataset.shard`'s rows)."""
    num_pipelines, pipeline = pipelines(input_context)
    columns = dict(zip(("image", "mask", "label", "id"), arrays))
    tensors = {name: tf.constant(values[pipeline::num_pipelines])
               for name, values in columns.items()}

    def to_examples(indices):
        return indices.map(lambda i: {name: tf.gather(t, i) for name, t in tensors.items()},
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return Indexed(int(tensors["label"].shape[0]), to_examples, in_memory=True)


def digits_reader(data_config, split, input_context, file_seed):
    arrays = demo_data.digits_arrays(split)
    if data_config.num_examples > 0:
        arrays = tuple(a[:data_config.num_examples] for a in arrays)
    return in_memory(arrays, input_context)


def digits_count(data_config, split) -> int:
    return len(demo_data.digits_arrays(split)[0])


def synthetic_reader(data_config, split, input_context, file_seed):
    return in_memory(demo_data.synthetic_arrays(synthetic_count(data_config, split),
                                                data_config.image_size, split), input_context)


def synthetic_count(data_config, split) -> int:
    return demo_data.synthetic_count(data_config.num_examples)


# ---------------------------------------------------------------------------------------------
# Bad input.


def report_bad(bad, total, data_config, what):
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


def try_each(dataset, fn):
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


def decode_each(keys, decode, name_of, skip, what):
    """`decode` over a dataset of keys (indices, records); a key the decoder fails on stops the
    pipeline with an error naming it (`name_of(key)`), or with on_bad_image="skip" is dropped
    with a log line naming it. (A bare map would fail from inside tf.data without naming the
    input; ignore_errors would not say which.)"""
    dataset = try_each(keys, decode)
    reason = f"cannot decode the {what} (it passed the header checks)"
    if skip:
        dataset = dataset.filter(lambda key, example, ok: tf.cond(
            ok, lambda: ok, lambda: print_skip(name_of(key), reason, ok)))
        return dataset.map(lambda key, example, ok: example)

    def check(key, example, ok):
        assertion = tf.debugging.Assert(ok, [f"{reason}:", name_of(key), BAD_INPUT_FIX])
        with tf.control_dependencies([assertion]):
            return tf.nest.map_structure(tf.identity, example)

    return dataset.map(check)


def print_skip(example_id, reason, value):
    """`value`, after a stderr line naming the skipped example and why."""
    # To stderr, not TF's C++ warning log, which TF_CPP_MIN_LOG_LEVEL=2 hides.
    with tf.control_dependencies([tf.print(
            "relicv2_tf.data: skipping bad example (data.on_bad_image=skip) id:", example_id,
            "reason:", reason, output_stream=sys.stderr)]):
        return tf.identity(value)
