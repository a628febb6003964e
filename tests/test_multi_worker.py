"""`--strategy=multi_worker` end to end: two worker processes on localhost (TF_CONFIG, free ports,
one CPU thread each) on the tiny demo config.

* only the chief writes the workdir (checkpoints, encoder, config, summary, train.log,
  TensorBoard, knn_eval.json); no worker's temporary directory remains;
* two workers = one process with two replicas (MirroredStrategy over 2 logical CPUs) on the same
  global batch, with `--input_pipeline_per_replica` so that replica r reads what worker r reads:
  the same losses and the same encoder, bit for bit (a sum of two values does not depend on the
  order of the all-reduce, and both runs use training.deterministic);
* a SIGKILLed worker stops the other (one error line, within `STOP_LIMIT_SECONDS`), and
  restarting both resumes from the chief's last checkpoint and ends bit-identical to the
  uninterrupted run (the full check: benchmarks/multi_worker_faults.py);
* linear evaluation under two workers writes only on the chief.

The online probe is on (the demo's setting): its per-step loss and top-1 are compared too, which
checks that under MirroredStrategy each replica's probe trains on its own replica's features.
"""

import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks.multi_worker_faults import (
    STOP_LIMIT_SECONDS,
    TINY,
    checkpoint_steps,
    encoder_weights,
    max_abs_difference,
    start_workers,
    wait_all,
    workdir_files,
    worker_env,
)
from tests.conftest import REPO

STEPS = 4
ARGS = [*TINY, f"--config.training.max_steps={STEPS}", "--config.training.checkpoint_every_steps=2",
        "--config.training.log_every_steps=1",
        "--collective_timeout_seconds=60"]
TIMEOUT = 900
CHIEF_FILES = {"checkpoints/checkpoint", "config.json", "encoder/encoder.weights.h5",
               "encoder/model_config.json", "knn_eval.json", "pretrain_summary.json",
               "train.log", "tensorboard/train/events",
               *(f"checkpoints/ckpt-{s}.{e}" for s in (2, 4)
                 for e in ("index", "data-00000-of-00001"))}


def _read(path):
    return path.read_text() if path.exists() else ""


def _errors(logs) -> str:
    """The end of each worker's stderr, for a failed assertion."""
    return "\n".join(f"worker {i}: " + _read(pathlib.Path(logs, f"worker{i}.err"))[-2000:]
                     for i in range(2))


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """The uninterrupted two-worker run: (workdir, exit codes, stdout of each worker)."""
    root = tmp_path_factory.mktemp("multi_worker")
    workdir, logs = root / "run", root / "logs"
    codes = wait_all(start_workers([*ARGS, f"--workdir={workdir}"], log_dir=str(logs)), TIMEOUT)
    return workdir, codes, [_read(logs / f"worker{i}.out") for i in range(2)], logs


def test_two_workers_train_and_only_the_chief_writes(two_workers):
    workdir, codes, stdout, logs = two_workers
    assert codes == [0, 0], _errors(logs)
    assert workdir_files(workdir) == CHIEF_FILES  # no workertemp_1 left, nothing else
    assert json.loads((workdir / "pretrain_summary.json").read_text())["steps"] == STEPS
    assert "kNN top-1" in stdout[0] and f"step {STEPS}/{STEPS}" in stdout[0]
    assert "Worker 1 of 2" in stdout[1] and "kNN top-1" not in stdout[1]


def test_two_workers_equal_one_process_with_two_replicas(two_workers, tmp_path):
    workdir, codes, _, _ = two_workers
    assert codes == [0, 0]
    out = subprocess.run(
        [sys.executable, "-m", "relicv2_tf.cli.pretrain", *ARGS, f"--workdir={tmp_path}",
         "--strategy=mirrored", "--num_cpu_replicas=2", "--input_pipeline_per_replica"],
        cwd=REPO, env=worker_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert workdir_files(tmp_path) == CHIEF_FILES
    multi = json.loads((workdir / "pretrain_summary.json").read_text())["history"]
    single = json.loads((tmp_path / "pretrain_summary.json").read_text())["history"]
    assert {"probe_loss", "probe_top1"} <= set(multi)
    assert set(multi) == set(single)
    for key in multi:
        assert multi[key] == single[key], key  # per-interval means, bit for bit
    lines = [line for line in (workdir / "train.log").read_text().splitlines()
             if line.startswith("step ")]
    mirrored_lines = [line for line in (tmp_path / "train.log").read_text().splitlines()
                      if line.startswith("step ")]
    assert [line.split("|")[2] for line in lines] == [line.split("|")[2]
                                                     for line in mirrored_lines]  # per step
    assert max_abs_difference(encoder_weights(workdir), encoder_weights(tmp_path)) == 0.0


def test_a_killed_worker_stops_the_job_and_a_restart_resumes_it(two_workers, tmp_path):
    reference, codes, _, _ = two_workers
    assert codes == [0, 0]
    args, logs = [*ARGS, f"--workdir={tmp_path / 'run'}"], str(tmp_path / "logs")
    workers = start_workers(args, log_dir=logs)
    deadline = time.time() + TIMEOUT
    while (time.time() < deadline and not checkpoint_steps(tmp_path / "run")
           and all(w.poll() is None for w in workers)):
        time.sleep(0.1)
    assert all(w.poll() is None for w in workers), "a worker ended before the kill"
    workers[1].send_signal(signal.SIGKILL)  # the non-chief, right after the first checkpoint
    workers[1].wait()
    started = time.time()
    assert wait_all(workers[:1], STOP_LIMIT_SECONDS) == [2], _errors(logs)  # no hang
    assert time.time() - started < STOP_LIMIT_SECONDS
    error = _read(tmp_path / "logs" / "worker0.err")
    assert "relicv2-pretrain: worker 0 of 2: the job lost a worker" in error, error[-3000:]
    saved = checkpoint_steps(tmp_path / "run")
    assert saved and saved[-1] < STEPS

    assert wait_all(start_workers(args, log_dir=logs), TIMEOUT) == [0, 0], _errors(logs)
    assert f"at step {saved[-1]}/{STEPS}" in _read(tmp_path / "logs" / "worker0.out")
    assert json.loads((tmp_path / "run" / "pretrain_summary.json").read_text())["steps"] == STEPS
    assert workdir_files(tmp_path / "run") == CHIEF_FILES
    difference = max_abs_difference(encoder_weights(tmp_path / "run"), encoder_weights(reference))
    assert difference == 0.0, difference


def test_linear_eval_two_workers_writes_only_on_the_chief(tmp_path):
    args = ["--config=experiments/configs/linear_eval_demo.py", "--config.random_init=True",
            "--config.linear.num_epochs=2", "--config.linear.checkpoint_every_steps=2",
            f"--output_dir={tmp_path / 'out'}", "--progress=false"]
    logs = tmp_path / "logs"
    codes = wait_all(start_workers(args, module="relicv2_tf.cli.linear_eval", log_dir=str(logs)),
                     TIMEOUT)
    assert codes == [0, 0], _errors(logs)
    files = workdir_files(tmp_path / "out")
    assert {"linear_eval.json", "linear_head.keras", "checkpoints/checkpoint"} <= files
    assert all(name.startswith("checkpoints/ckpt-") for name in files - {
        "linear_eval.json", "linear_head.keras", "checkpoints/checkpoint"}), files
    result = json.loads((tmp_path / "out" / "linear_eval.json").read_text())
    assert 0.0 < result["metrics"]["top1"] <= 1.0
    # Both workers computed the same metrics (features gathered over both replicas).
    assert all(result["summary"] in _read(logs / f"worker{i}.out") for i in range(2))
    assert np.isfinite(result["details"]["epoch_losses"]).all()


TRAINING_EVALS = {
    "finetune": ["--config=experiments/configs/finetune_imagenet_1pct.py",
                 "--config.random_init=True", "--config.model.depth=18",
                 "--config.model.width_multiplier=0.25", "--config.num_classes=10",
                 "--config.data.source=digits", "--config.data.tfds_name=",
                 "--config.test_data.source=digits", "--config.test_data.tfds_name=",
                 "--config.test_split=test", "--config.resize_size=32",
                 "--config.finetune.image_size=32", "--config.data.num_examples=128",
                 "--config.finetune.batch_size=32", "--config.finetune.num_epochs=1",
                 "--config.finetune.decay_epochs=()"],
    "supervised": ["--config=experiments/configs/supervised_demo.py",
                   "--config.supervised.num_epochs=1", "--config.data.num_examples=128"],
}


@pytest.mark.parametrize("protocol", sorted(TRAINING_EVALS))
def test_finetune_and_supervised_two_workers_write_only_on_the_chief(protocol, tmp_path):
    logs, out = tmp_path / "logs", tmp_path / "out"
    args = [*TRAINING_EVALS[protocol], f"--output_dir={out}", "--progress=false"]
    codes = wait_all(start_workers(args, module=f"relicv2_tf.cli.{protocol}",
                                   log_dir=str(logs)), TIMEOUT)
    assert codes == [0, 0], _errors(logs)
    files = workdir_files(out)
    assert f"{protocol}.json" in files and not any("workertemp" in name for name in files), files
    result = json.loads((out / f"{protocol}.json").read_text())
    assert 0.0 < result["metrics"]["top1"] <= 1.0
    assert all(result["summary"] in _read(logs / f"worker{i}.out") for i in range(2))


# ------------------------------------------------------------------ in-process: the role rules
def test_worker_roles_and_where_each_writes(tmp_path):
    from relicv2_tf import distribute

    assert distribute.worker_role() == distribute.WorkerRole(None, 0, 1)  # one process: chief
    chief, other = distribute.WorkerRole("worker", 0, 2), distribute.WorkerRole("worker", 1, 2)
    assert chief.is_chief and not other.is_chief
    assert distribute.WorkerRole("chief", 0, 3).is_chief
    assert not distribute.WorkerRole("worker", 0, 3)._replace(task_type="evaluator").is_chief
    assert chief.write_dir(str(tmp_path)) == str(tmp_path)
    assert other.write_dir(str(tmp_path)) == str(tmp_path / "workertemp_1")
    (tmp_path / "workertemp_1").mkdir()
    chief.remove_worker_dir(str(tmp_path))  # the chief's own directory is never removed
    assert (tmp_path / "workertemp_1").is_dir()
    other.remove_worker_dir(str(tmp_path))
    assert not (tmp_path / "workertemp_1").exists()


def test_a_non_chief_saves_into_a_temporary_directory_and_removes_it(tmp_path):
    import tensorflow as tf

    from relicv2_tf import checkpointing, distribute

    variable = tf.Variable([1.0, 2.0])
    directory = str(tmp_path / "checkpoints")
    def checkpoints(task):
        return checkpointing.Checkpoints(tf.train.Checkpoint(v=variable), directory, 2,
                                         lambda: [variable],
                                         role=distribute.WorkerRole("worker", task, 2))

    chief = checkpoints(0)
    assert chief.save(2) and not chief.save(2)  # a step is saved once
    other = checkpoints(1)
    assert other.saved_step == 2 and other.latest.endswith("ckpt-2")  # reads the chief's
    variable.assign([3.0, 4.0])
    assert other.save(4)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]  # nothing of worker 1
    other.restore()
    assert variable.numpy().tolist() == [1.0, 2.0]
    (tmp_path / "checkpoints" / "workertemp_1" / "ckpt-6_temp").mkdir(parents=True)
    checkpoints(1)
    assert not (tmp_path / "checkpoints" / "workertemp_1").exists()  # a killed save's leftovers


def test_the_nonfinite_policy_decides_and_names_the_settings():
    from relicv2_tf import checkpointing
    from relicv2_tf.optim import guard

    skip = checkpointing.NonFinitePolicy("skip_step", 3, "training")
    assert skip.after_nonfinite_step(7, 1, 2, "ckpt-6") is None
    error = skip.after_nonfinite_step(8, 2, 3, "runs/x/checkpoints/ckpt-6")
    assert isinstance(error, guard.NonFiniteError)
    assert str(error).startswith("Step 8: non-finite loss or gradients")
    assert "training.max_consecutive_nonfinite=3" in str(error)
    assert "runs/x/checkpoints/ckpt-6" in str(error)
    stop = checkpointing.NonFinitePolicy("stop")
    assert "linear step 2: non-finite loss (nan)" in str(
        stop.after_nonfinite_step(2, 1, 1, None, what="linear", loss=float("nan")))
    with pytest.raises(ValueError, match="on_nonfinite='ignore' is not one of"):
        checkpointing.NonFinitePolicy("ignore").check()


def test_multi_worker_without_tf_config_and_per_replica_input_elsewhere_are_refused(monkeypatch):
    import tensorflow as tf

    from relicv2_tf import distribute, train

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.get_strategy("multi_worker")
    with pytest.raises(ValueError, match="--input_pipeline_per_replica needs --strategy=mirrored"):
        train.input_options_for(tf.distribute.get_strategy(), True)
    assert train.input_options_for(tf.distribute.get_strategy(), False) is None
