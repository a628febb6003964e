"""Evaluation throughput on CPU, printed as JSON.

  python benchmarks/eval_throughput.py                       # ResNet-18 x0.25, 64 px
  python benchmarks/eval_throughput.py --depth=50 --width=1 --image_size=224 --num_images=256

Measures (after one warm-up pass, so tracing is excluded):
  * feature extraction: images / s of the frozen encoder in inference mode;
  * linear-probe steps / s on precomputed features (batch `batch_size`, `num_classes` classes);
  * the whole linear evaluation on the same in-memory uint8 images for `num_epochs` epochs, with
    per-epoch augmentation (random resized crop + flip, encoder every epoch) vs precomputed
    centre-crop features (encoder once): wall-clock seconds and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from relicv2_tf.evaluation import batches, engine, features, linear, linear_head  # noqa: E402
from relicv2_tf.models import resnet  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--num_images", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--num_epochs", type=int, default=20)
    parser.add_argument("--probe_feature_dim", type=int, default=2048)
    parser.add_argument("--probe_num_classes", type=int, default=1000)
    parser.add_argument("--probe_batch_size", type=int, default=256)
    parser.add_argument("--probe_steps", type=int, default=50)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    encoder = resnet.resnet(args.depth, args.width)
    rng = np.random.default_rng(0)
    source_size = int(round(args.image_size / 0.875))
    images = rng.integers(0, 256, (args.num_images, source_size, source_size, 3), np.uint8)
    labels = rng.integers(0, args.num_classes, args.num_images).astype(np.int32)
    examples = tf.data.Dataset.from_tensor_slices((images, labels))
    test_batches = batches.eval_batches(examples, args.batch_size, args.image_size, source_size)

    features.extract_features(encoder, test_batches.take(1), progress=False)  # warm-up / trace
    start = time.perf_counter()
    features.extract_features(encoder, test_batches, progress=False)
    extraction_seconds = time.perf_counter() - start

    probe_features = rng.normal(size=(args.probe_batch_size, args.probe_feature_dim)).astype(
        np.float32)
    probe_labels = rng.integers(0, args.probe_num_classes, args.probe_batch_size).astype(np.int32)
    head = linear_head.make_linear_head(args.probe_feature_dim, args.probe_num_classes, 0)
    optimizer = engine.sgd(0.1)
    step = engine.classifier_step(head, optimizer)
    step(probe_features, probe_labels)  # trace
    start = time.perf_counter()
    for _ in range(args.probe_steps):
        loss, _ = step(probe_features, probe_labels)
    float(loss)
    probe_seconds = time.perf_counter() - start

    common = dict(num_classes=args.num_classes, batch_size=args.batch_size,
                  num_epochs=args.num_epochs, learning_rate=0.1, image_size=args.image_size,
                  resize_size=source_size, progress=False)
    start = time.perf_counter()
    linear.train_linear_head(encoder, examples, augment=True, **common)
    augmented_seconds = time.perf_counter() - start
    start = time.perf_counter()
    linear.train_linear_head(encoder, examples, augment=False, **common)
    precomputed_seconds = time.perf_counter() - start

    print(json.dumps({
        "benchmark": "eval_throughput",
        "encoder": f"resnet{args.depth}x{args.width:g}",
        "image_size": args.image_size,
        "cpu_threads": os.cpu_count(),
        "feature_extraction_images_per_second": round(args.num_images / extraction_seconds, 1),
        "linear_probe_steps_per_second": round(args.probe_steps / probe_seconds, 1),
        "linear_probe_setting": f"batch {args.probe_batch_size}, {args.probe_feature_dim} "
                                f"features, {args.probe_num_classes} classes",
        "linear_eval_num_images": args.num_images,
        "linear_eval_num_epochs": args.num_epochs,
        "augmented_per_epoch_seconds_total": round(augmented_seconds, 2),
        "precomputed_features_seconds_total": round(precomputed_seconds, 2),
        "precomputed_speedup": round(augmented_seconds / precomputed_seconds, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
