"""Each protocol's library entry point `run(config, output_dir)` (no absl), and the commands'
shared error path (`cli/common.py`)."""

import os
import re
import subprocess
import sys

import keras
import pytest

from experiments.configs import backgrounds_imagenet9, linear_eval_demo
from experiments.configs import robustness as robustness_config
from experiments.configs import transfer as transfer_config
from relicv2_tf.evaluation import (
    backgrounds,
    inputs,
    linear,
    linear_head,
    results,
    robustness,
    transfer,
)
from relicv2_tf.saliency import pipeline
from tests.conftest import REPO
from tests.test_eval_protocols import write_image_folder

TINY_MODEL = {"model.depth": 18, "model.width_multiplier": 0.25}


def configured(config, **overrides):
    """`config` with dotted-key overrides, e.g. configured(c, **{"linear.num_epochs": 1})."""
    for key, value in {**TINY_MODEL, **overrides}.items():
        target = config
        *path, leaf = key.split(".")
        for part in path:
            target = target[part]
        target[leaf] = value
    return config


def test_linear_run_writes_its_result_and_a_rerun_resumes_to_the_same_metrics(tmp_path):
    config = configured(linear_eval_demo.get_config(), **{
        "random_init": True, "data.num_examples": 48, "linear.num_epochs": 2,
        "linear.batch_size": 16})
    metrics = linear.run(config, str(tmp_path), progress=False)
    record = results.read_result(str(tmp_path), "linear_eval")
    assert record["metrics"] == metrics and metrics["num_examples"] == 48
    assert record["details"]["num_train_examples"] == 48
    head = keras.models.load_model(tmp_path / linear_head.HEAD_FILE)
    assert head.output_shape == (None, 10)
    # The final checkpoint holds every step: the rerun trains nothing and scores the same head.
    assert linear.run(config, str(tmp_path), progress=False) == metrics
    assert results.read_result(str(tmp_path), "linear_eval")["details"]["epoch_losses"] == []


def test_backgrounds_run_composes_variants_from_digit_masks(tmp_path):
    config = configured(backgrounds_imagenet9.get_config(), **{
        "random_init": True, "mode": "masks", "data.source": "digits", "data.num_examples": 40,
        "test_split": "test", "image_size": 32, "resize_size": 32, "linear.num_epochs": 2,
        "linear.batch_size": 20})
    metrics = backgrounds.run(config, str(tmp_path), progress=False)
    assert set(metrics) == {*backgrounds.VARIANTS, *backgrounds.GREY_VARIANTS, "bg_gap",
                            "bg_gap_grey", "num_classes"}
    assert metrics["num_classes"] == 10
    assert metrics["bg_gap"] == pytest.approx(metrics["mixed_same"] - metrics["mixed_rand"])
    assert results.read_result(str(tmp_path), "backgrounds")["metrics"] == metrics


def test_robustness_run_maps_an_image_folder_like_evaluate_zero_shot(tmp_path):
    wnids = robustness.imagenet_wnids()
    write_image_folder(tmp_path / "imagenet_r", [wnids[7], wnids[300], wnids[999]])
    config = configured(robustness_config.get_config(), **{
        "random_init": True, "datasets": "imagenet_r", "image_size": 32, "resize_size": 36,
        "batch_size": 4, "image_folders.imagenet_r": str(tmp_path / "imagenet_r"),
        "head_path": str(tmp_path / "linear" / linear_head.HEAD_FILE)})
    encoder = inputs.encoder_from_config(config)
    head = linear_head.make_linear_head(int(encoder.output_shape[-1]), 1000, seed=0)
    linear_head.save_head(head, str(tmp_path / "linear"))
    headline = robustness.run(config, str(tmp_path / "out"), progress=False)
    expected = robustness.evaluate_zero_shot(
        encoder, head, inputs.labelled_examples(inputs.data_section(
            source="image_folder", data_dir=str(tmp_path / "imagenet_r"), split=""), None),
        batch_size=4, image_size=32, resize_size=36, progress=False,
        label_map=[7, 300, 999], restrict_to_present_classes=True)
    assert headline == {"imagenet_r": expected["top1"]}
    details = results.read_result(str(tmp_path / "out"), "robustness")["details"]
    assert details["per_set"]["imagenet_r"]["num_examples"] == 9


# name -> (protocol, config overrides, the message naming the setting to fix)
BAD_CONFIGS = {
    "linear": (linear, linear_eval_demo, {}, "--config.encoder_dir is empty"),
    "transfer": (transfer, transfer_config, {"protocol": "linear_eval"},
                 "--config.protocol='linear_eval' is not one of"),
    "robustness-name": (robustness, robustness_config, {"datasets": "imagenet_q"},
                        "unknown test set 'imagenet_q'"),
    "robustness-objectnet": (robustness, robustness_config, {"datasets": "objectnet"},
                             "--config.image_folders.objectnet"),
    "backgrounds": (backgrounds, backgrounds_imagenet9, {"head": "both"}, "--config.head one of"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_runs_stop_at_the_boundary_naming_the_setting(tmp_path, case):
    protocol, config_module, overrides, message = BAD_CONFIGS[case]
    config = configured(config_module.get_config(), **overrides)
    with pytest.raises(ValueError, match=re.escape(message)):
        protocol.run(config, str(tmp_path), progress=False)
    assert not os.listdir(tmp_path)  # nothing written


def test_saliency_stages_stop_at_the_boundary(tmp_path):
    from experiments.configs import saliency_imagenette
    config = saliency_imagenette.get_config()
    config.workdir = str(tmp_path)
    with pytest.raises(ValueError, match="--config.network.encoder_dir=<pretrain workdir>"):
        pipeline.run_stage(config, "refine")
    with pytest.raises(ValueError, match="generate stage only"):
        pipeline.run_stage(config, "priors", num_workers=2)
    with pytest.raises(ValueError, match="not one of"):
        pipeline.run_stage(config, "train")
    config.network.allow_random_init = True
    with pytest.raises(FileNotFoundError, match="run --stage=priors first"):
        pipeline.run_stage(config, "refine")


def _command(module, *args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", f"relicv2_tf.cli.{module}", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def test_commands_print_one_error_line_and_exit_2(tmp_path):
    out = _command("eval", "linear", "--config=experiments/configs/linear_eval_demo.py",
                   f"--output_dir={tmp_path}")
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("relicv2-")]
    assert lines == ["relicv2-eval: --config.encoder_dir is empty; pass the encoder directory "
                     "written by relicv2-pretrain (<workdir>/encoder), or "
                     "--config.random_init=True."]
    assert "Traceback" not in out.stderr
    usage = _command("eval", "linear_eval", "--config=experiments/configs/linear_eval_demo.py",
                     f"--output_dir={tmp_path}")
    assert usage.returncode == 2 and "relicv2-eval: usage: relicv2-eval <linear |" in usage.stderr
    alias = _command("linear_eval", "--config=experiments/configs/linear_eval_demo.py")
    assert alias.returncode == 2
    assert "relicv2-linear-eval: needs --config=<file> and --output_dir=<dir>." in alias.stderr
