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

Bad input (corrupt/truncated files, unknown formats, missing masks, mask size != image size) is
found at the boundary: files are checked in Python before the graph is built, TFRecord examples
by cheap string/shape checks in the graph. `on_bad_image="error"` stops with a message naming the
file/id and the fix; "skip" drops them and logs how many. Greyscale, CMYK, RGBA and 16-bit images
are valid: they are decoded to 8-bit RGB.
"""

from __future__ import annotations

import os
import struct

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

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"
BAD_INPUT_FIX = ("fix: remove or re-encode the file(s), or set --config.data.on_bad_image=skip "
                 "to skip them (skips are counted and logged)")


class BadInputError(ValueError):
    """Raised at the boundary for unreadable images or masks when on_bad_image == "error"."""


# ---------------------------------------------------------------------------------------------
# Public API.


def make_source(data_config, split=None, *, input_context=None, seed: int = 0,
                shuffle_files: bool = True) -> tf.data.Dataset:
    """The examples of `data_config.source` (see the module docstring)."""
    split = split or data_config.split
    _check_on_bad_image(data_config)
    builders = {
        "digits": _digits_source,
        "synthetic": _synthetic_source,
        "image_folder": _image_folder_source,
        "tfds": _tfds_source,
        "tfrecord": _tfrecord_source,
    }
    if data_config.source not in builders:
        raise ValueError(f"data.source={data_config.source!r} is not one of {sorted(builders)}; "
                         "fix --config.data.source.")
    return builders[data_config.source](data_config, split, input_context, seed, shuffle_files)


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
# In-memory sources (digits, synthetic).


def _check_on_bad_image(data_config):
    if data_config.on_bad_image not in ("error", "skip"):
        raise ValueError(f"data.on_bad_image={data_config.on_bad_image!r} must be 'error' or "
                         "'skip'.")


def _shard_and_shuffle(dataset, size, input_context, seed, shuffle_files):
    if input_context is not None and input_context.num_input_pipelines > 1:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if shuffle_files:
        dataset = dataset.shuffle(max(size, 1), seed=seed, reshuffle_each_iteration=True)
    return dataset


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


def _digits_source(data_config, split, input_context, seed, shuffle_files):
    images, masks, labels, ids = _limit(_digits_arrays(split), data_config)
    dataset = tf.data.Dataset.from_tensor_slices(
        {"image": images, "mask": masks, "label": labels, "id": ids})
    return _shard_and_shuffle(dataset, len(labels), input_context, seed, shuffle_files)


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


def _synthetic_source(data_config, split, input_context, seed, shuffle_files):
    size = max(int(data_config.image_size), SYNTHETIC_MIN_SIZE)
    count = _synthetic_count(data_config)
    split_offset = 0 if split == "train" else 1
    examples = [synthetic_example(i, size, split_offset) for i in range(count)]
    images = np.stack([e[0] for e in examples])
    masks = np.stack([e[1] for e in examples])
    labels = np.array([e[2] for e in examples], np.int32)
    ids = np.array([f"synthetic/{split}/{i:06d}" for i in range(count)])
    dataset = tf.data.Dataset.from_tensor_slices(
        {"image": images, "mask": masks, "label": labels, "id": ids})
    return _shard_and_shuffle(dataset, count, input_context, seed, shuffle_files)


# ---------------------------------------------------------------------------------------------
# File checks (Python, before the graph).


def check_image_bytes(head: bytes, tail: bytes, size: int) -> str:
    """'' when the file looks like a complete image, else the reason it does not.

    `head` = the first 16 bytes, `tail` = the last 16, `size` = the file size.
    """
    if size == 0:
        return "empty file"
    if head.startswith(JPEG_MAGIC):
        # A JPEG ends with the EOI marker; a truncated file does not.
        return "" if b"\xff\xd9" in tail else "truncated JPEG (no end-of-image marker)"
    if head.startswith(PNG_MAGIC):
        return "" if PNG_END in tail else "truncated PNG (no IEND chunk)"
    if head.startswith((b"GIF87a", b"GIF89a", b"BM")):
        return ""
    return "not a JPEG/PNG/GIF/BMP file"


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


def _read_head_tail(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
        f.seek(max(0, size - 16))
        tail = f.read(16)
    return head, tail, size


def _report_bad(bad, total, data_config, what):
    """bad: list of (path_or_id, reason). Raises or logs according to on_bad_image."""
    if not bad:
        return
    listing = "\n".join(f"  {name}: {reason}" for name, reason in bad[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    if data_config.on_bad_image == "error":
        raise BadInputError(f"{len(bad)} bad {what} out of {total}:\n{listing}{more}\n"
                            f"{BAD_INPUT_FIX}")
    logging.warning("Skipping %d bad %s out of %d (data.on_bad_image=skip):\n%s%s", len(bad),
                    what, total, listing, more)


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
        head, tail, size = _read_head_tail(path)
        reason = check_image_bytes(head, tail, size)
        mask_path = None
        if not reason and mask_dir:
            mask_path = os.path.join(mask_dir, example_id + ".png")
            reason = _check_mask_file(path, mask_path, example_id)
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


def _check_mask_file(image_path, mask_path, example_id):
    if not os.path.exists(mask_path):
        return (f"missing mask for id {example_id!r} (expected {mask_path}; fix data.mask_dir "
                "or generate the mask)")
    with open(mask_path, "rb") as f:
        mask_bytes = f.read()
    if not mask_bytes.startswith(PNG_MAGIC) or PNG_END not in mask_bytes[-16:]:
        return f"mask {mask_path} is not a complete PNG"
    with open(image_path, "rb") as f:
        image_bytes = f.read()
    image_hw, mask_hw = image_size_from_bytes(image_bytes), image_size_from_bytes(mask_bytes)
    if image_hw is not None and mask_hw != image_hw:
        return f"mask size {mask_hw} != image size {image_hw} for id {example_id!r}"
    return ""


def decode_image(encoded):
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 [H, W, 3] (greyscale, CMYK, RGBA -> RGB)."""
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def decode_mask(encoded):
    """PNG bytes -> uint8 [H, W, 1] (first channel)."""
    mask = tf.io.decode_png(encoded, channels=1, dtype=tf.uint8)
    return tf.ensure_shape(mask, [None, None, 1])


def _image_folder_source(data_config, split, input_context, seed, shuffle_files):
    paths, labels, ids, mask_paths = _image_folder_files(data_config, split)
    columns = {"path": paths, "label": np.array(labels, np.int32), "id": ids}
    if mask_paths is not None:
        columns["mask_path"] = mask_paths
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    dataset = _shard_and_shuffle(dataset, len(paths), input_context, seed, shuffle_files)

    def load(row):
        example = {"image": decode_image(tf.io.read_file(row["path"])), "label": row["label"],
                   "id": row["id"]}
        if "mask_path" in row:
            example["mask"] = decode_mask(tf.io.read_file(row["mask_path"]))
        return example

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if data_config.on_bad_image == "skip":
        # Files passed the header checks; anything the decoder still rejects is dropped (TF logs
        # a warning per dropped element).
        dataset = dataset.ignore_errors(log_warning=True)
    return dataset


# ---------------------------------------------------------------------------------------------
# TFDS.


def _tfds_source(data_config, split, input_context, seed, shuffle_files):
    import tensorflow_datasets as tfds
    if not data_config.tfds_name:
        raise ValueError("data.source='tfds' needs --config.data.tfds_name (e.g. imagenet2012).")
    if data_config.num_examples > 0:
        split = f"{split}[:{data_config.num_examples}]"
    read_config = tfds.ReadConfig(input_context=input_context, shuffle_seed=seed,
                                  add_tfds_id=True)
    dataset = tfds.load(data_config.tfds_name, split=split,
                        data_dir=data_config.data_dir or None, shuffle_files=shuffle_files,
                        read_config=read_config)

    def to_example(features):
        image = features["image"]
        if image.shape.rank == 3 and image.shape[-1] == 1:
            image = tf.tile(image, [1, 1, 3])
        label = tf.cast(features["label"], tf.int32) if "label" in features else tf.constant(-1)
        return {"image": tf.ensure_shape(tf.cast(image, tf.uint8), [None, None, 3]),
                "label": label, "id": features["tfds_id"]}

    if data_config.num_examples > 0:
        dataset = dataset.take(data_config.num_examples)  # also when a reader ignores the slice
    return dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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
    """In-graph version of `check_image_bytes`: '' or the reason the bytes are not an image."""
    head = tf.strings.substr(encoded, 0, 8)
    tail = tf.strings.substr(encoded, tf.maximum(tf.strings.length(encoded) - 16, 0), 16)
    is_jpeg = tf.strings.substr(head, 0, 3) == JPEG_MAGIC
    is_png = head == PNG_MAGIC
    jpeg_ok = _contains(tail, b"\xff\xd9")
    png_ok = _contains(tail, b"IEND")
    other = (tf.strings.substr(head, 0, 3) == b"GIF") | (tf.strings.substr(head, 0, 2) == b"BM")
    reason = tf.where(is_jpeg & ~jpeg_ok, "truncated JPEG", "")
    reason = tf.where(is_png & ~png_ok, "truncated PNG", reason)
    reason = tf.where(~is_jpeg & ~is_png & ~other, "not a JPEG/PNG/GIF/BMP image", reason)
    reason = tf.where(tf.strings.length(encoded) == 0, "empty image", reason)
    return reason


def _contains(data, needle: bytes):
    """Whether the (short) byte string `data` contains `needle` (byte-exact, no regex)."""
    positions = tf.range(16)
    windows = tf.strings.substr(tf.fill([16], data), positions, tf.fill([16], len(needle)))
    return tf.reduce_any(windows == needle)


def _tfrecord_source(data_config, split, input_context, seed, shuffle_files):
    files = _tfrecord_files(data_config)
    with_masks = _tfrecord_has_masks(files)
    files_ds = tf.data.Dataset.from_tensor_slices(files)
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    shard_files = pipelines > 1 and len(files) >= pipelines and data_config.num_examples <= 0
    if shard_files:
        files_ds = files_ds.shard(pipelines, input_context.input_pipeline_id)
    if shuffle_files:
        files_ds = files_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = files_ds.interleave(tf.data.TFRecordDataset, cycle_length=tf.data.AUTOTUNE,
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if data_config.num_examples > 0:
        dataset = dataset.take(data_config.num_examples)
    if pipelines > 1 and not shard_files:
        dataset = dataset.shard(pipelines, input_context.input_pipeline_id)
    skip = data_config.on_bad_image == "skip"

    def parse(serialized):
        raw = tfrecord_format.parse_example(serialized)
        problem = _bytes_problem(raw["image"])
        if with_masks:
            mask_problem = tf.where(tf.strings.length(raw["mask"]) == 0, "missing mask",
                                    tf.where(tf.strings.substr(raw["mask"], 0, 8) == PNG_MAGIC,
                                             "", "mask is not a PNG"))
            problem = tf.where(problem == "", mask_problem, problem)
        return raw, problem

    def decode(raw, problem):
        checks = []
        if not skip:
            checks.append(tf.debugging.Assert(problem == "", [
                "bad TFRecord example id:", raw["id"], "reason:", problem,
                BAD_INPUT_FIX.replace("file(s)", "example(s)")], summarize=3))
        with tf.control_dependencies(checks):  # check before decoding: a clear message first
            example = {"image": decode_image(raw["image"]),
                       "label": tf.cast(raw["label"], tf.int32), "id": raw["id"]}
            mask = decode_mask(raw["mask"]) if with_masks else None
        valid = tf.constant(True)
        if with_masks:
            valid = tf.reduce_all(tf.shape(mask)[:2] == tf.shape(example["image"])[:2])
            if not skip:
                check = tf.debugging.Assert(valid, [
                    "mask size", tf.shape(mask)[:2], "!= image size",
                    tf.shape(example["image"])[:2], "for id:", raw["id"],
                    "fix: regenerate the mask at the image's size, or "
                    "set --config.data.on_bad_image=skip"], summarize=3)
                with tf.control_dependencies([check]):
                    mask = tf.identity(mask)
            example["mask"] = mask
        return example, valid

    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if skip:
        dataset = dataset.filter(_log_and_keep)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if skip:
        dataset = dataset.filter(_log_mask_size_and_keep)
        dataset = dataset.ignore_errors(log_warning=True)
    return dataset.map(lambda example, valid: example)


def _log_and_keep(raw, problem):
    keep = problem == ""
    return tf.cond(keep, lambda: keep, lambda: _print_skip(raw["id"], problem, keep))


def _log_mask_size_and_keep(example, valid):
    return tf.cond(valid, lambda: valid,
                   lambda: _print_skip(example["id"], "mask size != image size", valid))


def _print_skip(example_id, reason, value):
    with tf.control_dependencies([tf.print(
            "relicv2_tf.data: skipping bad example (data.on_bad_image=skip) id:", example_id,
            "reason:", reason, output_stream=tf.compat.v1.logging.warning)]):
        return tf.identity(value)
