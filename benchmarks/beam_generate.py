"""Mask generation: the Apache Beam DirectRunner with two worker processes vs the plain
generator (one process), and the plain generator split by hand over two processes
(--num_workers=2), in the same run; prints one JSON.

    python benchmarks/beam_generate.py [--num_images 256] [--num_shards 8] [--rounds 1]
        [--source fused_priors] [--data_root DIR]

Each arm is the `relicv2-saliency --stage=generate` command as a user runs it (a fresh output
folder each time), on `--num_images` evenly spaced Imagenette train images with
experiments/configs/saliency_imagenette.py's mask source (the fused priors at 160 px, ~41 ms of
CPU per image). Images / s count the whole command, start-up included (TensorFlow's import, and
for Beam its worker processes); the summaries' own timings (listing to last shard) are given
too, and the CPU-seconds of each command and its child processes (Beam's workers), which the
load of a shared machine does not inflate as it does the wall time. The arms alternate
(`--rounds` times each) so that load falls on all of them, and their shards are compared byte
for byte.
"""

from __future__ import annotations

import argparse
import datetime
import filecmp
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from experiments.configs import common  # noqa: E402  (no TensorFlow)

CONFIG = "experiments/configs/saliency_imagenette.py"
BEAM_OPTIONS = "--direct_num_workers=2 --direct_running_mode=multi_processing"
ARMS = {  # name -> the extra flags of each process of the arm
    "plain_1_process": [[]],
    "beam_direct_2_workers": [["--beam_runner=DirectRunner", f"--beam_options={BEAM_OPTIONS}"]],
    "plain_2_processes": [["--num_workers=2", f"--worker_index={i}"] for i in range(2)],
}


def run_arm(flags_per_process, args, output_dir, workdir) -> dict:
    common_flags = [f"--config={CONFIG}", "--stage=generate", "--noprogress",
                    f"--config.workdir={workdir}", f"--config.generate.source={args.source}",
                    f"--config.generate.data_root={args.data_root}",
                    "--config.generate.splits=('train',)",
                    f"--config.generate.num_examples={args.num_images}",
                    f"--config.generate.num_shards={args.num_shards}",
                    f"--config.generate.output_dir={output_dir}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                         if p)}
    cpu_start = _children_cpu_seconds()
    start = time.time()
    processes = [subprocess.Popen([sys.executable, "-m", "relicv2_tf.cli.saliency",
                                   *common_flags, *flags], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for flags in flags_per_process]
    outputs = [p.communicate() for p in processes]
    wall = time.time() - start
    cpu = _children_cpu_seconds() - cpu_start
    for process, (_, stderr) in zip(processes, outputs):
        if process.returncode:
            raise RuntimeError(f"relicv2-saliency failed: {stderr[-3000:]}")
    summaries = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    written = sum(s["splits"][0]["examples_written"] for s in summaries)
    inner = max(s.get("seconds") or s["splits"][0]["seconds"] for s in summaries)
    return {"images": written, "wall_seconds": round(wall, 2),
            "images_per_second": round(written / wall, 2),
            "cpu_seconds": round(cpu, 1), "cpu_seconds_per_image": round(cpu / written, 3),
            "generate_seconds": round(inner, 2)}


def _children_cpu_seconds() -> float:
    """User + system time of the finished child processes and of theirs (Beam's workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--num_shards", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--source", default="fused_priors", choices=("fused_priors",))
    parser.add_argument("--data_root", default=common.data_path("imagenette"))
    args = parser.parse_args()
    runs = {name: [] for name in ARMS}
    identical = True
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            outputs = {}
            for name, flags in ARMS.items():
                outputs[name] = os.path.join(tmp, f"{name}_{round_index}")
                runs[name].append(run_arm(flags, args, outputs[name], os.path.join(tmp, "work")))
            reference = outputs["plain_1_process"]
            names = sorted(os.listdir(reference))
            for directory in outputs.values():
                identical &= sorted(os.listdir(directory)) == names and all(
                    filecmp.cmp(os.path.join(reference, n), os.path.join(directory, n),
                                shallow=False) for n in names)
    rates = {name: sum(r["images"] for r in arm) / sum(r["wall_seconds"] for r in arm)
             for name, arm in runs.items()}
    print(json.dumps({
        "benchmark": "beam_generate", "source": args.source,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
        "command": " ".join(["python", *sys.argv]), "num_shards": args.num_shards,
        "runs": runs, "images_per_second": {k: round(v, 2) for k, v in rates.items()},
        "ratio_beam_to_plain": round(rates["beam_direct_2_workers"] / rates["plain_1_process"],
                                     3),
        "cpu_seconds_per_image": {name: round(sum(r["cpu_seconds"] for r in arm)
                                              / sum(r["images"] for r in arm), 3)
                                  for name, arm in runs.items()},
        "ratio_plain_2_processes_to_plain": round(
            rates["plain_2_processes"] / rates["plain_1_process"], 3),
        "shards_identical": identical}))


if __name__ == "__main__":
    main()
