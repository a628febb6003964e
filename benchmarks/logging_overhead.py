"""Cost of the online linear probe and of the view-capture for image summaries per train step.

In one process, with interleaved timing windows (so machine noise hits every variant), this
times the train step of one config (default: the demo, ResNet-18 x0.25 at 32 px on digits) in
three variants built from the same seed: the method alone, + online probe
(`evaluation.online_probe`), + view capture every step (`training.image_summary_every_steps=1`,
the worst case: the copy of the views runs on every step instead of every N). Each variant runs
`--windows` windows of `--steps` steps on the same fixed batches (fed from memory, so the input
pipeline is not timed); the report is the median and the fastest window's seconds per step and
their ratios to the method alone, as one JSON object. The grid itself (reading the captured
views, the source's images and masks, PNG encoding) is timed by `train_logging.TrainingLog` in
every run ("Image summaries took ... s in all" in train.log).

    python benchmarks/logging_overhead.py
    python benchmarks/logging_overhead.py --config experiments/configs/relicv2_r50_imagenet.py \
        --batch_size 32 --image_size 224 --small_image_size 96 --source synthetic
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(config, variant, steps_total):
    import keras

    from relicv2_tf import train
    from relicv2_tf.methods import build_method
    keras.utils.set_random_seed(config.seed)
    model = build_method(config, total_steps=steps_total, steps_per_epoch=10.0)
    model.compile(optimizer=train.make_optimizer(config, steps_total, 10))
    if variant == "probe":
        model.attach_online_probe(10, config.evaluation.online_probe_learning_rate)
    if variant == "capture":
        d = config.data
        model.capture_views(min(8, config.training.batch_size), 1,
                            [d.num_large_views, d.image_size, d.image_size, 3],
                            [d.num_small_views, d.small_image_size, d.small_image_size, 3]
                            if d.num_small_views else None)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/configs/demo.py")
    parser.add_argument("--batch_size", type=int, default=0, help="0 = the config's")
    parser.add_argument("--image_size", type=int, default=0)
    parser.add_argument("--small_image_size", type=int, default=0)
    parser.add_argument("--source", default="", help="e.g. synthetic; '' = the config's")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--windows", type=int, default=8)
    args = parser.parse_args()

    import tensorflow as tf

    from relicv2_tf.data import views

    config = runpy.run_path(args.config)["get_config"]()
    for key, value in (("training.batch_size", args.batch_size),
                       ("data.image_size", args.image_size),
                       ("data.small_image_size", args.small_image_size),
                       ("data.source", args.source)):
        if value:
            section, field = key.split(".")
            config[section][field] = value
    if config.data.source == "synthetic":
        config.data.mask_apply_prob = 0.0  # synthetic images have no masks
    batches = list(views.pretrain_dataset(config.data, batch_size=config.training.batch_size,
                                          seed=config.seed).take(args.steps))
    batches = [{k: v for k, v in b.items() if k != "id"} for b in batches]
    total = args.steps * (args.windows + 1)
    models = {v: build(config, v, total) for v in ("method", "probe", "capture")}
    times = {v: [] for v in models}
    # One element per step: the same fixed batches for every variant, from memory.
    dataset = tf.data.Dataset.from_tensor_slices(
        {k: tf.stack([b[k] for b in batches]) for k in batches[0]})
    for window in range(args.windows + 1):  # window 0 traces the step: not timed
        for variant, model in models.items():
            started = time.perf_counter()
            model.fit(dataset, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=False)
            if window:
                times[variant].append((time.perf_counter() - started) / args.steps)
    median = {v: statistics.median(t) for v, t in times.items()}
    fastest = {v: min(t) for v, t in times.items()}  # robust to other jobs on the machine
    print(json.dumps({
        "config": args.config, "batch_size": config.training.batch_size,
        "image_size": config.data.image_size, "steps_per_window": args.steps,
        "windows": args.windows, "median_seconds_per_step": median,
        "min_seconds_per_step": fastest,
        "probe_ratio_median": median["probe"] / median["method"],
        "probe_ratio_min": fastest["probe"] / fastest["method"],
        "capture_every_step_ratio_median": median["capture"] / median["method"],
        "capture_every_step_ratio_min": fastest["capture"] / fastest["method"]}, indent=2))


if __name__ == "__main__":
    main()
