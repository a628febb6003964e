"""Shared test fixtures: quiet TensorFlow, tiny configs, the real data under ../shared/data.

Real data (Imagenette, the saliency dev set) live under `experiments.configs.common.data_root()`:
$RELICV2_DATA_ROOT, else ../shared/data beside the repository (CI has it; a user's clone does
not). A test that reads them carries `@pytest.mark.shared_data("<subfolder>", ...)` and takes the
`data_root` fixture; it is skipped, with the reason, when a subfolder is absent. Every other test
runs with $RELICV2_DATA_ROOT pointing at a folder that does not exist, so a test that reaches the
real data without the marker fails in CI exactly as it would on a user's clone
(tests/test_shared_data_guard.py checks the rule itself)."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Before TensorFlow starts: on CPUs with AMX-BF16 or AVX512-BF16 the tests run Eigen kernels
# (oneDNN's bfloat16 kernels turned NaN on AMX and are not deterministic on AVX512-BF16;
# relicv2_tf/distribute.py says why).
from relicv2_tf import distribute  # noqa: E402  (does not import TensorFlow)

distribute.avoid_onednn_bfloat16()

import pytest  # noqa: E402

from experiments.configs import common as configs_common  # noqa: E402
from experiments.configs.common import set_fields  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# What unmarked tests see as the data root: never a real folder.
HIDDEN_DATA_ROOT = ("/nonexistent/relicv2-data-root "
                    "(hidden from tests without the shared_data marker)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: large Keras builds (~7 s each); deselect with -m 'not slow'")
    config.addinivalue_line(
        "markers", "shared_data(*subfolders): reads real data under the data root "
        "($RELICV2_DATA_ROOT or ../shared/data); skipped when a subfolder is absent")


def pytest_collection_modifyitems(config, items):
    """The `data_root` fixture is only for tests that declare the data they read."""
    unmarked = [item.nodeid for item in items if "data_root" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("shared_data") is None]
    if unmarked:
        raise pytest.UsageError(
            "these tests take the data_root fixture without @pytest.mark.shared_data(...): "
            + ", ".join(unmarked) + " (add the marker naming the subfolders they read).")


@pytest.fixture(autouse=True)
def _shared_data_rule(request, monkeypatch):
    """Marked tests: skip unless their subfolders exist. Unmarked tests: hide the data root."""
    marker = request.node.get_closest_marker("shared_data")
    if marker is None:
        monkeypatch.setenv(configs_common.DATA_ROOT_ENV, HIDDEN_DATA_ROOT)
        return
    root = Path(configs_common.data_root())
    missing = [name for name in marker.args or ("",) if not (root / name).is_dir()]
    if missing:
        pytest.skip(f"needs the real data {', '.join(str(root / m) for m in missing)}: absent "
                    f"(CI lays out ../shared/data beside the repository; a user's clone has none; "
                    f"set ${configs_common.DATA_ROOT_ENV} to a folder that has it)")


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
def data_root():
    """The real-data root of a `shared_data` test (its subfolders exist: checked before)."""
    return Path(configs_common.data_root())
