"""Shared test fixtures: quiet TensorFlow, tiny configs, the ../shared location."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Before TensorFlow starts: on CPUs with AMX-BF16 or AVX512-BF16 the tests run Eigen kernels
# (oneDNN's bfloat16 kernels turned NaN on AMX and are not deterministic on AVX512-BF16;
# relicv2_tf/distribute.py says why).
from relicv2_tf import distribute  # noqa: E402  (does not import TensorFlow)

distribute.avoid_onednn_bfloat16()

import pytest  # noqa: E402
from experiments.configs.common import set_fields  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: large Keras builds (~7 s each); deselect with -m 'not slow'")


def tiny_config(**overrides):
    """A ReLICv2 config small enough for a CPU test: ResNet-18/4 at 32 px, 2+1 views."""
    from relicv2_tf import config as config_lib

    config = config_lib.get_default_config()
    config.data.source = "digits"
    config.data.image_size = 32
    config.data.small_image_size = 16
    config.data.num_large_views = 2
    config.data.num_small_views = 1
    config.data.cache = True
    config.data.shuffle_buffer = 256
    config.model.depth = 18
    config.model.width_multiplier = 0.25
    config.model.synchronized_bn = False
    config.model.projector_hidden_dim = 32
    config.model.projector_output_dim = 16
    config.model.predictor_hidden_dim = 32
    config.loss.num_negatives = 5
    config.training.batch_size = 16
    config.training.max_steps = 4
    config.training.checkpoint_every_steps = 2
    config.optimizer.warmup_epochs = 0
    return set_fields(config, overrides)


@pytest.fixture
def shared_dir():
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent (it exists beside the project in CI, not in a user's "
                    "clone)")
    return SHARED
