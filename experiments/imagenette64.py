"""Runs or resumes every cell of the Imagenette benchmark, then writes its table and figure.

  python experiments/imagenette64.py                # run / resume everything missing
  python experiments/imagenette64.py --hours 3      # start no new job after 3 hours
  python experiments/imagenette64.py --table_only   # regenerate docs/results/imagenette64.md

Protocol: experiments/configs/imagenette64.py. Order of work (each step resumable; a killed run
continues from its last checkpoint when this command runs again):
  1. BYOL seed 0 (no masks needed): its encoder initialises the saliency network (a session
     without masks trains it again, deterministically: same CPU, same encoder, same masks);
  2. the saliency pipeline (experiments/configs/saliency_imagenette.py: priors -> refine from
     that encoder -> masks for all train and val images -> one PNG mask folder);
  3. seed 0 of every cell, then the extra seeds of the two headline comparisons (the cheaper one,
     BYOL with and without BG_RM, first; then ReLICv2 with and without masking, seed by seed);
  4. per run: weighted kNN (k=20, T=0.07, all train images as the bank, val as queries; written
     by relicv2-pretrain), linear probe (experiments/configs/linear_eval_imagenette.py) and
     background robustness on val (experiments/configs/backgrounds_imagenette64.py).
Runs live under runs/imagenette64/ (not committed); wall times are summed over resumes. A finished
run leaves a small record in docs/results/imagenette64/<cell>_seed<k>.json (its metrics, kNN
curve, wall times, commit, CPU and mask set), which is committed: the table is built from the
records, and a later session (a fresh clone has no runs/) runs only the cells without one. The
masks are remade by the session that needs them (saliency.json in the same folder records each
mask set's id and quality); every record names the mask set it used.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments.configs import imagenette64  # noqa: E402  (no TensorFlow)

ROOT = os.path.join(REPO, "runs", "imagenette64")
SALIENCY_DIR = os.path.join(ROOT, "saliency")
RESULTS_MD = os.path.join(REPO, "docs", "results", "imagenette64.md")
FIGURE = os.path.join(REPO, "docs", "figures", "imagenette64_knn.png")
MASK_FIGURE = os.path.join(REPO, "docs", "figures", "imagenette64_masks.png")
RECORDS_DIR = os.path.join(REPO, "docs", "results", "imagenette64")
PREDICTIONS = os.path.join(REPO, "experiments", "imagenette64_predictions.py")
CONFIG = "experiments/configs/imagenette64.py"

# (cell, seeds): the two headline comparisons get 3 seeds.
# (cell, seeds). The ReLICv2 cells run the appendix E recipe (docs/OBJECTIVE.md); records of
# the earlier recipe are in docs/results/imagenette64/superseded/.
CELLS = [("relicv2", 5), ("relicv2,nomask", 5), ("relicv2,placebo", 5), ("relicv2,p03", 3),
         ("relicv2,better", 3), ("relicv2,2views", 3), ("byol,ema099", 3),
         ("byol", 3), ("byol,bg_rm", 3),
         ("moco_v2", 1), ("moco_v2,bg_rm", 1), ("moco_v2,bg_swaps", 1), ("simclr", 1),
         ("swav", 1), ("supervised", 1)]
# Order of the work: the headline (masked vs unmasked, seed by seed), then the placebo, then the
# dose and the controls; the other cells' missing seeds last.
PRIORITY = [("relicv2", "relicv2,nomask"), ("relicv2,placebo",), ("relicv2,p03",),
            ("relicv2,better",), ("relicv2,2views", "byol,ema099")]
# The run whose encoder initialises the saliency network. A session without masks trains it
# again (it is not re-evaluated): training is deterministic (`training.deterministic`), so on the
# same CPU and TensorFlow it reproduces the recorded encoder bit for bit, and the masks made from
# it are the same mask set, which keeps the background columns comparable across sessions.
BOOTSTRAP = ("byol", 0)


def run_dir(cell: str, seed: int) -> str:
    return os.path.join(ROOT, cell.replace(",", "_"), f"seed{seed}")


def _cli(name: str) -> list:
    """A CLI of this checkout (`python -m`, run from REPO), not whatever the console scripts
    point at: a git worktree of a fixed commit can run the benchmark while main moves on."""
    return [sys.executable, "-m", f"relicv2_tf.cli.{name}"]


def _log(message: str):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


THREADS = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}  # one core per job


def _env(**extra) -> dict:
    """The environment of every job: this checkout first on the import path (a script under
    benchmarks/ must not depend on how, or whether, the package is installed), quiet TF logs."""
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _run(command: list, log_path: str) -> float:
    """Runs a command (its output appended to `log_path`) on one core; returns its wall
    seconds. Two jobs run side by side: small convolutions use a second thread poorly, so two
    single-threaded runs finish sooner than one after the other."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    started = time.time()
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        code = subprocess.call(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env=_env(**THREADS))
    if code:
        raise RuntimeError(f"{' '.join(command)} failed (exit {code}); see {log_path}")
    return time.time() - started


def _add_seconds(directory: str, key: str, seconds: float):
    path = os.path.join(directory, "wall_seconds.json")
    times = json.load(open(path)) if os.path.exists(path) else {}
    times[key] = times.get(key, 0.0) + seconds
    with open(path + ".tmp", "w") as f:
        json.dump(times, f, indent=2)
    os.replace(path + ".tmp", path)


def _done(directory: str, name: str) -> bool:
    return os.path.exists(os.path.join(directory, name))


def train(cell: str, seed: int):
    directory = run_dir(cell, seed)
    log = os.path.join(directory, "log.txt")
    if cell == "supervised":
        if _done(directory, "supervised.json"):
            return
        seconds = _run([*_cli("supervised"), f"--config={CONFIG}:supervised",
                        f"--config.seed={seed}", f"--output_dir={directory}",
                        "--progress=false"], log)
    else:
        if _done(directory, "knn_eval.json"):
            return
        seconds = _run([*_cli("pretrain"), f"--config={CONFIG}:{cell}", f"--config.seed={seed}",
                        f"--workdir={directory}"], log)
    _add_seconds(directory, "train", seconds)


def evaluate(cell: str, seed: int):
    """Linear probe, background test sets (and the supervised encoder's kNN), then the per-image
    val predictions of kNN and linear for the image-level tests; each step skipped when done."""
    directory = run_dir(cell, seed)
    encoder = os.path.join(directory, "encoder")
    log = os.path.join(directory, "log.txt")
    protocol = [f"--config.encoder_dir={encoder}", "--progress=false"]
    jobs = [("linear", os.path.join(directory, "linear", "linear_eval.json"),
             [*_cli("linear_eval"), "--config=experiments/configs/linear_eval_imagenette.py",
              *protocol, f"--output_dir={os.path.join(directory, 'linear')}"]),
            ("backgrounds", os.path.join(directory, "backgrounds", "backgrounds.json"),
             [*_cli("backgrounds"), "--config=experiments/configs/backgrounds_imagenette64.py",
              *protocol, f"--output_dir={os.path.join(directory, 'backgrounds')}"])]
    if cell == "supervised":  # pretraining runs write their kNN figure themselves
        jobs.append(("knn", os.path.join(directory, "knn", "knn.json"),
                     [sys.executable, __file__, "--knn_of", encoder,
                      os.path.join(directory, "knn")]))
    jobs.append(("predictions", os.path.join(directory, "predictions.json"),
                 [sys.executable, PREDICTIONS, directory]))
    for name, done_file, command in jobs:
        if not os.path.exists(done_file):
            _add_seconds(directory, name, _run(command, log))


def knn_of(encoder_dir: str, output_dir: str):
    """The pretraining runs' end-of-run kNN (relicv2-pretrain), for an encoder trained
    elsewhere (the supervised baseline): same splits, crops, k and temperature."""
    from relicv2_tf.evaluation import knn_report
    config = imagenette64.get_config("byol")  # data / evaluation sections of the protocol
    e = config.evaluation
    result = knn_report.compare_with_random_init(config, encoder_dir, k=e.knn_k,
                                                 temperature=e.knn_temperature,
                                                 max_examples=e.knn_max_examples)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "knn.json"), "w") as f:
        json.dump(result, f, indent=2)


def saliency(source: tuple):
    """Masks of every train and val image, from the encoder of run `source` (cell, seed), as one
    PNG folder."""
    if os.path.exists(os.path.join(imagenette64.MASK_DIR, "done.json")):
        return
    encoder = os.path.join(run_dir(*source), "encoder")
    config = "experiments/configs/saliency_imagenette.py:network_v1"  # the benchmark's set
    common = [f"--config={config}", f"--config.workdir={SALIENCY_DIR}",
              f"--config.generate.output_dir={os.path.join(SALIENCY_DIR, 'masks')}",
              f"--config.network.encoder_dir={encoder}"]
    log = os.path.join(SALIENCY_DIR, "log.txt")
    steps = [("priors", os.path.join(SALIENCY_DIR, "priors.npz")),
             ("refine", os.path.join(SALIENCY_DIR, "saliency_network")),
             ("generate", None), ("evaluate", os.path.join(SALIENCY_DIR, "evaluate.json"))]
    for stage, marker in steps:
        if marker and os.path.exists(marker):
            continue
        _log(f"saliency: {stage}")
        if stage == "generate":  # two workers, one per core (disjoint shards)
            procs = [subprocess.Popen([*_cli("saliency"), *common, "--stage=generate",
                                       "--num_workers=2", f"--worker_index={w}"], cwd=REPO,
                                      stdout=open(log + f".gen{w}", "a"),
                                      stderr=subprocess.STDOUT, env=_env())
                     for w in range(2)]
            started = time.time()
            if any(p.wait() for p in procs):
                raise RuntimeError(f"mask generation failed; see {log}.gen*")
            _add_seconds(SALIENCY_DIR, stage, time.time() - started)
        else:
            _add_seconds(SALIENCY_DIR, stage, _run([*_cli("saliency"), *common,
                                                    f"--stage={stage}"], log))
    sys.path.insert(0, REPO)
    from relicv2_tf.saliency import generate
    counts = {split: generate.export_mask_folder(
        os.path.join(SALIENCY_DIR, "masks", f"{split}-*.tfrecord"), imagenette64.MASK_DIR)
        for split in ("train", "val")}
    dev_quality = os.path.join(SALIENCY_DIR, "dev_quality.json")
    if not os.path.exists(dev_quality):  # the refined network on the ground-truth dev set
        _log("saliency: dev-set quality")
        started = time.time()
        errors = os.path.join(SALIENCY_DIR, "dev_quality.log")
        with open(dev_quality + ".tmp", "w") as out, open(errors, "w") as err:
            code = subprocess.call(
                [sys.executable, os.path.join(REPO, "benchmarks", "saliency_quality.py"),
                 "--image_size=160", "--network_dir",
                 os.path.join(SALIENCY_DIR, "saliency_network")],
                cwd=REPO, stdout=out, stderr=err, env=_env())
        if code:
            raise RuntimeError("benchmarks/saliency_quality.py failed on the saliency network; "
                               f"see {errors}")
        os.replace(dev_quality + ".tmp", dev_quality)
        _add_seconds(SALIENCY_DIR, "dev_quality", time.time() - started)
    figure = os.path.join(SALIENCY_DIR, "saliency_samples.png")
    if os.path.exists(figure):
        os.makedirs(os.path.dirname(MASK_FIGURE), exist_ok=True)
        shutil.copyfile(figure, MASK_FIGURE)
    mask_id = _mask_set_id(imagenette64.MASK_DIR)
    quality = _json(dev_quality)
    sets = (_json(os.path.join(RECORDS_DIR, "saliency.json")) or {}).get("mask_sets", {})
    if mask_id in sets:  # a later session remade the same masks, bit for bit
        _log(f"saliency: mask set {mask_id} reproduced (same as {sets[mask_id]['date']})")
        sets[mask_id].setdefault("remade", []).append(_provenance())
        _write_json(os.path.join(RECORDS_DIR, "saliency.json"), {"mask_sets": sets})
        _write_json(os.path.join(imagenette64.MASK_DIR, "done.json"), {"id": mask_id, **counts})
        return
    _log(f"saliency: new mask set {mask_id} (known: {', '.join(sets) or 'none'})")
    sets[mask_id] = {
        "counts": counts, "encoder": f"{source[0]} seed {source[1]}", **_provenance(),
        "stage_seconds": _json(os.path.join(SALIENCY_DIR, "wall_seconds.json")),
        "label_free_check": _json(os.path.join(SALIENCY_DIR, "evaluate.json")),
        "dev_set": {folder: {"methods": r["methods"], "wins_over_centre": r["wins_over_centre"]}
                    for folder, r in quality["folders"].items()},
        "dev_set_criterion_failures": quality["criterion_failures"]}
    _write_json(os.path.join(RECORDS_DIR, "saliency.json"), {"mask_sets": sets})
    _write_json(os.path.join(imagenette64.MASK_DIR, "done.json"), {"id": mask_id, **counts})


def better_masks():
    """The masks of the best source on the dev set (docs/SALIENCY.md: the fused priors,
    `saliency_imagenette.py`'s default) for every train and val image, as one PNG folder
    (BETTER_MASK_DIR): the `relicv2,better` cell trains on them; evaluations keep MASK_DIR."""
    out = imagenette64.BETTER_MASK_DIR
    if os.path.exists(os.path.join(out, "done.json")):
        return
    workdir = os.path.join(ROOT, "saliency_better")
    shards = os.path.join(workdir, "masks")
    common = ["--config=experiments/configs/saliency_imagenette.py",
              f"--config.workdir={workdir}", f"--config.generate.output_dir={shards}"]
    _log("better masks: generate")
    log = os.path.join(workdir, "log.txt")
    os.makedirs(workdir, exist_ok=True)
    procs = [subprocess.Popen([*_cli("saliency"), *common, "--stage=generate", "--num_workers=2",
                               f"--worker_index={w}"], cwd=REPO, stdout=open(log, "a"),
                              stderr=subprocess.STDOUT, env=_env())
             for w in range(2)]
    started = time.time()
    if any(p.wait() for p in procs):
        raise RuntimeError(f"better-mask generation failed; see {log}")
    _add_seconds(workdir, "generate", time.time() - started)
    sys.path.insert(0, REPO)
    from relicv2_tf.saliency import generate
    counts = {split: generate.export_mask_folder(
        os.path.join(shards, f"{split}-*.tfrecord"), out) for split in ("train", "val")}
    _write_json(os.path.join(out, "done.json"), {"id": _mask_set_id(out), **counts,
                                                 "source": "fused_priors", **_provenance()})


def _mask_set_id(mask_dir: str) -> str:
    """A short hash of every mask file (relative path and bytes): names the mask set a run
    used, since a later session remakes the masks (on another CPU, not bit-identical)."""
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(mask_dir, "*", "*.png"))):
        digest.update(os.path.relpath(path, mask_dir).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:12]


def _write_json(path: str, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(path + ".tmp", path)


def _provenance() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"commit": commit, "cpu": cpu, "date": datetime.date.today().isoformat()}


def masks_done() -> bool:
    """The mask folder is complete and recorded (the last act of `saliency`)."""
    return os.path.exists(os.path.join(imagenette64.MASK_DIR, "done.json"))


def uses_masks(cell: str) -> bool:
    """Trains on masks (every run is evaluated on them: the background test sets)."""
    return (cell.startswith("relicv2") and not cell.endswith(("nomask", "2views"))
            or "bg_" in cell)


def placebo_masks(mask_dir: str, placebo_dir: str):
    """For every mask PNG, a binary centred box of the same area (the mask's mean) and the
    image's aspect ratio: ReLICv2 Table 19's "centered rectangle", matched in area per image."""
    import numpy as np
    from PIL import Image

    if os.path.exists(os.path.join(placebo_dir, "done.json")):
        return
    count = 0
    for path in sorted(glob.glob(os.path.join(mask_dir, "*", "*.png"))):
        mask = np.asarray(Image.open(path), np.float32) / 255.0
        out = os.path.join(placebo_dir, os.path.relpath(path, mask_dir))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        Image.fromarray(centred_box(mask.shape[:2], float(mask.mean()))).save(out)
        count += 1
    _write_json(os.path.join(placebo_dir, "done.json"),
                {"id": _mask_set_id(placebo_dir), "from": _mask_set_id(mask_dir),
                 "count": count})


def centred_box(shape, fraction: float):
    """uint8 [H, W] mask: 255 inside a centred box of `fraction` of the area (sides scaled by
    sqrt(fraction)), 0 outside."""
    import numpy as np

    height, width = shape
    box_h = int(round(height * math.sqrt(fraction)))
    box_w = int(round(width * math.sqrt(fraction)))
    top, left = (height - box_h) // 2, (width - box_w) // 2
    box = np.zeros(shape, np.uint8)
    box[top:top + box_h, left:left + box_w] = 255
    return box


def work_items(first_item: tuple) -> list:
    """(cell, seed) in the order they are worth running: `first_item` (the bootstrap), then the
    PRIORITY groups in turn, seed by seed within a group (a run that needs no masks before one
    that does, so it trains while the masks are made), then every other missing run."""
    seeds = dict(CELLS)
    items = []
    for group in PRIORITY:
        group = [cell for cell in group if cell in seeds]
        for seed in range(max((seeds[cell] for cell in group), default=0)):
            pair = [(cell, seed) for cell in group if seed < seeds[cell]]
            items += sorted(pair, key=lambda item: uses_masks(item[0]))
    items += [(cell, seed) for cell, n in CELLS for seed in range(n)]
    order = []
    for item in [first_item] + items:
        if item not in order:
            order.append(item)
    return order


def reevaluate(cell: str, seed: int):
    """An older record without per-image predictions whose encoder is here (the bootstrap,
    retrained each session): evaluated again with predictions, its figures compared with the
    record's (deterministic evaluation: they should not move; the log says if they did)."""
    old = cell_results(cell, seed) or {}
    if (old.get("predictions") or not masks_done()
            or not os.path.exists(os.path.join(run_dir(cell, seed), "knn_eval.json"))):
        return
    _log(f"{cell} seed {seed}: re-evaluate for per-image predictions")
    evaluate(cell, seed)
    new = finish_record(cell, seed) or {}
    changed = {k: (old[k], new.get(k)) for k in COLUMNS if k in old and old[k] != new.get(k)}
    _log(f"{cell} seed {seed}: re-evaluated; "
         + (f"CHANGED {changed}" if changed else "the same figures as its record"))


def run_all(deadline: float, workers: int = 2):
    """Trains and evaluates every (cell, seed) on `workers` cores. A run that needs masks, and
    every evaluation (the background test sets are made from the masks), waits for them; the
    masks come from the bootstrap run's encoder."""
    import concurrent.futures
    import threading

    masks_ready, table_lock, masks_lock = threading.Event(), threading.Lock(), threading.Lock()
    if masks_done():
        masks_ready.set()
    first_item = BOOTSTRAP

    def job(cell, seed):
        if time.time() > deadline:
            return
        recorded = os.path.exists(record_path(cell, seed))
        if recorded and masks_ready.is_set():
            return reevaluate(cell, seed)
        if recorded and not ((cell, seed) == first_item and not masks_ready.is_set()):
            return  # done in an earlier session
        if uses_masks(cell):
            masks_ready.wait()
            if not masks_done():
                _log(f"{cell} seed {seed}: not started (no masks: the saliency stage failed)")
                return
            with masks_lock:  # the training masks of the placebo and better-mask cells
                if cell.endswith(",placebo"):
                    placebo_masks(imagenette64.MASK_DIR, imagenette64.PLACEBO_MASK_DIR)
                if cell.endswith(",better"):
                    better_masks()
        _log(f"{cell} seed {seed}: train")
        train(cell, seed)  # the bootstrap retrains when this session has no masks yet
        if (cell, seed) == first_item and not masks_ready.is_set():
            if recorded:  # deterministic training: the same kNN as its record, or say so
                again = _json(os.path.join(run_dir(cell, seed), "knn_eval.json")) or {}
                _log(f"{cell} seed {seed} retrained: kNN {again.get('pretrained_top1')} "
                     f"(record: {cell_results(cell, seed).get('knn')})")
            saliency(first_item)
            masks_ready.set()
        if recorded:
            return reevaluate(cell, seed)
        masks_ready.wait()
        if not masks_done():  # the background test sets are made from the masks
            _log(f"{cell} seed {seed}: trained, not evaluated (no masks)")
            return
        _log(f"{cell} seed {seed}: evaluate")
        evaluate(cell, seed)
        finish_record(cell, seed)
        _log(f"{cell} seed {seed}: done")
        with table_lock:
            write_table()

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(job, cell, seed) for cell, seed in work_items(first_item)]
        for future in futures:
            try:
                future.result()
            except Exception as error:  # one failed run must not stop the others
                _log(f"FAILED: {error}")
                masks_ready.set()  # unblock the others (mask runs and evaluations then stop)


# ------------------------------------------------------------------------------ the table
def _json(path):
    return json.load(open(path)) if os.path.exists(path) else None


def record_path(cell: str, seed: int) -> str:
    return os.path.join(RECORDS_DIR, f"{cell.replace(',', '_')}_seed{seed}.json")


def cell_results(cell: str, seed: int) -> dict | None:
    """The committed record of a finished run (None before)."""
    return _json(record_path(cell, seed))


def finish_record(cell: str, seed: int) -> dict | None:
    """Writes the record of a run whose training and evaluations are all done."""
    results = run_results(cell, seed)
    if results is None:
        return None
    done = _json(os.path.join(imagenette64.MASK_DIR, "done.json")) or {}
    trained_on = {",placebo": imagenette64.PLACEBO_MASK_DIR,
                  ",better": imagenette64.BETTER_MASK_DIR}.get(cell[cell.find(","):]
                                                              if "," in cell else "")
    train_masks = done.get("id") if uses_masks(cell) else None
    if trained_on:
        train_masks = (_json(os.path.join(trained_on, "done.json")) or {}).get("id")
    results.update(predictions=_json(os.path.join(run_dir(cell, seed), "predictions.json")))
    results.update(cell=cell, seed=seed, masks=done.get("id"), train_masks=train_masks,
                   wall_seconds=_json(os.path.join(run_dir(cell, seed), "wall_seconds.json")),
                   knn_curve=knn_curve(cell, seed, results["knn"]),
                   knn_curve_format=CURVE_FORMAT, **_provenance())
    _write_json(record_path(cell, seed), results)
    return results


def run_results(cell: str, seed: int) -> dict | None:
    """The metrics of a run from its directory under runs/ (None until all are written)."""
    directory = run_dir(cell, seed)
    knn = _json(os.path.join(directory, "knn", "knn.json") if cell == "supervised"
                else os.path.join(directory, "knn_eval.json"))
    linear = _json(os.path.join(directory, "linear", "linear_eval.json"))
    bgs = _json(os.path.join(directory, "backgrounds", "backgrounds.json"))
    if not (knn and linear and bgs):
        return None
    metrics = bgs["metrics"]
    times = _json(os.path.join(directory, "wall_seconds.json")) or {}
    logged = train_seconds_logged(cell, seed)
    grey = {key: metrics[key] for key in ("only_fg_grey", "mixed_same_grey", "mixed_rand_grey",
                                          "bg_gap_grey") if key in metrics}
    return {"knn": knn["pretrained_top1"], "random_init_knn": knn.get("random_init_top1"),
            "linear": linear["metrics"]["top1"],
            "original": metrics["original"], "only_fg": metrics["only_fg"],
            "mixed_same": metrics["mixed_same"], "mixed_rand": metrics["mixed_rand"],
            "bg_gap": metrics["bg_gap"], **grey,
            "train_minutes": (logged or times.get("train", 0.0)) / 60,
            "train_minutes_from": "tensorboard" if logged else "runner"}


def train_seconds_logged(cell: str, seed: int) -> float:
    """Training seconds of a run from its TensorBoard event files, one per segment (the first
    run and each resume): from a file's creation to its last summary, summed. Unlike the
    runner's own clock it counts segments that were killed (up to their last summary)."""
    from tensorboard.backend.event_processing import event_accumulator

    total = 0.0
    pattern = os.path.join(run_dir(cell, seed), "tensorboard", "train", "events*")
    for path in glob.glob(pattern):
        events = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0,
                                                                         "scalars": 0})
        events.Reload()
        tags = events.Tags()
        times = ([e.wall_time for tag in tags["tensors"] for e in events.Tensors(tag)]
                 + [e.wall_time for tag in tags["scalars"] for e in events.Scalars(tag)])
        if times:
            total += max(times) - events.FirstEventTimestamp()
    return total


def _mean_std(values):
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _fmt(values, scale=100.0, digits=1):
    mean, std = _mean_std([v * scale for v in values])
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


# The table's columns. "Original" (the background head on the unmodified val images) is left
# out: it is the linear probe's own number (the same head on the same images) in every record.
COLUMNS = ["knn", "linear", "only_fg", "mixed_same", "mixed_rand", "bg_gap", "only_fg_grey",
           "bg_gap_grey"]
# The paired comparisons of the page, (name, a, b): differences a - b, seed by seed (the two runs
# of a seed share the initialisation and the data order), over the seeds both cells have.
COMPARISONS = [
    ("masking", "relicv2", "relicv2,nomask"),
    ("placebo masking", "relicv2,placebo", "relicv2,nomask"),
    ("masks vs placebo", "relicv2", "relicv2,placebo"),
    ("dose 0.3 vs 0.1", "relicv2,p03", "relicv2"),
    ("ReLICv2 loss vs BYOL (2 views, EMA 0.99)", "relicv2,2views", "byol,ema099"),
    ("BYOL EMA 0.99 vs 0.996 cosine", "byol,ema099", "byol"),
    ("BG_RM on BYOL", "byol,bg_rm", "byol"),
]
# Runs below the random-init encoder's kNN + this margin (points) are marked collapsed.
COLLAPSE_MARGIN = 2.0


def records_by_cell() -> dict:
    """{cell: {seed: record}} of the committed records."""
    return {cell: {s: r for s in range(seeds) if (r := cell_results(cell, s))}
            for cell, seeds in CELLS}


# The earlier recipe's ReLICv2 records (anchor != target pairs, masking after the augmentations),
# kept under superseded/ with the BYOL comparison of the same page, tested the same way.
SUPERSEDED = {"relicv2 (earlier recipe)": "superseded/recipe1_relicv2_seed{}.json",
              "relicv2,nomask (earlier recipe)": "superseded/recipe1_relicv2_nomask_seed{}.json"}
SUPERSEDED_COMPARISONS = [
    ("masking, earlier recipe", "relicv2 (earlier recipe)", "relicv2,nomask (earlier recipe)"),
    ("BG_RM on BYOL", "byol,bg_rm", "byol")]


def superseded_records() -> dict:
    """{cell: {seed: record}} of the SUPERSEDED records (3 seeds each)."""
    return {cell: {s: r for s in range(3)
                   if (r := _json(os.path.join(RECORDS_DIR, pattern.format(s))))}
            for cell, pattern in SUPERSEDED.items()}


def superseded_table() -> str:
    """The earlier recipe's headline comparisons, with the page's statistics (Holm over their
    rows)."""
    from experiments import imagenette64_stats as stats

    rows = stats.comparison_rows({**records_by_cell(), **superseded_records()},
                                 SUPERSEDED_COMPARISONS)
    return stats.markdown_table([r for r in rows if r["seeds"]])


def comparison_table() -> str:
    from experiments import imagenette64_stats as stats

    rows = stats.comparison_rows(records_by_cell(), COMPARISONS)
    waiting = sorted({f"{r['cell_a']} - {r['cell_b']}" for r in rows if not r["seeds"]})
    table = stats.markdown_table([r for r in rows if r["seeds"]])
    return table + ("\n\nNo paired seeds yet: " + "; ".join(waiting) + "." if waiting else "")


def random_init_knn() -> float | None:
    """The random-init encoder's kNN (seed 0, the protocol's architecture): its record."""
    record = _json(os.path.join(RECORDS_DIR, "random_init_seed0.json"))
    return record["knn"] if record else None


def table_rows() -> list:
    rows = []
    for cell, seeds in CELLS:
        results = [r for r in (cell_results(cell, s) for s in range(seeds)) if r]
        if not results:
            rows.append(f"| {cell} | 0 / {seeds} | " + " | ".join(["-"] * (len(COLUMNS) + 1))
                        + " |")
            continue
        floor = random_init_knn()
        collapsed = floor is not None and any(
            100 * r["knn"] < 100 * floor + COLLAPSE_MARGIN for r in results)
        name = f"{cell} (collapsed)" if collapsed else cell
        rows.append(f"| {name} | {len(results)} / {seeds} | "
                    + " | ".join(_fmt([r[c] for r in results if c in r]) if any(
                        c in r for r in results) else "-" for c in COLUMNS)
                    + f" | {_fmt([r['train_minutes'] for r in results], 1.0, 0)} |")
    return rows


CURVE_FORMAT = "epoch = step x batch / train images; last point: the end-of-run kNN"


def _epoch_of(step: int) -> float:
    return step * imagenette64.BATCH_SIZE / imagenette64.TRAIN_EXAMPLES


def knn_curve(cell: str, seed: int, final_knn: float | None = None) -> list:
    """[(epoch, kNN top-1)] of a run: the monitor's `epoch_knn_top1` summaries from its
    TensorBoard events (all resumes; one Keras epoch = one checkpoint interval, NaN where the
    monitor did not run), then `final_knn` at the last step. The monitor runs every 3 intervals
    of 73 steps, so its last point is at step 1,095 of 1,109: the end-of-run kNN (the table's)
    closes the curve."""
    import numpy as np
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    points = {}
    interval = imagenette64.SHARED["training.checkpoint_every_steps"]
    pattern = os.path.join(run_dir(cell, seed), "tensorboard", "train", "events*")
    for path in glob.glob(pattern):
        events = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
        events.Reload()
        if "epoch_knn_top1" not in events.Tags()["tensors"]:
            continue
        for event in events.Tensors("epoch_knn_top1"):
            value = float(np.asarray(tensor_util.make_ndarray(event.tensor_proto)))
            if math.isfinite(value):
                points[_epoch_of((event.step + 1) * interval)] = value
    if points and final_knn is not None:
        points[float(imagenette64.EPOCHS)] = final_knn
    return sorted(points.items())


def upgrade_curve(record: dict) -> dict:
    """A record written before `CURVE_FORMAT` (x = checkpoint intervals, no end point) in the
    current format; the values are unchanged."""
    if record.get("knn_curve_format") == CURVE_FORMAT:
        return record
    interval = imagenette64.SHARED["training.checkpoint_every_steps"]
    curve = [(_epoch_of(round(x * interval)), y) for x, y in record.get("knn_curve") or []]
    if curve:
        curve.append((float(imagenette64.EPOCHS), record["knn"]))
    return {**record, "knn_curve": curve, "knn_curve_format": CURVE_FORMAT}


def knn_curves() -> dict:
    """cell -> [(epoch, kNN top-1)] of seed 0, from the records."""
    curves = {}
    for cell, _ in CELLS:
        record = cell_results(cell, 0)
        record = record and upgrade_curve(record)
        if record and record.get("knn_curve"):
            curves[cell] = [tuple(point) for point in record["knn_curve"]]
    return curves


def write_figure(curves: dict):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for cell, points in curves.items():
        ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", ms=3,
                label=cell)
    ax.set_xlabel("epoch")
    ax.set_ylabel("kNN top-1 on val (%)")
    ax.set_title("Imagenette 64 px, ResNet-18 x0.25, seed 0")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(FIGURE), exist_ok=True)
    fig.savefig(FIGURE, dpi=100)
    plt.close(fig)


# Core-minutes of evaluation per run (linear probe, background sets, predictions), measured.
EVAL_MINUTES = 10.0


def runs_left() -> list:
    """[(cell, seed, estimated core-minutes)] of the runs without a record: the cell's mean
    training minutes over its records (else its method's, counting the superseded ReLICv2
    records: same views, same cost per step), plus evaluation."""
    done = {**records_by_cell(), **superseded_records()}

    def minutes(cells):
        values = [r["train_minutes"] for c in cells for r in done.get(c, {}).values()
                  if r.get("train_minutes")]
        return sum(values) / len(values) if values else None

    left = []
    for cell, seeds in CELLS:
        method = cell.split(",")[0]
        train = (minutes([cell]) or minutes([c for c in done if c.split(",")[0] == method])
                 or 45.0)
        left += [(cell, s, train + EVAL_MINUTES) for s in range(seeds) if s not in done[cell]]
    return left


def write_table():
    rows = table_rows()
    curves = knn_curves()
    if curves:
        write_figure(curves)
    header = ("| cell | seeds done | kNN top-1 | linear top-1 | Only-FG | Mixed-Same | Mixed-Rand "
              "| BG-Gap | Only-FG (grey) | BG-Gap (grey) | train min |\n"
              + "|---" * 11 + "|")
    marker = "<!-- table: generated by experiments/imagenette64.py -->"
    used = {}
    for cell, seeds in CELLS:
        for seed in range(seeds):
            record = cell_results(cell, seed)
            if record:
                used.setdefault(record.get("masks") or "none", []).append(f"{cell} s{seed}")
    sets = "\n".join(f"* mask set `{mask}` (docs/results/imagenette64/saliency.json): "
                     + ", ".join(runs) for mask, runs in used.items())
    floor = random_init_knn()
    floor_text = ("" if floor is None else
                  f"Random-init encoder (seed 0, same architecture): kNN {100 * floor:.1f} "
                  "(docs/results/imagenette64/random_init_seed0.json); a cell with a run below "
                  f"it + {COLLAPSE_MARGIN:.0f} points is marked collapsed.\n\n")
    paired = ("Paired comparisons (percentage points, a - b; per seed, then the mean with its "
              "95 % Student-t interval, its p and the Holm-adjusted p over every row of this "
              "table (a row of one seed, or whose per-seed differences all tie, has no spread "
              "to estimate: no interval, no p, not in the family); for kNN and linear where "
              "both runs kept their per-image predictions, the "
              "images only a / only b classifies right pooled over those seeds, McNemar's exact "
              "p (Holm over its own family) and a bootstrap over val images):\n\n"
              + comparison_table())
    paired += ("\n\nThe earlier recipe's headline comparisons (records in superseded/; Holm "
               "over these rows only):\n\n" + superseded_table())
    left = runs_left()
    left_text = (f"Runs left: {len(left)}, about {sum(m for *_, m in left) / 60:.1f} "
                 "core-hours (each run's training estimated from its cell's records, plus "
                 f"{EVAL_MINUTES:.0f} min of evaluation): "
                 + (", ".join(f"{c} s{s}" for c, s, _ in left) or "none") + ".")
    if any(c.endswith(",better") for c, *_ in left):
        left_text += (" Not counted: the better masks (fused priors over every train and val "
                      "image), made once before the first `relicv2,better` run (their cost per "
                      "image: docs/BENCHMARKS.md, mask generation).")
    table = (f"{marker}\n{header}\n" + "\n".join(rows) + f"\n\n{floor_text}{sets}\n\n"
             f"{paired}\n\n{left_text}\n{marker}")
    if os.path.exists(RESULTS_MD):
        text = open(RESULTS_MD).read()
        if text.count(marker) == 2:
            before, _, rest = text.partition(marker)
            _, _, after = rest.partition(marker)
            text = before + table + after
        else:
            text += "\n" + table + "\n"
    else:
        text = "# Imagenette benchmark (64 px)\n\n" + table + "\n"
    with open(RESULTS_MD + ".tmp", "w") as f:
        f.write(text)
    os.replace(RESULTS_MD + ".tmp", RESULTS_MD)
    print(table)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=float("inf"),
                        help="start no new job after this many hours")
    parser.add_argument("--table_only", action="store_true")
    parser.add_argument("--workers", type=int, default=2, help="runs side by side, one core each")
    parser.add_argument("--knn_of", nargs=2, metavar=("ENCODER_DIR", "OUTPUT_DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.knn_of:
        return knn_of(*args.knn_of)
    deadline = time.time() + args.hours * 3600
    if not args.table_only:
        run_all(deadline, args.workers)
    write_table()


if __name__ == "__main__":
    main()
