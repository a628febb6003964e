"""Saliency throughput: handcrafted priors per core at 224 px, and network inference.

    python benchmarks/saliency_throughput.py [--num_images=20] [--image_size=224]

Prints one JSON object. Priors are timed single-threaded (BLAS limited to one thread, as the
pipeline runs them, one process per core); "per_core" = images / CPU-second of this process.
Network inference runs with TensorFlow's default threading on whatever cores the machine has.
Real photographs from ../shared/data/imagenette when present, synthetic images otherwise.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import time

import numpy as np
import threadpoolctl
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from experiments.configs import common  # noqa: E402  (no TensorFlow)

IMAGENETTE = common.data_path("imagenette", "val")


def load_images(num, size):
    files = sorted(glob.glob(os.path.join(IMAGENETTE, "*", "*.JPEG")))
    if files:
        picked = files[:: max(1, len(files) // num)][:num]
        return "imagenette", [np.asarray(Image.open(f).convert("RGB").resize((size, size)))
                              for f in picked]
    rng = np.random.default_rng(0)
    return "synthetic", [rng.integers(0, 255, (size, size, 3), np.uint8) for _ in range(num)]


def time_priors(images):
    from relicv2_tf.saliency import handcrafted

    results = {}
    with threadpoolctl.threadpool_limits(limits=1):
        handcrafted.all_priors(images[0])  # warm-up
        for name in handcrafted.PRIOR_NAMES + ("all_four",):
            cpu, wall = time.process_time(), time.perf_counter()
            for image in images:
                if name == "all_four":
                    handcrafted.all_priors(image)
                else:
                    handcrafted.PRIORS[name](image)  # includes its own SLIC
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            results[name] = {"images_per_second_per_core": round(len(images) / cpu, 2),
                             "ms_per_image_cpu": round(1000 * cpu / len(images), 1),
                             "images_per_second_wall": round(len(images) / wall, 2)}
    return results


def time_network(depth, width, size, batch, batches):
    import ml_collections

    from relicv2_tf.saliency import network, refine

    config = ml_collections.ConfigDict(dict(encoder_dir="", allow_random_init=True, depth=depth,
                                            width_multiplier=width, decoder_channels=64))
    model = network.build_saliency_network(config, size)
    images = np.random.default_rng(0).integers(0, 255, (batch, size, size, 3), np.uint8)
    refine.predict_maps(model, images, batch)  # trace
    start = time.perf_counter()
    for _ in range(batches):
        refine.predict_maps(model, images, batch)
    seconds = time.perf_counter() - start
    return {"depth": depth, "width_multiplier": width, "image_size": size, "batch_size": batch,
            "images_per_second": round(batch * batches / seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=20)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--skip_network", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    source, images = load_images(args.num_images, args.image_size)
    report = {"benchmark": "saliency_throughput", "source": source,
              "num_images": len(images), "image_size": args.image_size,
              "cpu_count": os.cpu_count(), "machine": platform.machine(),
              "load_average_1min": round(os.getloadavg()[0], 2),
              "priors": time_priors(images)}
    report["target_all_four_per_core"] = 5.0
    report["meets_target"] = report["priors"]["all_four"]["images_per_second_per_core"] >= 5.0
    if not args.skip_network:
        report["network_inference"] = [
            time_network(18, 0.25, 128, 64, 4),  # the demo network
            time_network(50, 1, 224, 16, 2),  # a ResNet-50 backbone at 224 px
        ]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
