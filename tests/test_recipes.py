"""Paper recipes: nothing a config turns on is silently off, and every config matches
docs/RECIPES.md."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from relicv2_tf import config as config_lib
from relicv2_tf.data import tfrecord_format, views
from tests.conftest import REPO, tiny_config


def _validate_error(config):
    with pytest.raises(ValueError) as error:
        config_lib.validate(config)
    return str(error.value)


@pytest.mark.parametrize("feature", ["mask_apply_prob", "bg_rm_prob", "bg_random_prob"])
def test_mask_features_on_a_source_without_masks_are_refused(feature, tmp_path):
    (tmp_path / "cats").mkdir()
    config = tiny_config(**{"data.source": "image_folder", "data.data_dir": str(tmp_path),
                            "data.mask_apply_prob": 0.0, f"data.{feature}": 0.2})
    message = _validate_error(config)
    assert f"data.{feature}=0.2" in message
    assert "relicv2-saliency" in message and "data.mask_dir" in message
    assert f"--config.data.{feature}=0" in message  # the way to switch it off, visibly
    config.data.mask_dir = str(tmp_path)
    config_lib.validate(config)  # with masks it is a valid recipe


def test_mask_apply_prob_zero_needs_no_masks(tmp_path):
    (tmp_path / "cats").mkdir()
    config_lib.validate(tiny_config(**{"data.source": "image_folder",
                                       "data.data_dir": str(tmp_path),
                                       "data.mask_apply_prob": 0.0}))


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_tfrecord_shards_without_masks_are_refused_before_training(tmp_path):
    """TFRecord shards can only tell by their content: the pipeline refuses, never logs."""
    path = tmp_path / "train-00000.tfrecord"
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(4):
            image = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            writer.write(tfrecord_format.encode_example(_png(image), f"x{i}", label=0))
    config = tiny_config(**{"data.source": "tfrecord", "data.data_dir": str(path)})
    config_lib.validate(config)  # content unknown to the static check
    with pytest.raises(ValueError, match="data.mask_apply_prob=0.1: uses a foreground mask"):
        views.pretrain_dataset(config.data, batch_size=2, seed=0)
    config.data.mask_apply_prob = 0.0
    views.pretrain_dataset(config.data, batch_size=2, seed=0)


def test_flagship_config_stops_before_training_without_mask_shards(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [sys.executable, "-m", "relicv2_tf.cli.pretrain",
         "--config=experiments/configs/relicv2_r50_imagenet.py", f"--workdir={tmp_path}"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert out.returncode == 2
    assert "relicv2-saliency --stage=generate" in out.stderr
    assert "--config.data.data_dir=" in out.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_flagship_config_on_tfds_names_the_masks_it_lacks():
    from experiments.configs import relicv2_r50_imagenet
    config = relicv2_r50_imagenet.get_config()
    config.data.source, config.data.tfds_name = "tfds", "imagenet2012"
    message = _validate_error(config)
    assert "data.mask_apply_prob=0.1" in message and "--config.data.mask_apply_prob=0" in message


@pytest.mark.parametrize("overrides,message", [
    ({"training.target_ema_schedule": "linear"}, "target_ema_schedule='linear'"),
    ({"training.base_target_ema": 1.5}, "base_target_ema=1.5"),
    ({"evaluation.knn_every_steps": 3}, "multiple of training.checkpoint_every_steps=2"),
    ({"evaluation.knn_every_steps": 2, "evaluation.knn_source": "tfrecord"},
     "needs labelled train and held-out splits"),
    ({"evaluation.knn_every_steps": 2, "evaluation.knn_source": "tfds"},
     "needs evaluation.knn_tfds_name"),
])
def test_bad_ema_and_knn_settings_are_refused(overrides, message):
    assert message in _validate_error(tiny_config(**overrides))


def test_a_swav_queue_that_would_never_start_is_refused():
    """A queue configured to start at or after the run's end is an error, not a silent no-op
    (checked on the config for epoch-based runs and by the model for step-based ones)."""
    import importlib

    from relicv2_tf.methods import build_method, swav

    config = importlib.import_module("experiments.configs.swav").get_config()
    config.loss.queue_size, config.training.num_epochs = 3840, 15
    config.training.batch_size = 256
    config.loss.queue_start_epochs = 15.0
    assert "the queue would never be used" in _validate_error(config)
    config.loss.queue_start_epochs = 1.125
    config_lib.validate(config)
    config.model.depth, config.model.width_multiplier = 18, 0.25
    config.loss.queue_start_epochs = 3.0  # step 150 of a 100-step run at 50 steps per epoch
    with pytest.raises(ValueError, match="starts at step 150 .* never be used"):
        build_method(config, total_steps=100, steps_per_epoch=50.0)
    with pytest.raises(ValueError, match="never be used"):
        swav.SwAV(config.model, config.loss, total_steps=100, queue_start_steps=100,
                  freeze_prototypes_steps=0)


def test_each_method_owns_its_loss_section():
    """A config selects its method and gets the method's own loss defaults; the paper configs
    state only what differs (none of the baselines changes its loss section)."""
    import importlib

    from relicv2_tf.methods import METHODS

    for name, method in METHODS.items():
        config = config_lib.get_default_config(name)
        assert config.method == name
        assert config.loss.to_dict() == method.loss_config().to_dict()
    assert config_lib.get_default_config().loss.to_dict() == (
        METHODS["relicv2"].loss_config().to_dict())
    for name in ("byol", "moco_v2", "simclr", "swav"):
        paper = importlib.import_module(f"experiments.configs.{name}").get_config()
        assert paper.loss.to_dict() == METHODS[name].loss_config().to_dict(), name
    with pytest.raises(ValueError, match="'dino' is not one of"):
        config_lib.get_default_config("dino")


def test_a_method_switched_without_its_loss_section_is_refused():
    config = tiny_config()
    config.method = "swav"  # the loss section is still ReLICv2's
    message = _validate_error(config)
    assert "loss keys" in message and "get_default_config('swav')" in message


def test_swav_epochs_become_steps_in_one_place():
    from relicv2_tf.optim import schedules

    assert schedules.epochs_to_steps(1.125, 9469 / 128) == 83  # 83.2 steps
    assert schedules.epochs_to_steps(1.0, 4096 * 313 / 4096) == 313
    assert schedules.RunLength(10, 4.0).steps(0.5, "x") == 2
    with pytest.raises(ValueError, match="loss.queue_start_epochs=15.0 is given in epochs"):
        schedules.RunLength(100).steps(15.0, "loss.queue_start_epochs")


def test_config_files_load_without_tensorflow():
    """Config files (and so --help, --print_config and the command line's checks) run before
    TensorFlow starts: the method's loss defaults and the data defaults import none of it."""
    code = ("import sys\n"
            "from experiments.configs import byol, demo, moco_v2, relicv2_r50_imagenet, simclr, "
            "swav\n"
            "for module in (byol, demo, moco_v2, relicv2_r50_imagenet, simclr, swav):\n"
            "    module.get_config()\n"
            "loaded = sorted(m for m in sys.modules\n"
            "                if m.split('.')[0] in ('tensorflow', 'keras'))\n"
            "assert not loaded, loaded[:5]\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
