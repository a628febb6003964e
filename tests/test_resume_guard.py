"""The resume guard: a rerun into a workdir whose saved config differs in a key that changes the
model, data or optimisation stops with the keys and the fix; safe keys pass with a flag."""

import json
import os
import subprocess
import sys

import pytest

from relicv2_tf import config_tools
from tests.conftest import REPO, tiny_config


def _saved(config):
    return json.loads(config.to_json_best_effort())


def test_same_config_resumes():
    config_tools.check_resume(_saved(tiny_config()), tiny_config(), "w")


@pytest.mark.parametrize("key,value", [("training.batch_size", 32),
                                       ("model.width_multiplier", 0.5),
                                       ("data.image_size", 48), ("loss.temperature", 0.1)])
def test_a_change_to_the_model_data_or_optimisation_is_refused(key, value):
    with pytest.raises(ValueError) as error:
        config_tools.check_resume(_saved(tiny_config()), tiny_config(**{key: value}), "w")
    assert key in str(error.value) and "another --workdir" in str(error.value)
    assert "--allow_config_change" not in str(error.value)  # no flag makes these safe


def test_max_steps_needs_the_explicit_flag():
    saved, longer = _saved(tiny_config()), tiny_config(**{"training.max_steps": 8})
    with pytest.raises(ValueError, match="--allow_config_change=training.max_steps"):
        config_tools.check_resume(saved, longer, "w")
    config_tools.check_resume(saved, longer, "w", allow_changes=("training.max_steps",))


def test_logging_and_monitoring_keys_change_freely():
    changed = tiny_config(**{"training.log_every_steps": 3, "evaluation.knn_every_steps": 2,
                             "training.image_summary_every_steps": 7})
    config_tools.check_resume(_saved(tiny_config()), changed, "w")


def test_a_field_added_since_counts_as_its_default():
    saved = _saved(tiny_config())
    del saved["training"]["image_summary_every_steps"], saved["evaluation"]["online_probe"]
    config_tools.check_resume(saved, tiny_config(), "w")
    with pytest.raises(ValueError, match="evaluation.online_probe"):
        config_tools.check_resume(saved, tiny_config(**{"evaluation.online_probe": True}), "w")


def test_unknown_allowed_key_is_refused():
    with pytest.raises(ValueError, match="only training.max_steps"):
        config_tools.check_resume(_saved(tiny_config()), tiny_config(), "w",
                                  allow_changes=("model.depth",))


def test_cli_stops_before_tensorflow_and_keeps_the_saved_config(tmp_path):
    """A workdir with a checkpoint and a config of batch 128; a rerun with batch 64 stops."""
    from experiments.configs import demo

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    saved = demo.get_config().to_json_best_effort(indent=2)
    (tmp_path / "config.json").write_text(saved)
    out = subprocess.run(
        [sys.executable, "-m", "relicv2_tf.cli.pretrain", "--config=experiments/configs/demo.py",
         f"--workdir={tmp_path}", "--config.training.batch_size=64"],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=dict(os.environ))
    assert out.returncode == 2, out.stderr
    assert "training.batch_size: 128 -> 64" in out.stderr and "another --workdir" in out.stderr
    assert (tmp_path / "config.json").read_text() == saved  # not overwritten
