"""Pretraining runs through the data pipeline from each kind of source: TFDS, ImageFolder and
TFRecord shards carrying saliency masks (with masking and background augmentations on)."""

import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf import train
from relicv2_tf.data import tfrecord_format
from tests.conftest import tiny_config


def _png(array):
    return tf.io.encode_png(array).numpy()


def _steps_done(workdir, config):
    _, summary = train.pretrain(config, str(workdir), verbose=0)
    return summary


def test_pretrain_from_tfds(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from relicv2_tf.data import sources
    # mock_data fakes the examples, not the split metadata that counts them.
    monkeypatch.setattr(sources, "num_examples", lambda data_config, split=None: 32)
    config = tiny_config(**{"data.source": "tfds", "data.tfds_name": "mnist",
                            "data.num_examples": 32, "training.max_steps": 2,
                            "data.mask_apply_prob": 0.0})  # TFDS has no masks
    with tfds.testing.mock_data(num_examples=32):
        summary = _steps_done(tmp_path, config)
    assert summary["steps"] == 2 and np.isfinite(summary["history"]["loss"]).all()


def test_pretrain_from_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(10):
            (tmp_path / "images" / c / f"{i}.png").write_bytes(
                _png(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)))
    config = tiny_config(**{"data.source": "image_folder",
                            "data.data_dir": str(tmp_path / "images"),
                            "training.max_steps": 2, "data.mask_apply_prob": 0.0})
    summary = _steps_done(tmp_path / "run", config)
    assert summary["steps"] == 2


def test_pretrain_from_mask_tfrecords_with_masking_and_bg_augmentations(tmp_path):
    rng = np.random.default_rng(1)
    path = str(tmp_path / "train-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(24):
            image = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            mask = np.zeros((40, 40, 1), np.uint8)
            mask[8:32, 10:30] = 255
            writer.write(tfrecord_format.encode_example(
                _png(image), f"id{i}", label=i % 3, mask=_png(mask)))
    config = tiny_config(**{"data.source": "tfrecord",
                            "data.data_dir": str(tmp_path / "*.tfrecord"),
                            "data.mask_apply_prob": 0.5, "data.bg_rm_prob": 0.3,
                            "data.bg_random_prob": 0.3, "training.max_steps": 2})
    summary = _steps_done(tmp_path / "run", config)
    assert summary["steps"] == 2 and np.isfinite(summary["history"]["loss"]).all()
