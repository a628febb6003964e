"""`relicv2-pretrain` end to end on the tiny demo (one run, shared by the tests of this module):
what it writes (checkpoints, encoder, summary, kNN), what it reports (plain lines, no \\r and no
escape codes, when stdout is a file; train.log; TensorBoard on the step axis: scalars, the views
image, hparams, kNN), and a rerun after completion, which trains nothing. That the online probe
leaves the encoder bit for bit unchanged is checked with op determinism in
test_pretrain_cli.py."""

import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.conftest import REPO
from tests.test_pretrain_cli import TINY, _checkpoint_steps


def _events(workdir):
    import tensorflow as tf

    steps = defaultdict(list)
    values = defaultdict(list)
    for path in sorted((workdir / "tensorboard").rglob("events.out.tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps[value.tag].append(event.step)
                if value.HasField("tensor") and value.metadata.plugin_data.plugin_name == "scalars":
                    values[value.tag].append(float(tf.make_ndarray(value.tensor)))
    return steps, values


ARGS = [*TINY, "--config.training.max_steps=4", "--config.training.checkpoint_every_steps=2",
        "--config.training.log_every_steps=2", "--config.data.num_examples=200",
        "--config.evaluation.knn_every_steps=2", "--config.evaluation.online_probe=True",
        "--config.training.image_summary_every_steps=2", "--config.optimizer.warmup_epochs=0"]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    with open(workdir.parent / "stdout.log", "w") as stdout:  # not a terminal, as on a cluster
        out = subprocess.run(
            [sys.executable, "-m", "relicv2_tf.cli.pretrain", *ARGS, f"--workdir={workdir}"],
            stdout=stdout, stderr=subprocess.STDOUT, timeout=600, cwd=REPO, env=env)
    log = (workdir.parent / "stdout.log").read_bytes()
    assert out.returncode == 0, log[-3000:]
    return workdir, log


def test_a_non_terminal_log_is_plain_lines(logged_run):
    workdir, log = logged_run
    assert b"\r" not in log and b"\x1b[" not in log and b"\x08" not in log, log[:2000]
    text = log.decode()
    for noise in ("cuInit", "oneDNN custom operations", "shuffle=True", "Sharding callback"):
        assert noise not in text, text
    lines = [line for line in text.splitlines() if line.startswith("step ")]
    steps = [line.split(" |")[0] for line in lines]
    assert steps == ["step 2/4", "step 2/4", "step 4/4", "step 4/4"]
    line = lines[-2]  # step 4: epoch as a fraction of the data, loss terms, lr, speed, ETA
    assert re.search(r"epoch 0\.\d+/0\.\d+", line) and "loss " in line and "probe_top1 " in line
    assert "lr 0.0000" in line and "img/s" in line and "ETA" in line  # cosine ends at 0
    assert "kNN top-1" in lines[-1]
    train_log = (workdir / "train.log").read_text()
    assert all(line in train_log for line in lines) and "pretrained" in train_log


def test_tensorboard_has_scalars_on_steps_the_views_and_hparams(logged_run):
    workdir, _ = logged_run
    steps, values = _events(workdir)
    for tag in ("loss", "contrastive", "invariance", "learning_rate", "target_ema",
                "probe_top1", "images_per_second"):
        assert steps[tag] == [2, 4], (tag, dict(steps))
    assert steps["knn_top1"] == [2, 4]
    assert steps["final_knn_top1"] == [4] and steps["final_knn_top1_random_init"] == [4]
    assert values["learning_rate"][-1] == 0.0  # the schedule's value, not an interval mean
    assert steps["views"] == [1, 2, 4]
    assert "_hparams_/session_start_info" in steps


def test_view_grid_layout():
    import tensorflow as tf

    from relicv2_tf import train_logging

    n, size = 3, 8
    grid = train_logging.view_grid(tf.zeros([n, 12, 12, 3]), tf.ones([n, 12, 12, 3]),
                                   tf.fill([n, 2, size, size, 3], 0.5),
                                   tf.ones([n, 1, 4, 4, 3]))
    assert grid.dtype == tf.uint8 and grid.shape == [1, n * (size + 2), 5 * (size + 2), 3]


def test_a_run_writes_checkpoints_encoder_summary_and_knn(logged_run):
    workdir, log = logged_run
    text = log.decode()
    assert "kNN top-1" in text and "random-init" in text
    assert _checkpoint_steps(workdir) == [2, 4]
    assert (workdir / "encoder" / "encoder.weights.h5").exists()
    summary = json.loads((workdir / "pretrain_summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["history_steps"] == [2, 4]
    assert len(summary["history"]["knn_top1"]) == 2  # the kNN monitor ran at steps 2 and 4
    assert all(0.0 < v <= 1.0 for v in summary["history"]["knn_top1"])
    knn = json.loads((workdir / "knn_eval.json").read_text())
    assert 0.0 <= knn["pretrained_top1"] <= 1.0


def test_a_rerun_after_completion_trains_nothing_and_keeps_the_history(logged_run, tmp_path):
    workdir, _ = logged_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    before = json.loads((copy / "pretrain_summary.json").read_text())
    out = subprocess.run(
        [sys.executable, "-m", "relicv2_tf.cli.pretrain", *ARGS, f"--workdir={copy}",
         "--knn_eval=false"], capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Resumed from" in out.stdout and "at step 4/4" in out.stdout
    assert "step 2/4" not in out.stdout and _checkpoint_steps(copy) == [2, 4]
    after = json.loads((copy / "pretrain_summary.json").read_text())
    assert after["steps"] == 4
    assert (after["history"], after["history_steps"]) == (before["history"],
                                                         before["history_steps"])
