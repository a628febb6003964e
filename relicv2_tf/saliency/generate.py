"""Dataset-scale mask generation: a mask source (the trained saliency network, or the fused
handcrafted priors) over an ImageFolder -> TFRecords.

Each example is written with `data.tfrecord_format.encode_example`: `image` = the original
encoded file bytes (never re-encoded), `mask` = PNG uint8 [H, W] at the image's own size,
`label` = index of the class folder (sorted names; -1 when the root has no class folders),
`id` = the path relative to the root with "/" separators (e.g. "n01440764/n01440764_10026.JPEG"),
which is how the data pipeline joins masks to images.

Sharding: the sorted file list is split into `num_shards` shards, shard i holding examples
i::num_shards (so every shard mixes classes). Worker w of N writes shards w::N, so N workers
(processes or machines) write disjoint files. Each shard is written to a temporary name and
renamed when complete, so a finished shard is never partial, and a rerun skips shards that
already exist: kill a worker at any moment and start it again. `saliency/beam_generate.py` runs
the same functions as an Apache Beam pipeline (one shard per element). Paths may be local or
URLs that tf.io.gfile reads and writes (gs://...).
"""

from __future__ import annotations

import io
import os
import time

import numpy as np
import tqdm
from PIL import Image

from relicv2_tf import atomic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _folder_functions(root: str):
    """(isdir, isfile, listdir) for `root`: the os module for a local path (no TensorFlow: the
    priors stage lists images without it), tf.io.gfile for a URL such as gs://bucket/train
    (what the workers of a Beam run on a cluster read)."""
    if "://" not in root:
        return os.path.isdir, os.path.isfile, os.listdir
    import tensorflow as tf

    def isfile(path):
        return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)

    def listdir(path):
        return [name.rstrip("/") for name in tf.io.gfile.listdir(path)]
    return tf.io.gfile.isdir, isfile, listdir


def _visible(names) -> list:
    """Sorted names without the hidden ones, as glob's "*" lists them."""
    return sorted(n for n in names if not n.startswith("."))


def list_image_folder(root: str) -> list:
    """[(path, label, id)] sorted; class folders give labels, images directly in root get -1.
    `root` is a local folder or a URL tf.io.gfile reads (gs://...)."""
    isdir, isfile, listdir = _folder_functions(root)
    if not isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist (expected an ImageFolder "
                                "root such as ../shared/data/imagenette/train).")
    names = listdir(root)
    classes = sorted(n for n in names if isdir(os.path.join(root, n)))
    entries = []
    for label, name in enumerate(classes):
        for file_name in _visible(listdir(os.path.join(root, name))):
            if file_name.lower().endswith(IMAGE_EXTENSIONS):
                entries.append((os.path.join(root, name, file_name), label,
                                f"{name}/{file_name}"))
    for file_name in _visible(names):
        path = os.path.join(root, file_name)
        if file_name.lower().endswith(IMAGE_EXTENSIONS) and isfile(path):
            entries.append((path, -1, file_name))
    if not entries:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root!r}.")
    return entries


def decode_rgb(data: bytes, name: str = "image") -> np.ndarray:
    """Encoded bytes -> uint8 RGB [H, W, 3] (greyscale, palette, CMYK and RGBA converted;
    16-bit greyscale scaled to 8 bits, as TensorFlow's decoder does: PIL's convert would clip)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = np.asarray(image, np.uint32) >> 8  # 0-65535 -> 0-255
                return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
            return np.asarray(image.convert("RGB"))
    except Exception as error:  # PIL raises several types for corrupt files
        raise ValueError(f"cannot decode {name}: {error}") from error


def resize_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """Square resize (whole image, no crop: the mask must cover every pixel), bilinear."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def resize_map(saliency: np.ndarray, height: int, width: int) -> np.ndarray:
    resized = Image.fromarray(np.asarray(saliency, np.float32), mode="F").resize(
        (width, height), Image.BILINEAR)
    return np.clip(np.asarray(resized), 0.0, 1.0)


def load_resized(path: str, size: int) -> np.ndarray:
    with open(path, "rb") as f:
        return resize_uint8(decode_rgb(f.read(), path), size)


# ------------------------------------------------------------------------------ sharding
def shard_path(output_dir: str, prefix: str, index: int, num_shards: int) -> str:
    return os.path.join(output_dir, f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord")


def shard_indices(num_examples: int, num_shards: int, index: int) -> np.ndarray:
    return np.arange(index, num_examples, num_shards)


def worker_shards(num_shards: int, num_workers: int, worker_index: int) -> list:
    if not 0 <= worker_index < num_workers:
        raise ValueError(f"worker_index must be in [0, num_workers={num_workers}), got "
                         f"{worker_index}.")
    return list(range(worker_index, num_shards, num_workers))


def pending_shards(entries: list, output_dir: str, prefix: str, num_shards: int,
                   shards) -> dict:
    """{shard index: its entries} for the shards of `shards` not yet under `output_dir` (a rerun
    skips finished shards); removes the temporary files a killed run left for them."""
    import tensorflow as tf

    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
    tf.io.gfile.makedirs(output_dir)
    todo = {}
    for shard in shards:
        path = shard_path(output_dir, prefix, shard, num_shards)
        if tf.io.gfile.exists(path):
            continue
        for stale in tf.io.gfile.glob(path + ".tmp-*"):  # left by a killed run
            tf.io.gfile.remove(stale)
        todo[shard] = [entries[i] for i in shard_indices(len(entries), num_shards, shard)]
    return todo


def batches(entries: list, batch_size: int) -> list:
    """Consecutive slices of `batch_size` entries: the batches the mask source sees."""
    return [entries[start:start + batch_size] for start in range(0, len(entries), batch_size)]


def encode_batch(batch: list, predict_fn, image_size: int) -> list:
    """Serialized examples (`tfrecord_format.encode_example`) of `batch` [(path, label, id)]:
    the file's bytes, the mask as a PNG at the image's own size, the label and the id.

    `predict_fn(uint8 [B, S, S, 3]) -> float [B, S, S]` in [0, 1], S = `image_size`."""
    import tensorflow as tf

    from relicv2_tf.data import tfrecord_format

    raw, decoded = [], []
    for file_path, _, _ in batch:
        with tf.io.gfile.GFile(file_path, "rb") as f:
            raw.append(f.read())
        decoded.append(decode_rgb(raw[-1], file_path))
    maps = predict_fn(np.stack([resize_uint8(im, image_size) for im in decoded]))
    return [tfrecord_format.encode_example(
        data, example_id, label,
        tfrecord_format.encode_mask_png(resize_map(saliency, *image.shape[:2])))
        for (_, label, example_id), data, image, saliency in zip(batch, raw, decoded, maps)]


def write_records(path: str, record_batches, progress_bar=None) -> int:
    """Writes each list of serialized records of `record_batches` to `path` under a temporary
    name, renamed when complete (a finished shard is never partial); returns the count."""
    import tensorflow as tf

    tmp = f"{path}.tmp-{os.getpid()}"
    count = 0
    with tf.io.TFRecordWriter(tmp) as writer:
        for records in record_batches:
            for record in records:
                writer.write(record)
            count += len(records)
            if progress_bar is not None:
                progress_bar.update(len(records))
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return count


def write_shard(entries: list, predict_fn, path: str, image_size: int, batch_size: int,
                progress_bar=None) -> int:
    """Masks for `entries` [(path, label, id)], batch by batch, written to `path` atomically;
    returns the count. `predict_fn` as in `encode_batch`."""
    return write_records(path, (encode_batch(batch, predict_fn, image_size)
                                for batch in batches(entries, batch_size)), progress_bar)


def evenly_spaced(entries: list, num_examples: int) -> list:
    """`num_examples` entries spread over the sorted list (so every class appears); all when
    `num_examples` <= 0 or >= len(entries). For quick end-to-end runs."""
    if num_examples <= 0 or num_examples >= len(entries):
        return list(entries)
    return [entries[i] for i in np.linspace(0, len(entries) - 1, num_examples).round().astype(int)]


def generate_masks(root: str, output_dir: str, predict_fn, image_size: int, *,
                   num_shards: int, num_workers: int = 1, worker_index: int = 0,
                   batch_size: int = 64, prefix: str = "masks", num_examples: int = 0,
                   progress: bool = True) -> dict:
    """Writes this worker's shards of `root` (or of `num_examples` evenly spaced images of it)
    under `output_dir`; skips finished shards."""
    entries = evenly_spaced(list_image_folder(root), num_examples)
    shards = worker_shards(num_shards, num_workers, worker_index)
    todo = pending_shards(entries, output_dir, prefix, num_shards, shards)
    start = time.time()
    written = 0
    with tqdm.tqdm(total=sum(map(len, todo.values())), unit="img", disable=not progress,
                   desc=f"masks {prefix} (worker {worker_index})") as bar:
        for shard, shard_entries in todo.items():
            path = shard_path(output_dir, prefix, shard, num_shards)
            written += write_shard(shard_entries, predict_fn, path, image_size, batch_size, bar)
    return {"root": root, "num_examples": len(entries), "num_shards": num_shards,
            "shards_of_worker": len(shards), "shards_skipped": len(shards) - len(todo),
            "examples_written": written, "seconds": round(time.time() - start, 2)}


def export_mask_folder(shard_pattern: str, mask_root: str) -> int:
    """Writes the masks of TFRecord shards as `<mask_root>/<id without extension>.png` (e.g.
    `n01440764/n01440764_10026.png`), the layout `data.mask_dir` reads next to an ImageFolder.
    The PNG bytes are copied, not re-encoded; each file is written to a temporary name and
    renamed; files already there are kept (a rerun finishes an interrupted export). Returns the
    number of masks in the shards."""
    import tensorflow as tf

    from relicv2_tf.data import tfrecord_format

    files = sorted(tf.io.gfile.glob(shard_pattern))
    if not files:
        raise ValueError(f"no mask shards match {shard_pattern!r} (written by relicv2-saliency "
                         "--stage=generate).")
    count = 0
    for record in tf.data.TFRecordDataset(files):
        example = tfrecord_format.parse_example(record)
        example_id = example["id"].numpy().decode("utf-8")
        path = os.path.join(mask_root, os.path.splitext(example_id)[0] + ".png")
        count += 1
        if os.path.exists(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic.write_bytes(path, example["mask"].numpy())
    return count


# ------------------------------------------------------------------------------ figure
def save_figure(path: str, images, prior_maps: dict, network_maps, max_samples: int = 4,
                last_title: str = "network") -> str:
    """Rows: samples; columns: image, each prior, the generated mask (`last_title`: the
    network's or the fused priors'). Small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(prior_maps)
    rows = min(max_samples, len(images))
    cols = 2 + len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    titles = ["image"] + [n.upper() for n in names] + [last_title]
    for r in range(rows):
        panels = [images[r]] + [prior_maps[n][r] for n in names] + [network_maps[r]]
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel, cmap=None if c == 0 else "gray", vmin=0,
                      vmax=None if c == 0 else (255 if np.asarray(panel).dtype == np.uint8
                                                else 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
    fig.tight_layout(pad=0.2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path
