"""Fault injection, multi-worker pretraining: a worker SIGKILLed mid-run stops the job within a
bounded time, and restarting every worker resumes from the chief's last checkpoint and ends
exactly where an uninterrupted run ends.

    python benchmarks/multi_worker_faults.py [--kills 3] [--max_steps 12] [--workdir DIR]

Two `relicv2-pretrain --strategy=multi_worker` processes on localhost (TF_CONFIG with two free
ports; one CPU thread each) train the tiny demo config (`TINY`, training.deterministic). First
an uninterrupted run; then, `--kills` times in a fresh workdir, both workers are started, and
once the chief has written a checkpoint past the last one seen, one worker (alternately the
non-chief and the chief) is SIGKILLed. Measured: whether and how fast the surviving worker
exits (the limit is `STOP_LIMIT_SECONDS`: the coordination service's heartbeat timeout plus
slack; `--collective_timeout_seconds` bounds a hung collective), its exit status, then the
restart of both workers: the step it resumed at, the final step count, that the workdir holds
only the chief's files, and the final encoder against the uninterrupted run's (max absolute
difference; 0.0 = bit-identical). Prints one JSON object (docs/SCALING.md quotes a run).

The helpers (`free_ports`, `start_workers`, `wait_all`, `workdir_files`) also serve
tests/test_multi_worker.py and benchmarks/multi_worker_throughput.py.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

# The tiny demo of tests/test_pretrain_cli.py, deterministic, a few seconds per step on a CPU.
TINY = [
    "--config=experiments/configs/demo.py",
    "--config.model.projector_hidden_dim=32", "--config.model.projector_output_dim=16",
    "--config.model.predictor_hidden_dim=32", "--config.data.num_large_views=2",
    "--config.data.num_small_views=1", "--config.training.batch_size=16",
    "--config.loss.num_negatives=5", "--config.data.num_examples=200",
    "--config.training.deterministic=true", "--config.training.image_summary_every_steps=0",
    "--config.evaluation.knn_max_examples=64",
]
# A killed worker stops sending heartbeats; the coordination service reports it after its
# heartbeat timeout (10 s by default in TF 2.21) and every live worker's next collective fails.
STOP_LIMIT_SECONDS = 120


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on localhost (bound, read, released)."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("localhost", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_configs(count: int) -> list[str]:
    """The TF_CONFIG of each of `count` workers on localhost: one "worker" job, task i."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(count)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(count)]


def worker_env(tf_config: str | None = None, threads: int = 1) -> dict:
    """The environment of one worker process: quiet TensorFlow, `threads` intra-op threads."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    if threads:
        env["TF_NUM_INTRAOP_THREADS"] = str(threads)
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    return env


def start_workers(args, *, module: str = "relicv2_tf.cli.pretrain", num_workers: int = 2,
                  log_dir: str | None = None, threads: int = 1) -> list[subprocess.Popen]:
    """Starts `num_workers` processes of `python -m <module> <args> --strategy=multi_worker`
    with a fresh TF_CONFIG; stdout / stderr go to `<log_dir>/worker<i>.{out,err}` (appended)
    or are discarded."""
    processes = []
    for i, tf_config in enumerate(tf_configs(num_workers)):
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            out = open(os.path.join(log_dir, f"worker{i}.out"), "a")
            err = open(os.path.join(log_dir, f"worker{i}.err"), "a")
        else:
            out = err = subprocess.DEVNULL
        processes.append(subprocess.Popen(
            [sys.executable, "-m", module, *args, "--strategy=multi_worker"], cwd=REPO,
            env=worker_env(tf_config, threads), stdout=out, stderr=err))
    return processes


def wait_all(processes, timeout: float) -> list[int | None]:
    """Exit codes after at most `timeout` seconds in all (None: still running, then killed)."""
    deadline = time.time() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=max(0.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            codes.append(None)
    return codes


def workdir_files(workdir) -> set[str]:
    """The files under `workdir`, relative, TensorBoard event files as one name."""
    names = set()
    for path in pathlib.Path(workdir).rglob("*"):
        if path.is_file():
            name = str(path.relative_to(workdir))
            names.add(name.rsplit("/", 1)[0] + "/events" if "tfevents" in name else name)
    return names


def checkpoint_steps(workdir) -> list[int]:
    return sorted(int(p.name.split("-")[1].split(".")[0])
                  for p in pathlib.Path(workdir, "checkpoints").glob("ckpt-*.index"))


def encoder_weights(workdir) -> list:
    """The arrays of `<workdir>/encoder/encoder.weights.h5`, in file order."""
    import h5py

    arrays = []
    with h5py.File(pathlib.Path(workdir, "encoder", "encoder.weights.h5")) as f:
        f.visititems(lambda name, item: arrays.append(item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return arrays


def max_abs_difference(a, b) -> float:
    import numpy as np

    return max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b))


def kill_one_and_resume(workdir, args, victim: int, log_dir: str, timeout: float) -> dict:
    """Starts both workers, SIGKILLs worker `victim` after the chief's first new checkpoint,
    times the survivor's exit, restarts both and waits for the end."""
    before = checkpoint_steps(workdir)
    workers = start_workers(args, log_dir=log_dir)
    deadline = time.time() + timeout
    while (time.time() < deadline and all(w.poll() is None for w in workers)
           and checkpoint_steps(workdir)[-1:] <= before[-1:]):
        time.sleep(0.2)
    if any(w.poll() is not None for w in workers):
        wait_all(workers, 0)
        return {"error": "a worker ended before the kill", "codes": [w.returncode for w in workers]}
    killed_at = checkpoint_steps(workdir)
    workers[victim].send_signal(signal.SIGKILL)
    workers[victim].wait()
    survivor = workers[1 - victim]
    started = time.time()
    code = wait_all([survivor], STOP_LIMIT_SECONDS)[0]
    stop_seconds = time.time() - started
    resumed = start_workers(args, log_dir=log_dir)
    codes = wait_all(resumed, timeout)
    return {"victim": victim, "checkpoints_at_kill": killed_at, "survivor_exit_code": code,
            "survivor_stop_seconds": round(stop_seconds, 1), "restart_exit_codes": codes,
            "checkpoints_after": checkpoint_steps(workdir)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--max_steps", type=int, default=12)
    parser.add_argument("--checkpoint_every", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800, help="per run, seconds")
    parser.add_argument("--workdir", default=None)
    options = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from benchmarks.fault_common import result_header, work_root

    args = [*TINY, f"--config.training.max_steps={options.max_steps}",
            f"--config.training.checkpoint_every_steps={options.checkpoint_every}",
            "--knn_eval=false", "--collective_timeout_seconds=60"]
    result = result_header("multi_worker_faults", "multi_worker_faults.py")
    with work_root(options.workdir, "multi-worker-faults") as root:
        reference = os.path.join(root, "uninterrupted")
        codes = wait_all(start_workers([*args, f"--workdir={reference}"],
                                       log_dir=os.path.join(root, "logs-uninterrupted")),
                         options.timeout)
        result["uninterrupted_exit_codes"] = codes
        expected = encoder_weights(reference)
        runs = []
        for kill in range(options.kills):
            workdir = os.path.join(root, f"killed{kill}")
            run = kill_one_and_resume(workdir, [*args, f"--workdir={workdir}"], victim=1 - kill % 2,
                                      log_dir=os.path.join(root, f"logs-killed{kill}"),
                                      timeout=options.timeout)
            summary = pathlib.Path(workdir, "pretrain_summary.json")
            run["final_steps"] = (json.loads(summary.read_text())["steps"]
                                  if summary.exists() else None)
            run["only_chief_files"] = workdir_files(workdir) == workdir_files(reference)
            run["encoder_max_abs_difference"] = (
                max_abs_difference(encoder_weights(workdir), expected)
                if run["final_steps"] else None)
            runs.append(run)
        result["runs"] = runs
        result["all_resumed_identical"] = all(
            r.get("final_steps") == options.max_steps and r["encoder_max_abs_difference"] == 0.0
            and r["only_chief_files"] and r["survivor_exit_code"] not in (0, None)
            for r in runs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
