"""Two local worker processes (`--strategy=multi_worker`, TF_CONFIG on localhost) vs one process
on the same global batch: pretraining steps per second, measured in the same run.

    python benchmarks/multi_worker_throughput.py [--steps 40] [--batch_size 32] [--repeats 2]

Each repeat runs `relicv2-pretrain` on the tiny demo config (`multi_worker_faults.TINY`, no kNN,
one checkpoint at the end) three ways, one after the other on the same cores: one process with
the default strategy and as many intra-op threads as workers, one process with two replicas
(`--strategy=mirrored --num_cpu_replicas=2`, the same threads), and two worker processes with one
thread each. A run's speed is the median of its train.log images/s after `--warmup_steps`
(start-up, tracing and the first batches excluded), divided by the global batch. Prints one JSON
object: the steps/s of every run and, per repeat, the two-worker / one-process ratio.

On one machine the two workers share its cores and talk through gRPC on localhost, so the ratio
measures the cost of the multi-worker machinery (collectives over the network stack, one input
pipeline per process), not a speed-up; across machines each worker brings its own cores.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.multi_worker_faults import TINY, start_workers, wait_all, worker_env  # noqa: E402


def steps_per_second(workdir, global_batch: int, warmup_steps: int) -> float:
    """Median images/s of train.log's lines after `warmup_steps`, over the global batch."""
    rates = [float(match.group(2)) for match in re.finditer(
        r"^step (\d+)/\d+ .*\| (\d+) img/s", pathlib.Path(workdir, "train.log").read_text(),
        re.MULTILINE) if int(match.group(1)) > warmup_steps]
    if not rates:
        raise RuntimeError(f"no train.log line after step {warmup_steps} in {workdir}")
    return statistics.median(rates) / global_batch


def one_process(args, workdir, strategy_args, threads: int, timeout: float):
    out = subprocess.run([sys.executable, "-m", "relicv2_tf.cli.pretrain", *args,
                          f"--workdir={workdir}", *strategy_args], cwd=REPO,
                         env=worker_env(threads=threads), capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup_steps", type=int, default=10)
    parser.add_argument("--log_every", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=32, help="global batch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600)
    options = parser.parse_args()
    from benchmarks.fault_common import result_header

    args = [*TINY, f"--config.training.batch_size={options.batch_size}",
            f"--config.training.max_steps={options.steps}",
            f"--config.training.checkpoint_every_steps={options.steps}",
            f"--config.training.log_every_steps={options.log_every}", "--knn_eval=false",
            "--config.evaluation.online_probe=false"]
    result = {**result_header("multi_worker_throughput", "multi_worker_throughput.py"),
              "global_batch": options.batch_size, "steps": options.steps, "repeats": []}
    with tempfile.TemporaryDirectory(prefix="multi-worker-throughput-") as root:
        for repeat in range(options.repeats):
            runs = {}
            one_process(args, f"{root}/one{repeat}", [], 2, options.timeout)
            runs["one_process_one_replica"] = f"{root}/one{repeat}"
            one_process(args, f"{root}/mirrored{repeat}",
                        ["--strategy=mirrored", "--num_cpu_replicas=2"], 2, options.timeout)
            runs["one_process_two_replicas"] = f"{root}/mirrored{repeat}"
            codes = wait_all(start_workers([*args, f"--workdir={root}/workers{repeat}"],
                                           log_dir=f"{root}/logs{repeat}"), options.timeout)
            if codes != [0, 0]:
                raise RuntimeError(f"workers exited with {codes}: "
                                   + pathlib.Path(f"{root}/logs{repeat}/worker0.err")
                                   .read_text()[-3000:])
            runs["two_workers"] = f"{root}/workers{repeat}"
            speeds = {name: round(steps_per_second(path, options.batch_size,
                                                   options.warmup_steps), 3)
                      for name, path in runs.items()}
            speeds["ratio_two_workers_to_one_process"] = round(
                speeds["two_workers"] / speeds["one_process_one_replica"], 3)
            speeds["ratio_two_workers_to_two_replicas"] = round(
                speeds["two_workers"] / speeds["one_process_two_replicas"], 3)
            result["repeats"].append(speeds)
    result["ratio_median"] = statistics.median(
        r["ratio_two_workers_to_one_process"] for r in result["repeats"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
