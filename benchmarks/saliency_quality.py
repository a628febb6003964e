"""Saliency quality on the dev set: each prior, their fusion, a centre baseline (and a network).

    python benchmarks/saliency_quality.py [--image_size=0] [--num_workers=2] \
        [--network_dir=<workdir>/saliency_network] [--markdown]

For every folder of ../shared/data/saliency_dev (DAVIS-2016 val every 10th frame, the two
salient-object benchmark samples) and every method, prints one JSON object with the field's
metrics (`saliency.metrics.dataset_scores`: MAE, adaptive / max / mean F-beta with beta^2 = 0.3,
S-measure with alpha = 0.5, adaptive / mean / max E-measure), computed at each ground-truth
mask's own resolution.

Methods: `rbd`, `mr`, `dsr`, `mc` (`saliency.handcrafted`, one shared SLIC per image), `fused`
(their pixel-wise mean: `refine.fuse`, what the pipeline does with the refined maps), `centre`
(`dev_set.centre_gaussian`, sigma = 0.25 of height / width: a content-free map), and `network`
when --network_dir points at a directory written by `relicv2-saliency --stage=refine` (images
square-resized to its size and maps resized back, as the generate stage does).

--image_size=0 runs the priors on each image at its own size (the papers' protocol); S > 0
square-resizes to S x S first and resizes the maps back, as the pipeline's priors stage does.

Independent units: DAVIS frames of one video are correlated, so `per_group` gives the mean, the
standard deviation and the standard error over the 20 videos of each video's scores (images for
the other folders), and `wins_over_centre` counts the units where a method beats the centre
baseline (lower MAE, higher everything else). `criterion` checks that every prior beats the
baseline on every folder on max F, S-measure, mean E-measure and MAE.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV_DIR = os.path.join(ROOT, "..", "shared", "data", "saliency_dev")
CRITERION_METRICS = ("max_f", "s_measure", "mean_e", "mae")
LOWER_IS_BETTER = ("mae",)


def better(metric, value, reference):
    return value < reference if metric in LOWER_IS_BETTER else value > reference


def prior_maps(examples, image_size, n_segments, compactness, num_workers):
    """{name: [float32 [H, W] at the mask's size]} for the four priors."""
    from relicv2_tf.saliency import generate, handcrafted

    images = [e.image if image_size <= 0 else generate.resize_uint8(e.image, image_size)
              for e in examples]
    results = handcrafted.priors_for_image_list(
        images, handcrafted.PRIOR_NAMES, n_segments, compactness, num_workers, progress=False)
    maps = {name: [] for name in handcrafted.PRIOR_NAMES}
    for example, result in zip(examples, results):
        height, width = example.mask.shape
        for name, saliency in result.items():
            saliency = saliency.astype(np.float32) / 255.0
            if saliency.shape != (height, width):
                saliency = generate.resize_map(saliency, height, width)
            maps[name].append(saliency)
    return maps


def network_maps(examples, network_dir):
    from relicv2_tf.saliency import generate, network, refine

    model, arch = network.load_saliency_network(network_dir)
    size = arch["image_size"]
    maps = []
    for example in examples:
        predicted = refine.predict_maps(model, generate.resize_uint8(example.image, size)[None])
        maps.append(generate.resize_map(predicted[0], *example.mask.shape))
    return maps


def group_statistics(maps, examples):
    """Per independent unit (video / image): its scores; then mean, std, stderr over units."""
    from relicv2_tf.saliency import metrics

    groups = sorted({e.group for e in examples})
    scores = {g: metrics.dataset_scores(
        [m for m, e in zip(maps, examples) if e.group == g],
        [e.mask for e in examples if e.group == g]) for g in groups}
    summary = {}
    for metric in next(iter(scores.values())):
        values = np.array([scores[g][metric] for g in groups])
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary[metric] = {"mean": round(float(values.mean()), 4), "std": round(std, 4),
                           "stderr": round(std / np.sqrt(len(values)), 4)}
    return scores, summary


def evaluate_folder(root, args):
    from relicv2_tf.saliency import dev_set, metrics, refine

    examples = dev_set.load_folder(root, args.limit)
    start = time.time()
    maps = prior_maps(examples, args.image_size, args.n_segments, args.compactness,
                      args.num_workers)
    prior_seconds = time.time() - start
    maps["fused"] = [refine.fuse({k: maps[k][i] for k in list(maps)})
                     for i in range(len(examples))]
    maps["centre"] = [dev_set.centre_gaussian(*e.mask.shape, args.centre_sigma)
                      for e in examples]
    if args.network_dir:
        maps["network"] = network_maps(examples, args.network_dir)
    masks = [e.mask for e in examples]
    result = {"num_images": len(examples), "num_groups": len({e.group for e in examples}),
              "prior_seconds": round(prior_seconds, 1), "methods": {}, "per_group": {},
              "wins_over_centre": {}}
    per_group_scores = {}
    for name, method_maps in maps.items():
        scores = metrics.dataset_scores(method_maps, masks)
        result["methods"][name] = {k: round(v, 4) for k, v in scores.items()}
        per_group_scores[name], result["per_group"][name] = group_statistics(method_maps,
                                                                             examples)
    centre = per_group_scores["centre"]
    for name, scores in per_group_scores.items():
        if name == "centre":
            continue
        result["wins_over_centre"][name] = {
            metric: f"{sum(better(metric, scores[g][metric], centre[g][metric]) for g in scores)}"
                    f"/{len(scores)}" for metric in CRITERION_METRICS + ("adaptive_f",)}
    return result


def criterion(folders):
    """{method: {folder: [metrics where it does not beat the centre baseline]}} (empty = pass),
    for every prior, their fusion and the network when one was scored."""
    from relicv2_tf.saliency import handcrafted

    failures = {}
    for folder, result in folders.items():
        centre = result["methods"]["centre"]
        network = ("network",) if "network" in result["methods"] else ()
        for name in handcrafted.PRIOR_NAMES + ("fused",) + network:
            lost = [m for m in CRITERION_METRICS
                    if not better(m, result["methods"][name][m], centre[m])]
            if lost:
                failures.setdefault(name, {})[folder] = lost
    return failures


def markdown(report) -> str:
    columns = ("mae", "max_f", "adaptive_f", "s_measure", "mean_e", "adaptive_e")
    lines = []
    for folder, result in report["folders"].items():
        lines += [f"\n{folder} ({result['num_images']} images, {result['num_groups']} "
                  "independent units)\n",
                  "| method | " + " | ".join(columns) + " | S-measure per unit (mean +- se) |",
                  "|---" * (len(columns) + 2) + "|"]
        for name, scores in result["methods"].items():
            unit = result["per_group"][name]["s_measure"]
            lines.append(f"| {name} | " + " | ".join(f"{scores[c]:.3f}" for c in columns)
                         + f" | {unit['mean']:.3f} +- {unit['stderr']:.3f} |")
    return "\n".join(lines)


def main():
    from relicv2_tf.saliency import dev_set, superpixels

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev_dir", default=DEV_DIR)
    parser.add_argument("--folders", default=",".join(dev_set.FOLDERS))
    parser.add_argument("--image_size", type=int, default=0,
                        help="0: priors at each image's size; S: square-resized to S first")
    parser.add_argument("--n_segments", type=int, default=superpixels.N_SEGMENTS)
    parser.add_argument("--compactness", type=float, default=superpixels.COMPACTNESS)
    parser.add_argument("--centre_sigma", type=float, default=dev_set.CENTRE_SIGMA)
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="first N images per folder")
    parser.add_argument("--network_dir", default="",
                        help="a saliency_network/ directory from --stage=refine (optional)")
    parser.add_argument("--markdown", action="store_true", help="tables on stderr too")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not os.path.isdir(args.dev_dir):
        sys.exit(f"{args.dev_dir} not found: the dev set lives in ../shared/data/saliency_dev.")
    report = {"benchmark": "saliency_quality", "date": datetime.date.today().isoformat(),
              "command": "python " + " ".join(sys.argv), "image_size": args.image_size,
              "n_segments": args.n_segments, "compactness": args.compactness,
              "centre_sigma": args.centre_sigma,
              "beta_squared": 0.3, "e_measure": "mean_e (mean over thresholds) is the main one",
              "criterion_metrics": list(CRITERION_METRICS), "folders": {}}
    for folder in args.folders.split(","):
        report["folders"][folder] = evaluate_folder(os.path.join(args.dev_dir, folder), args)
    report["criterion_failures"] = criterion(report["folders"])
    report["criterion_passed"] = not report["criterion_failures"]
    if args.markdown:
        print(markdown(report), file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
