"""The pretraining input pipeline in this process vs through a tf.data service (a dispatcher in
this process, two worker processes on localhost), measured in the same run; prints one JSON.

    python benchmarks/tf_data_service.py [--num_batches 10] [--warmup_batches 3]
        [--batch_size 32] [--rounds 2] [--data_dir DIR]

The pipeline is `views.pretrain_dataset` on Imagenette JPEGs with ReLICv2's views (4 x 224 +
2 x 96 per source image, float32), the only difference between the two arms being
`data.tf_data_service_address` (processing mode "distributed_epoch", see views.py). The arms
alternate (`--rounds` times each) so the load of a shared machine falls on both. Per arm:
examples / s (wall, timed batches only: the first `--warmup_batches` hold graph building,
autotuning) and CPU-seconds per example, summed over every process of the arm (this one; plus
the two workers, read from /proc) and of this process alone (the training host's share: with
the service it only receives the batches).

On one host both arms share the same cores, so the ratio measures the service's overhead
(serialising the views, gRPC to the client), not its purpose: the service pays when the training
host's own cores are the bottleneck and the workers run on other machines, whose cores add to
the pipeline's (docs/SCALING.md, "Input pipeline").
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from relicv2_tf import config as config_lib  # noqa: E402
from relicv2_tf.data import views  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from experiments.configs import common  # noqa: E402  (no TensorFlow)

WORKER = ("import sys, tensorflow as tf; s = tf.data.experimental.service; "
          "s.WorkerServer(s.WorkerConfig(dispatcher_address=sys.argv[1])).join()")


def data_config(data_dir, service_address=""):
    config = config_lib.get_default_config().data
    config.source = "image_folder"
    config.data_dir = str(data_dir)
    config.split = "train"
    config.shuffle_buffer = 256
    config.image_size, config.small_image_size = 224, 96
    config.num_large_views, config.num_small_views = 4, 2
    config.mask_apply_prob = 0.0  # no mask folder: the views' cost alone
    config.tf_data_service_address = service_address
    return config


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_workers(target: str, count: int):
    """Returns once `count` workers serve the dispatcher ("parallel_epochs" over one element
    yields it once per registered worker), so no arm times the workers' start-up."""
    service = tf.data.experimental.service
    while True:
        dataset = tf.data.Dataset.range(1).apply(service.distribute(
            processing_mode="parallel_epochs", service=target))
        if len(list(dataset)) >= count:
            return
        time.sleep(1)


def measure(config, args, worker_pids=()) -> dict:
    dataset = views.pretrain_dataset(config, batch_size=args.batch_size, seed=0)
    iterator = iter(dataset)
    start = time.time()
    for _ in range(args.warmup_batches):
        next(iterator)
    warmup_seconds = time.time() - start
    client_start = time.process_time()
    workers_start = sum(map(process_cpu_seconds, worker_pids))
    start = time.time()
    examples = sum(int(next(iterator)["id"].shape[0]) for _ in range(args.num_batches))
    wall = time.time() - start
    client = time.process_time() - client_start
    cpu = client + sum(map(process_cpu_seconds, worker_pids)) - workers_start
    del iterator
    return {"examples": examples, "wall_seconds": round(wall, 2),
            "examples_per_second": round(examples / wall, 1),
            "cpu_seconds_per_example": round(cpu / examples, 4),
            "client_cpu_seconds_per_example": round(client / examples, 4),
            "warmup_seconds": round(warmup_seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_batches", type=int, default=10)
    parser.add_argument("--warmup_batches", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data_dir", default=common.data_path("imagenette"))
    args = parser.parse_args()
    service = tf.data.experimental.service
    dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
    address = dispatcher.target.split("://")[1]
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, address]) for _ in range(2)]
    pids = [w.pid for w in workers]
    wait_for_workers(dispatcher.target, len(workers))
    arms = {"in_process": [], "service_2_workers": []}
    try:
        for _ in range(args.rounds):
            arms["in_process"].append(measure(data_config(args.data_dir), args))
            arms["service_2_workers"].append(
                measure(data_config(args.data_dir, dispatcher.target), args, pids))
            time.sleep(2)  # the workers' buffered elements: done before the next arm
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
        dispatcher.stop()

    def total(runs, key):
        return sum(run[key] for run in runs)

    rates = {name: total(runs, "examples") / total(runs, "wall_seconds")
             for name, runs in arms.items()}
    def per_example(key):
        return {name: round(sum(r[key] * r["examples"] for r in runs) / total(runs, "examples"),
                            4) for name, runs in arms.items()}

    cpu = per_example("cpu_seconds_per_example")
    print(json.dumps({
        "benchmark": "tf_data_service", "views": "4x224 + 2x96 float32",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
        "tensorflow": tf.__version__, "command": " ".join(["python", *sys.argv]),
        "batch_size": args.batch_size, "timed_batches_per_round": args.num_batches,
        "runs": arms,
        "examples_per_second": {k: round(v, 1) for k, v in rates.items()},
        "cpu_seconds_per_example": cpu,
        "client_cpu_seconds_per_example": per_example("client_cpu_seconds_per_example"),
        "ratio_service_to_in_process": round(rates["service_2_workers"] / rates["in_process"], 3),
        "cpu_ratio_service_to_in_process": round(cpu["service_2_workers"] / cpu["in_process"],
                                                 3)}))


if __name__ == "__main__":
    main()
