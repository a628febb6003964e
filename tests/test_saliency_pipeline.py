"""The saliency pipeline's entry points: the Imagenette config, the CLI's encoder check, the
dev-set quality benchmark."""

import json
import os
import subprocess
import sys

import pytest

from experiments.configs import saliency_imagenette
from relicv2_tf.saliency import generate
from tests.conftest import REPO

# The benchmark script runs from this checkout, installed or not (like the other script tests).
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
       "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


def test_imagenette_config_covers_both_splits_and_needs_an_encoder():
    config = saliency_imagenette.get_config()
    assert config.network.encoder_dir == "" and not config.network.allow_random_init
    assert config.data.image_size % 32 == 0  # the decoder merges stride 4..32 features
    assert tuple(config.generate.splits) == ("train", "val")
    assert config.generate.num_examples == 0  # every image
    assert config.data.data_dir.endswith(os.path.join("imagenette", "train"))


def test_evenly_spaced_subset_spans_the_sorted_list():
    entries = list(range(10))
    assert generate.evenly_spaced(entries, 3) == [0, 4, 9]  # np.round: 4.5 -> 4
    assert generate.evenly_spaced(entries, 0) == entries
    assert generate.evenly_spaced(entries, 50) == entries


def test_refine_without_an_encoder_stops_with_the_flag_to_set(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "relicv2_tf.cli.saliency",
         "--config=experiments/configs/saliency_imagenette.py", "--stage=refine",
         f"--config.workdir={tmp_path}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--config.network.encoder_dir=<pretrain workdir>/encoder" in result.stderr
    assert "allow_random_init=True" in result.stderr


@pytest.mark.shared_data("saliency_dev")
def test_quality_benchmark_prints_every_method_and_metric(data_root):
    result = subprocess.run(
        [sys.executable, "benchmarks/saliency_quality.py", "--folders=salbenchmark_set1",
         "--limit=2", "--image_size=96",
         f"--dev_dir={data_root / 'saliency_dev'}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    folder = report["folders"]["salbenchmark_set1"]
    assert folder["num_images"] == 2
    assert set(folder["methods"]) == {"rbd", "mr", "dsr", "mc", "fused", "centre"}
    for scores in folder["methods"].values():
        assert set(scores) == {"mae", "adaptive_f", "max_f", "mean_f", "s_measure",
                               "adaptive_e", "mean_e", "max_e"}
        assert all(0 <= v <= 1 for v in scores.values())
    assert "criterion_passed" in report


def test_16_bit_png_is_scaled_like_tensorflow_decodes_it():
    """PIL's convert("RGB") clips 16-bit greyscale to white; TF scales it to 8 bits."""
    import io

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from relicv2_tf.saliency import generate

    values = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    ours = generate.decode_rgb(buffer.getvalue())
    reference = tf.io.decode_png(buffer.getvalue(), channels=3, dtype=tf.uint8).numpy()
    np.testing.assert_array_equal(ours, reference)
