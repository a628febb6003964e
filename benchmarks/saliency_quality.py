"""Saliency quality on the dev set: each prior, their fusion, a centre baseline (and a network).

    python benchmarks/saliency_quality.py [--image_size=0] [--num_workers=2] \
        [--network_dir=<workdir>/saliency_network] [--stages_dir=<workdir>/stages] \
        [--markdown] [--summary] [--figure=docs/figures/saliency_stages.png]

For every folder of the saliency dev set ($RELICV2_DATA_ROOT/saliency_dev, default
../shared/data/saliency_dev: DAVIS-2016 val every 10th frame, the two
salient-object benchmark samples) and every method, prints one JSON object with the field's
metrics (`saliency.metrics.dataset_scores`: MAE, adaptive / max / mean F-beta with beta^2 = 0.3,
S-measure with alpha = 0.5, adaptive / mean / max E-measure), computed at each ground-truth
mask's own resolution.

Methods: `rbd`, `mr`, `dsr`, `mc` (`saliency.handcrafted`, one shared SLIC per image), `fused`
(their pixel-wise mean: `refine.fuse`, what the pipeline does with the refined maps and what
`generate.source = "fused_priors"` writes), `centre` (`dev_set.centre_gaussian`, sigma = 0.25
of height / width: a content-free map), and `network` when --network_dir points at a directory
written by `relicv2-saliency --stage=refine` (images square-resized to its size and maps resized
back, as the generate stage does). --network_dir can be repeated, as `name=path` to name each.

Every stage of the pipeline: --stages_dir=<workdir>/stages scores each stage-1 pseudo-label
network the refine stage saved there (`--config.refine.save_stage_networks=True`; one
`<prior>_round<r>` per prior and round) as `stage:<prior>_round<r>`, and the mean of each
prior's last round as `stage:fusion` (what the final network learns from, here on the dev
images); --summary prints the compact per-stage table (S-measure, MAE, max F, adaptive F, mean
E per folder) on stderr and --figure=<png> draws the stages on a few dev images (`--figure_ids`,
default: the first image of each folder). `target_vs_fused` lists, per network, the folders
where it does not match the fused priors on S-measure or MAE.

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
sys.path.insert(0, ROOT)
from experiments.configs import common  # noqa: E402  (no TensorFlow)

DEV_DIR = common.data_path("saliency_dev")  # $RELICV2_DATA_ROOT or ../shared/data
CRITERION_METRICS = ("max_f", "s_measure", "mean_e", "mae")
TARGET_METRICS = ("s_measure", "mae")  # a network should match the fused priors on these
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


def networks_to_score(network_dirs, stages_dir):
    """{method name: saliency_network directory}: --network_dir entries (`name=path` or a path;
    an unnamed first one is `network`), then every stage under --stages_dir in prior / round
    order as `stage:<prior>_round<r>`."""
    from relicv2_tf.saliency import handcrafted, network

    named = {}
    for index, entry in enumerate(network_dirs or ()):
        name, _, path = entry.rpartition("=")
        named[name or ("network" if index == 0 else os.path.basename(os.path.normpath(path)))] \
            = path
    if stages_dir:
        stages = [d for d in os.listdir(stages_dir)
                  if os.path.exists(os.path.join(stages_dir, d, network.NETWORK_CONFIG_FILE))]
        order = {n: i for i, n in enumerate(handcrafted.PRIOR_NAMES)}
        stages.sort(key=lambda d: (order.get(d.rsplit("_round", 1)[0], len(order)), d))
        if not stages:
            raise SystemExit(f"no stage networks under {stages_dir} (run the refine stage with "
                             "--config.refine.save_stage_networks=True).")
        named.update({f"stage:{d}": os.path.join(stages_dir, d) for d in stages})
    return named


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


def evaluate_folder(root, args, figure_maps=None):
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
    for name, directory in networks_to_score(args.network_dir, args.stages_dir).items():
        maps[name] = network_maps(examples, directory)
    last_rounds = {}  # prior -> its last stage-1 round, for the fusion of the refined maps
    for name in maps:
        if name.startswith("stage:"):
            last_rounds[name[len("stage:"):].rsplit("_round", 1)[0]] = name
    if last_rounds:
        maps["stage:fusion"] = [refine.fuse({k: maps[n][i] for k, n in last_rounds.items()})
                                for i in range(len(examples))]
    if args.figure:
        figure_maps[os.path.basename(os.path.normpath(root))] = (examples, maps)
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
        networks = tuple(n for n in result["methods"]
                         if n not in handcrafted.PRIOR_NAMES + ("fused", "centre"))
        for name in handcrafted.PRIOR_NAMES + ("fused",) + networks:
            lost = [m for m in CRITERION_METRICS
                    if not better(m, result["methods"][name][m], centre[m])]
            if lost:
                failures.setdefault(name, {})[folder] = lost
    return failures


def target_vs_fused(folders):
    """{network: {folder: [metrics of TARGET_METRICS where it is worse than the fused priors]}}
    (empty = the network is at least as good as the priors' mean everywhere)."""
    from relicv2_tf.saliency import handcrafted

    misses = {}
    for folder, result in folders.items():
        fused = result["methods"]["fused"]
        for name, scores in result["methods"].items():
            if name in handcrafted.PRIOR_NAMES + ("fused", "centre"):
                continue
            lost = [m for m in TARGET_METRICS if better(m, fused[m], scores[m])]
            misses.setdefault(name, {})
            if lost:
                misses[name][folder] = lost
    return misses


def summary_table(report) -> str:
    """One row per method, S-measure / MAE / max F / adaptive F / mean E for every folder."""
    columns = (("s_measure", "S"), ("mae", "MAE"), ("max_f", "maxF"), ("adaptive_f", "adpF"),
               ("mean_e", "meanE"))
    folders = list(report["folders"])
    short = {"davis2016_val_every10": "DAVIS", "salbenchmark_set1": "set1",
             "salbenchmark_set2": "set2"}
    header = "| method | " + " | ".join(f"{short.get(f, f)} {label}" for f in folders
                                        for _, label in columns) + " |"
    lines = [header, "|---" * (1 + len(folders) * len(columns)) + "|"]
    for name in report["folders"][folders[0]]["methods"]:
        cells = [f"{report['folders'][f]['methods'][name][metric]:.3f}" for f in folders
                 for metric, _ in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_stage_figure(path, figure_maps, ids, max_columns=14):
    """Rows: dev images; columns: image, ground truth, then every method (priors, fused, the
    last round of each stage-1 network, the final network). A small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relicv2_tf.saliency import handcrafted, metrics

    rows = []
    for folder, (examples, maps) in figure_maps.items():
        wanted = [i for i, e in enumerate(examples) if e.id in ids] or [0]
        rows += [(examples[i], {n: m[i] for n, m in maps.items()}) for i in wanted]
    names = [n for n in rows[0][1] if n != "centre"]
    last_round = {}
    for name in names:  # only the last round of each prior's stage-1 network
        if name.startswith("stage:"):
            last_round[name.rsplit("_round", 1)[0]] = name
    stages = list(last_round.values())
    others = [n for n in names if not n.startswith("stage:")]
    fixed = [n for n in others if n in handcrafted.PRIOR_NAMES + ("fused",)]
    names = (fixed + stages + [n for n in others if n not in fixed])[:max_columns - 2]
    cols = 2 + len(names)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols, 1.1 * len(rows)),
                             squeeze=False)
    for r, (example, maps) in enumerate(rows):
        panels = [("image", example.image), ("ground truth", example.mask.astype(np.float32))]
        panels += [(n.replace("stage:", "").replace("_round", " r"),
                    metrics.prepare(maps[n], example.mask)[0]) for n in names]  # min-max
        for c, (title, panel) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel, cmap=None if c == 0 else "gray", vmin=0, vmax=None if c == 0 else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
    fig.tight_layout(pad=0.2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


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
    parser.add_argument("--network_dir", action="append", default=[],
                        help="a saliency_network/ directory from --stage=refine, or "
                             "name=directory; repeatable (optional)")
    parser.add_argument("--stages_dir", default="",
                        help="<workdir>/stages: score every stage-1 network saved there")
    parser.add_argument("--markdown", action="store_true", help="tables on stderr too")
    parser.add_argument("--summary", action="store_true",
                        help="the compact per-method table (S, MAE, maxF, adpF, meanE) on stderr")
    parser.add_argument("--figure", default="", help="PNG of the methods on a few dev images")
    parser.add_argument("--figure_ids", default="",
                        help="comma-separated dev-set ids for --figure (default: the first "
                             "image of each folder)")
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
    figure_maps = {}
    for folder in args.folders.split(","):
        report["folders"][folder] = evaluate_folder(os.path.join(args.dev_dir, folder), args,
                                                    figure_maps)
    report["criterion_failures"] = criterion(report["folders"])
    report["criterion_passed"] = not report["criterion_failures"]
    report["target_vs_fused"] = target_vs_fused(report["folders"])
    if args.figure:
        report["figure"] = save_stage_figure(args.figure, figure_maps,
                                             set(filter(None, args.figure_ids.split(","))))
    if args.markdown:
        print(markdown(report), file=sys.stderr)
    if args.summary:
        print(summary_table(report), file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
