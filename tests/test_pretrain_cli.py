"""`relicv2-pretrain` end to end: run, checkpoint, SIGKILL mid-run, resume; bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

TINY = [
    "--config=experiments/configs/demo.py",
    "--config.model.width_multiplier=0.25",
    "--config.model.projector_hidden_dim=32",
    "--config.model.projector_output_dim=16",
    "--config.model.predictor_hidden_dim=32",
    "--config.data.num_large_views=2",
    "--config.data.num_small_views=1",
    "--config.training.batch_size=16",
    "--config.loss.num_negatives=5",
    "--config.training.deterministic=false",  # op determinism has its own test below
]


def _run(args, timeout=600, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "relicv2_tf.cli.pretrain", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
                          **kwargs)


def _checkpoint_steps(workdir):
    return sorted(int(p.name.split("-")[1].split(".")[0])
                  for p in Path(workdir, "checkpoints").glob("ckpt-*.index"))


def test_pretrain_end_to_end_writes_everything(tmp_path):
    out = _run([*TINY, f"--workdir={tmp_path}", "--config.training.max_steps=4",
                "--config.training.checkpoint_every_steps=2", "--config.data.num_examples=200",
                "--config.evaluation.knn_every_steps=2"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "kNN top-1" in out.stdout and "random-init" in out.stdout
    assert _checkpoint_steps(tmp_path) == [2, 4]
    assert (tmp_path / "encoder" / "encoder.weights.h5").exists()
    events = list((tmp_path / "tensorboard").rglob("events.out.tfevents*"))
    assert events
    summary = json.loads((tmp_path / "pretrain_summary.json").read_text())
    assert summary["steps"] == 4
    # The kNN monitor ran at steps 2 and 4: console, history and TensorBoard.
    assert "| kNN top-1" in out.stdout
    assert len(summary["history"]["knn_top1"]) == 2
    assert all(0.0 < v <= 1.0 for v in summary["history"]["knn_top1"])
    import tensorflow as tf
    tags = {value.tag for path in events for event in tf.compat.v1.train.summary_iterator(
        str(path)) for value in event.summary.value}
    assert "knn_top1" in tags, tags
    knn = json.loads((tmp_path / "knn_eval.json").read_text())
    assert 0.0 <= knn["pretrained_top1"] <= 1.0


def test_sigkill_then_resume_reaches_the_same_step(tmp_path):
    args = [*TINY, f"--workdir={tmp_path}", "--config.training.max_steps=12",
            "--config.training.checkpoint_every_steps=3", "--knn_eval=false"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "relicv2_tf.cli.pretrain", *args], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not _checkpoint_steps(tmp_path):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # mid-run: after the first checkpoint, before the end
    proc.wait()
    saved = _checkpoint_steps(tmp_path)
    assert saved and saved[-1] < 12, saved
    out = _run(args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Resumed from" in out.stdout and f"at step {saved[-1]}/12" in out.stdout
    assert json.loads((tmp_path / "pretrain_summary.json").read_text())["steps"] == 12
    assert _checkpoint_steps(tmp_path)[-1] == 12
    # A rerun after completion trains nothing and keeps the step count.
    again = _run(args)
    assert again.returncode == 0 and "at step 12/12" in again.stdout


@pytest.mark.parametrize("args,message", [
    (["--config.data.source=image_folder", "--config.data.data_dir=/nonexistent/images"],
     "data.data_dir='/nonexistent/images' is not a directory"),
    (["--config.training.batch_size=15", "--strategy=mirrored", "--num_cpu_replicas=2"],
     "not divisible by the 2 replicas"),
    (["--config.data.no_such_key=1"], "no_such_key"),
    (["--config.loss.num_negatives=64"], "num_negatives=64 must be < training.batch_size"),
    (["--config.method=dino"], "method='dino'"),
    (["--config.method=moco_v2"], "experiments/configs/demo.py:moco_v2"),  # not moco's loss
])
def test_bad_input_stops_with_a_clear_message(tmp_path, args, message):
    out = _run([*TINY, f"--workdir={tmp_path}", *args], timeout=300)
    assert out.returncode != 0
    assert message in out.stderr + out.stdout, (out.stderr + out.stdout)[-2000:]
    assert not (tmp_path / "checkpoints").exists()  # stopped before any training


def test_empty_image_folder_is_refused(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    out = _run([*TINY, f"--workdir={tmp_path / 'run'}", "--config.data.source=image_folder",
                f"--config.data.data_dir={tmp_path / 'images'}",
                "--config.data.mask_apply_prob=0"], timeout=300)
    assert out.returncode != 0
    assert str(tmp_path / "images") in out.stderr + out.stdout
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_flags_are_explained():
    out = _run(["--config=experiments/configs/demo.py"], timeout=300)
    assert out.returncode != 0 and "--workdir" in out.stderr


DETERMINISM_SCRIPT = """
import json, sys
import numpy as np
from relicv2_tf import train
from relicv2_tf.models import encoder_io
from tests.conftest import tiny_config

root = sys.argv[1]
weights = {}
for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    config = tiny_config(**{"seed": seed, "training.deterministic": True,
                            "training.max_steps": 3, "data.num_examples": 96})
    train.pretrain(config, f"{root}/{name}", verbose=0)
    weights[name] = encoder_io.load_encoder(f"{root}/{name}/encoder").get_weights()
same = all(np.array_equal(x, y) for x, y in zip(weights["a"], weights["b"]))
differ = any(not np.array_equal(x, y) for x, y in zip(weights["a"], weights["c"]))
print(json.dumps({"same_seed_identical": same, "other_seed_differs": differ}))
"""


def test_same_seed_gives_bit_identical_encoders_with_training_deterministic(tmp_path):
    # Initial weights come from config.seed (keras.utils.set_random_seed) and the data from the
    # pipeline's stateless seeds; training.deterministic adds TF op determinism. Own process:
    # op determinism cannot be switched off again.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT, str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"same_seed_identical": True, "other_seed_differs": True}
