"""`relicv2-pretrain`: bad input stops with a clear message before any training; the same seed
gives bit-identical encoders (with or without the online probe). A run end to end, and its rerun
after completion: test_train_logging.py; SIGKILL and resume: test_resume.py (bit-identical, one
device) and test_multi_worker.py (the CLI under two workers)."""

import json
import os
import subprocess
import sys
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
weights, summaries = {}, {}
for name, seed, probe in (("a", 0, False), ("b", 0, True), ("c", 1, False)):
    config = tiny_config(**{"seed": seed, "training.deterministic": True,
                            "training.max_steps": 3, "data.num_examples": 96,
                            "evaluation.online_probe": probe,
                            "training.image_summary_every_steps": 1 if probe else 0})
    _, summaries[name] = train.pretrain(config, f"{root}/{name}", verbose=0)
    weights[name] = encoder_io.load_encoder(f"{root}/{name}/encoder").get_weights()
same = all(np.array_equal(x, y) for x, y in zip(weights["a"], weights["b"]))
differ = any(not np.array_equal(x, y) for x, y in zip(weights["a"], weights["c"]))
print(json.dumps({"same_seed_identical": same, "other_seed_differs": differ,
                  "probe_logged": "probe_top1" in summaries["b"]["history"]}))
"""


def test_same_seed_gives_bit_identical_encoders_with_or_without_the_online_probe(tmp_path):
    # Initial weights come from config.seed (keras.utils.set_random_seed) and the data from the
    # pipeline's stateless seeds; training.deterministic adds TF op determinism. Run b also
    # trains the online probe and writes image summaries every step, which must leave the
    # encoder's trajectory bit for bit unchanged. Own process: op determinism cannot be
    # switched off again.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT, str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"same_seed_identical": True, "other_seed_differs": True,
                      "probe_logged": True}
