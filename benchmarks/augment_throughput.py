"""Throughput of the pretraining input pipeline: source images/s producing 4x224 + 2x96 views.

Runs, in the same process and on the same Imagenette JPEGs, (a) `relicv2_tf.data.views` and
(b) the same augmentations written with Keras preprocessing layers (as close as Keras allows:
RandomZoom+Resizing for the random resized crop, RandomFlip, RandomColorJitter (fixed order, no
p=0.8), RandomGrayscale, RandomGaussianBlur, Solarization applied to every odd view), and prints
one JSON object. "Per core" = images / CPU-seconds used by this process (user + system, all
threads), which does not depend on how busy the shared machine is; wall-clock rates are also given.

    python benchmarks/augment_throughput.py [--num_images 640] [--warmup_batches 4]
        [--data_dir DIR] [--skip_keras] [--per_op] [--mask_apply_prob P]

--mask_apply_prob > 0 times ReLICv2's saliency masking too (relicv2_tf only): each train image
gets a centred-ellipse mask (a temporary mask folder; the cost does not depend on the shape).

The first `--warmup_batches` batches of each pipeline are not timed: they include graph
construction, tf.data's autotuning ramp-up (it tries parallelism levels while it learns the
cost of the map) and the first read of the files; the JSON gives their time separately.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from relicv2_tf import config as config_lib  # noqa: E402
from relicv2_tf.data import augment, augment_tables, blur, normalize, sources, views  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from experiments.configs import common  # noqa: E402  (no TensorFlow)

DEFAULT_DATA = pathlib.Path(common.data_path("imagenette"))


def data_config(data_dir, num_images, mask_apply_prob=0.0, mask_dir=""):
    config = config_lib.get_default_config().data
    config.source = "image_folder"
    config.data_dir = str(data_dir)
    config.split = "train"
    config.num_examples = num_images
    config.shuffle_buffer = 256
    config.image_size, config.small_image_size = 224, 96
    config.num_large_views, config.num_small_views = 4, 2
    config.mask_apply_prob = mask_apply_prob  # needs mask_dir (the pipeline refuses it without)
    config.mask_dir = mask_dir
    return config


def write_ellipse_masks(data_dir, mask_dir):
    """<mask_dir>/<class>/<stem>.png for every train image: a centred ellipse (half the sides)."""
    from PIL import Image

    for path in pathlib.Path(data_dir, "train").glob("*/*"):
        with Image.open(path) as image:
            width, height = image.size
        rows, cols = np.ogrid[:height, :width]
        inside = ((rows - height / 2) / (height / 4)) ** 2 + ((cols - width / 2) / (width / 4)) ** 2
        out = pathlib.Path(mask_dir, path.parent.name, path.stem + ".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.where(inside <= 1, 255, 0).astype(np.uint8)).save(out)


def relicv2_pipeline(config, batch_size):
    return views.pretrain_dataset(config, batch_size=batch_size, seed=0, repeat=False)


def keras_view_model(size, params, seed):
    """Keras preprocessing layers closest to one view of Table 16."""
    # Zoom-in by z on both sides keeps a (1 - z)^2 fraction of the area: map the area range.
    max_zoom = 1.0 - math.sqrt(params.crop_area_range[0])
    min_zoom = 1.0 - math.sqrt(params.crop_area_range[1])
    layers = [
        keras.layers.RandomZoom(height_factor=(-max_zoom, -min_zoom),
                                width_factor=(-max_zoom, -min_zoom), fill_mode="reflect",
                                seed=seed),
        keras.layers.Resizing(size, size, interpolation="bicubic"),
        keras.layers.RandomFlip("horizontal", seed=seed + 1),
        keras.layers.RandomColorJitter(value_range=(0, 1), brightness_factor=params.brightness,
                                       contrast_factor=params.contrast,
                                       saturation_factor=params.saturation,
                                       hue_factor=params.hue, seed=seed + 2),
        keras.layers.RandomGrayscale(factor=params.grayscale_prob, seed=seed + 3),
        keras.layers.RandomGaussianBlur(factor=params.blur_prob,
                                        kernel_size=2 * blur.blur_kernel_radius(size) + 1,
                                        sigma=params.blur_sigma_range, value_range=(0, 1),
                                        seed=seed + 4),
    ]
    if params.solarize_prob > 0:
        layers.append(keras.layers.Solarization(threshold_factor=(params.solarize_threshold,
                                                                  params.solarize_threshold),
                                                value_range=(0, 1), seed=seed + 5))
    return keras.Sequential(layers)


def keras_pipeline(config, batch_size):
    source = sources.make_source(config, seed=0)
    large = [keras_view_model(224, augment_tables.view_augmentation(i, "large"), 10 * i)
             for i in range(4)]
    small = [keras_view_model(96, augment_tables.view_augmentation(j, "small"), 100 + 10 * j)
             for j in range(2)]

    def make(batch):
        images = tf.cast(batch["image"], tf.float32) / 255.0
        out = {"large": tf.stack([normalize.normalize_images(m(images, training=True))
                                  for m in large], axis=1),
               "small": tf.stack([normalize.normalize_images(m(images, training=True))
                                  for m in small], axis=1),
               "label": batch["label"], "id": batch["id"]}
        return out

    dataset = source.map(lambda e: {"image": tf.image.resize(e["image"], [224, 224]),
                                    "label": e["label"], "id": e["id"]},
                         num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(make, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def measure(dataset, batch_size, warmup_batches):
    """Iterates once; the first `warmup_batches` batches (tracing, autotune ramp-up, first file
    reads) are timed separately from the rest."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        first = next(iterator)
    assert first["large"].shape[1:] == (4, 224, 224, 3), first["large"].shape
    assert first["small"].shape[1:] == (2, 96, 96, 3), first["small"].shape
    warm_wall, warm_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    count = 0
    for _ in iterator:
        count += batch_size
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"images": count, "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "images_per_second_wall": round(count / wall, 1),
            "images_per_cpu_core_second": round(count / cpu, 1),
            "warmup": {"images": warmup_batches * batch_size,
                       "wall_seconds": round(warm_wall, 2), "cpu_seconds": round(warm_cpu, 2)}}


def per_op_costs(data_dir, num_images=32, repeats=3):
    """CPU milliseconds of each op on one 224 px view, one thread, minus an empty call."""
    files = sorted(pathlib.Path(data_dir, "train").glob("*/*.JPEG"))[:num_images]
    encoded = [tf.io.read_file(str(f)) for f in files]
    images = [tf.io.decode_jpeg(e, channels=3) for e in encoded]
    box = tf.constant([10, 10, 150, 150])
    views_224 = [augment.crop_and_resize(x, box, 224) for x in images]
    seed = tf.constant([1, 2], tf.int64)
    even = augment_tables.view_augmentation(1, "large")
    ops = {
        "empty call": (lambda v: v, views_224),
        "decode JPEG (source image)": (lambda e: tf.io.decode_jpeg(e, channels=3), encoded),
        "crop + bicubic resize to 224": (lambda x: augment.crop_and_resize(x, box, 224), images),
        "crop + bicubic resize to 96": (
            lambda x: augment.crop_and_resize(x, tf.constant([10, 10, 60, 60]), 96), images),
        "colour jitter (p=1)": (lambda v: augment.color_jitter(v, seed, prob=1.0), views_224),
        "  saturation": (lambda v: augment.adjust_saturation(v, 1.1), views_224),
        "  hue": (lambda v: augment.adjust_hue(v, 0.05), views_224),
        "  contrast": (lambda v: augment.adjust_contrast(v, 1.1), views_224),
        "greyscale": (augment.to_grayscale, views_224),
        "gaussian blur (23 taps)": (lambda v: blur.gaussian_blur(v, 1.5, 11), views_224),
        "solarize": (augment.solarize, views_224),
        "normalise": (normalize.normalize_images, views_224),
        "photometric, even view (blur p=1)": (
            lambda v: augment.augment_photometric(v, seed, even), views_224),
    }
    costs = {}
    for name, (fn, inputs) in ops.items():
        fn = tf.function(fn, autograph=False, reduce_retracing=True)
        for x in inputs[:2]:
            fn(x)
        cpu0 = time.process_time()
        for _ in range(repeats):
            for x in inputs:
                fn(x)
        costs[name] = (time.process_time() - cpu0) * 1e3 / (repeats * len(inputs))
    empty = costs.pop("empty call")
    return {"empty_call_ms": round(empty, 3),
            **{name: round(max(cost - empty, 0.0), 3) for name, cost in costs.items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(DEFAULT_DATA))
    parser.add_argument("--num_images", type=int, default=640, help="timed images")
    parser.add_argument("--warmup_batches", type=int, default=4,
                        help="untimed batches first (at least 1)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--skip_keras", action="store_true", help="only time relicv2_tf")
    parser.add_argument("--mask_apply_prob", type=float, default=0.0,
                        help="saliency masking probability (> 0: synthetic masks, relicv2_tf only)")
    parser.add_argument("--per_op", action="store_true",
                        help="also print each op's CPU ms per 224 px view (one thread)")
    args = parser.parse_args()
    if not pathlib.Path(args.data_dir).is_dir():
        raise SystemExit(f"--data_dir={args.data_dir} does not exist "
                         "(the Imagenette ImageFolder root).")
    if args.warmup_batches < 1:
        raise SystemExit(f"--warmup_batches={args.warmup_batches} must be >= 1.")
    warmup = args.warmup_batches
    mask_dir = ""
    if args.mask_apply_prob > 0:
        mask_dir = tempfile.mkdtemp(prefix="relicv2_masks_")
        write_ellipse_masks(args.data_dir, mask_dir)
    config = data_config(args.data_dir, args.num_images + warmup * args.batch_size,
                         args.mask_apply_prob, mask_dir)
    result = {"benchmark": "augment_throughput", "views": "4x224 + 2x96",
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
              "tensorflow": tf.__version__, "keras": keras.__version__,
              "command": "python benchmarks/augment_throughput.py " + " ".join(sys.argv[1:])}
    if args.per_op:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        result["per_op_cpu_ms"] = per_op_costs(args.data_dir)
        print(json.dumps(result, indent=1))
        return
    result["relicv2_tf"] = measure(relicv2_pipeline(config, args.batch_size), args.batch_size,
                                    warmup)
    if mask_dir:
        shutil.rmtree(mask_dir)
    if args.skip_keras or mask_dir:
        print(json.dumps(result, indent=1))
        return
    result["keras_layers"] = measure(keras_pipeline(config, args.batch_size), args.batch_size,
                                       warmup)
    result["ratio_per_cpu_core"] = round(
        result["relicv2_tf"]["images_per_cpu_core_second"]
        / result["keras_layers"]["images_per_cpu_core_second"], 2)
    result["ratio_wall"] = round(result["relicv2_tf"]["images_per_second_wall"]
                                 / result["keras_layers"]["images_per_second_wall"], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
