"""Public SwAV PyTorch checkpoints -> our Keras ResNet (padding="torch"), checked against PyTorch.

The reference is real PyTorch, run once offline: `tests/fixtures/make_swav_fixture.py` (its
docstring says how and with which torch) builds a ResNet-50 at 1/16 width in the layout of
facebookresearch/swav `src/resnet50.py` with random BN statistics, saves its DDP-style state dict
(`module.` prefixes, projection head and prototypes) with `torch.save` in the zip format and in the
legacy format of the released files, and its eval-mode pooled features on an even and an odd input
size. These tests read those files without PyTorch (torch is not a dependency), convert them and
compare. Each numeric test prints its figures as JSON (`pytest tests/test_convert_swav.py -s`).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from relicv2_tf.models import convert, convert_swav, encoder_io, resnet, safe_pickle, torch_pickle

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
FILES = {"zip": os.path.join(FIXTURES, "swav_tiny_zip.pth.tar"),
         "legacy": os.path.join(FIXTURES, "swav_tiny_legacy.pth.tar")}
WIDTH = 0.0625  # the fixture's width_per_group 4 / 64
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference():
    with np.load(os.path.join(FIXTURES, "swav_tiny_features.npz")) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def state_dict():
    """The fixture's tensors, prefix-free, read without torch (from the legacy file)."""
    tensors, prefix, _ = convert_swav.swav_state_dict(
        torch_pickle.load_torch_file(FILES["legacy"], trust_pickle=True))
    assert prefix == "module."
    return tensors


def max_error(encoder, reference, size):
    features = encoder(reference[f"images_{size}"], training=False).numpy()
    return float(np.max(np.abs(features - reference[f"features_{size}"])))


@pytest.mark.parametrize("file_format", ["zip", "legacy"])
def test_features_equal_pytorch(file_format, reference):
    assert torch_pickle.torch_file_format(FILES[file_format]) == file_format
    encoder, config, report = convert_swav.convert_swav_checkpoint(
        FILES[file_format], trust_pickle=True)
    assert config == {"depth": 50, "width_multiplier": WIDTH, "bn_momentum": 0.9,
                      "bn_epsilon": 1e-5, "padding": "torch"}
    assert report.ignored_modules == ["projection_head", "prototypes"]
    assert report.prefix == "module." and report.num_tensors == len(encoder.weights) == 265
    errors = {size: max_error(encoder, reference, size) for size in ("even", "odd")}
    # The same weights with TF "SAME" padding: the one-pixel shift of every stride-2 layer.
    same = resnet.resnet(50, WIDTH, padding="same")
    same.set_weights(encoder.get_weights())
    same_errors = {size: max_error(same, reference, size) for size in ("even", "odd")}
    print(json.dumps({"file": os.path.basename(FILES[file_format]),
                      "torch_version": str(reference["torch_version"]),
                      "max_abs_error": errors, "with_same_padding": same_errors,
                      "max_abs_feature": float(np.abs(reference["features_odd"]).max())}))
    assert max(errors.values()) <= TOLERANCE
    assert min(same_errors.values()) > 100 * TOLERANCE


def test_both_formats_read_identically():
    zipped = torch_pickle.load_torch_file(FILES["zip"], trust_pickle=True)
    legacy = torch_pickle.load_torch_file(FILES["legacy"], trust_pickle=True)
    assert list(zipped) == list(legacy) and len(zipped) == 328
    for name, value in zipped.items():
        assert value.dtype == legacy[name].dtype and np.array_equal(value, legacy[name]), name
    assert zipped["module.conv1.weight"].shape == (4, 3, 7, 7)  # OIHW as saved
    assert zipped["module.bn1.num_batches_tracked"].dtype == np.int64
    assert zipped["module.bn1.num_batches_tracked"].shape == ()


def test_cli_end_to_end_without_torch(tmp_path, reference):
    """`relicv2-import --format=swav` in a fresh interpreter where `import torch` fails, then the
    encoder directory through every loader: encoder_io, the saliency backbone, serving export."""
    out = tmp_path / "encoder"
    export_base = tmp_path / "serving"
    script = (
        "import sys\n"
        "class BlockTorch:  # any `import torch` now fails, as on a machine without torch\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, BlockTorch())\n"
        "from relicv2_tf.cli import import_checkpoint\n"
        "sys.argv = ['relicv2-import'] + sys.argv[1:]\n"
        "try:\n    import_checkpoint.run()\n"
        "finally:\n    print('TORCH_MODULES', sorted(m for m in sys.modules "
        "if m == 'torch' or m.startswith('torch.')), file=sys.stderr)\n")
    sha256 = safe_pickle.file_sha256(FILES["legacy"])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run(
        [sys.executable, "-c", script, "--format=swav", f"--checkpoint={FILES['legacy']}",
         f"--expected_sha256={sha256}", f"--output_dir={out}", f"--export_base_path={export_base}",
         "--model_name=swav_tiny", "--version=2"],
        capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "TORCH_MODULES []" in run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["format"] == "swav"
    assert summary["model_config"]["padding"] == "torch"
    assert summary["report"]["ignored_modules"] == ["projection_head", "prototypes"]
    with open(out / encoder_io.CONFIG_FILE) as f:
        assert json.load(f)["padding"] == "torch"

    loaded = encoder_io.load_encoder(str(out))
    assert max_error(loaded, reference, "odd") <= TOLERANCE

    from relicv2_tf.saliency import network

    backbone = network.build_backbone(str(out))  # relicv2-saliency --config.network.encoder_dir
    assert max_error(backbone, reference, "even") <= TOLERANCE

    import tensorflow as tf

    from relicv2_tf.data.normalize import normalize_images
    from relicv2_tf.serving import export

    assert summary["export_path"] == os.path.join(str(export_base), "swav_tiny", "2")
    served = tf.saved_model.load(summary["export_path"]).signatures["serving_default"]
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 48, 48, 3)).astype(np.float32)
    features = served(**{export.IMAGES_INPUT: tf.constant(pixels)})[export.EMBEDDING].numpy()
    expected = loaded(normalize_images(pixels / 255.0), training=False).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-4)


def test_saliency_network_reload_keeps_torch_padding(tmp_path):
    from relicv2_tf.saliency import network

    out = tmp_path / "encoder"
    encoder, config, _ = convert_swav.convert_swav_checkpoint(FILES["zip"], trust_pickle=True)
    encoder_io.save_encoder(encoder, config, str(out))
    net_config = type("NetworkConfig", (), dict(
        encoder_dir=str(out), depth=50, width_multiplier=1, allow_random_init=False,
        decoder_channels=8))
    model = network.build_saliency_network(net_config, 64)
    network.save_saliency_network(model, network.architecture(net_config, 64), str(tmp_path / "s"))
    reloaded, _ = network.load_saliency_network(str(tmp_path / "s"))
    images = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(reloaded(images).numpy(), model(images).numpy(), atol=1e-5)


# ------------------------------------------------------------------------------------- refusals
class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _legacy_header() -> bytes:
    """The legacy format's first three pickles: magic number, protocol version, sys_info."""
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 8}}
    return b"".join(pickle.dumps(x, protocol=2)
                    for x in (safe_pickle.TORCH_LEGACY_MAGIC, 1001, sys_info))


def _legacy_bytes(obj) -> bytes:
    """A legacy-format file whose main pickle is `obj` (and no storages)."""
    return _legacy_header() + pickle.dumps(obj, protocol=2) + pickle.dumps([], protocol=2)


@pytest.mark.parametrize("file_format", ["zip", "legacy"])
def test_malicious_global_is_refused_without_running(tmp_path, file_format):
    marker = tmp_path / "pwned"
    payload = {"module.conv1.weight": _Exploit(marker)}
    path = tmp_path / f"evil_{file_format}.pth.tar"
    if file_format == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("evil/data.pkl", pickle.dumps(payload, protocol=2))
    else:
        path.write_bytes(_legacy_bytes(payload))
    assert torch_pickle.torch_file_format(str(path)) == file_format
    with pytest.raises(convert.CheckpointError) as info:
        convert_swav.convert_swav_checkpoint(str(path), trust_pickle=True)
    assert f"`{os.system.__module__}.system`" in str(info.value)
    assert "refusing to load it" in str(info.value)
    assert not marker.exists()


def test_only_storage_persistent_ids(tmp_path):
    """A pickled nn.Module (persistent id 'module', which carries source code) is refused."""

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("module", "Net", "net.py", "import os") if obj == "NET" else None

    path = tmp_path / "module.pth.tar"
    with open(path, "wb") as f:
        f.write(_legacy_header())
        _Pickler(f, protocol=2).dump({"model": "NET"})
        f.write(pickle.dumps([], protocol=2))
    with pytest.raises(convert.CheckpointError, match="persistent id of kind 'module'"):
        torch_pickle.load_torch_file(str(path), trust_pickle=True)


def test_untrusted_file_needs_trust_or_checksum():
    with pytest.raises(convert.CheckpointError, match="--trust_pickle"):
        convert_swav.convert_swav_checkpoint(FILES["zip"])
    with pytest.raises(convert.CheckpointError, match="does not match"):
        convert_swav.convert_swav_checkpoint(FILES["zip"], expected_sha256="0" * 64)


def test_wrong_format_names_the_flag(tmp_path):
    with pytest.raises(convert.CheckpointError, match="--format=swav"):
        convert.convert_checkpoint(FILES["legacy"], trust_pickle=True)
    with pytest.raises(convert.CheckpointError, match="--format=swav"):
        convert.convert_checkpoint(FILES["zip"], trust_pickle=True)
    haiku_like = tmp_path / "haiku.pkl"
    haiku_like.write_bytes(pickle.dumps({"experiment_state": {}}, protocol=4))
    with pytest.raises(convert.CheckpointError, match="--format=haiku"):
        convert_swav.convert_swav_checkpoint(str(haiku_like), trust_pickle=True)


@pytest.mark.parametrize("file_format", ["zip", "legacy"])
def test_truncated_file(tmp_path, file_format):
    blob = open(FILES[file_format], "rb").read()
    path = tmp_path / "truncated.pth.tar"
    path.write_bytes(blob[: len(blob) * 2 // 3])
    with pytest.raises(convert.CheckpointError, match="truncated|corrupt"):
        torch_pickle.load_torch_file(str(path), trust_pickle=True)


# ----------------------------------------------------------------- mismatched state dicts
def _convert(tensors, **kwargs):
    architecture = convert_swav.infer_architecture(tensors, "test.pth.tar", "module.", **kwargs)
    encoder = encoder_io.build_encoder(convert_swav.model_config_for(architecture))
    return convert_swav.load_swav_weights(encoder, tensors, architecture, "test.pth.tar")


def test_missing_extra_and_misshaped_tensors_are_named(state_dict):
    tensors = dict(state_dict)
    del tensors["layer3.2.bn1.running_var"]
    tensors["layer2.0.conv4.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    tensors["layer4.0.downsample.0.weight"] = tensors["layer4.0.downsample.0.weight"][:-1]
    with pytest.raises(convert.CheckpointError) as info:
        _convert(tensors)
    message = str(info.value)
    print(message)
    assert "ResNet-50 x0.0625" in message and "(3 problems)" in message
    assert "missing tensor `module.layer3.2.bn1.running_var`" in message
    assert "left-over tensor `module.layer2.0.conv4.weight`" in message
    assert ("tensor `module.layer4.0.downsample.0.weight` has shape (127, 64, 1, 1), the model "
            "expects (128, 64, 1, 1)") in message


def test_training_checkpoint_and_unprefixed_state_dict(state_dict):
    """main_swav.py's checkpoint.pth.tar ({"epoch", "state_dict", "optimizer", ...}) and a state
    dict saved without DistributedDataParallel read the same."""
    wrapped = {"epoch": 400, "optimizer": {"state": {}},
               "state_dict": {"module." + k: v for k, v in state_dict.items()}}
    tensors, prefix, epoch = convert_swav.swav_state_dict(wrapped)
    assert (prefix, epoch) == ("module.", 400) and tensors.keys() == state_dict.keys()
    tensors, prefix, epoch = convert_swav.swav_state_dict(dict(state_dict))
    assert (prefix, epoch) == ("", None) and tensors.keys() == state_dict.keys()
    with pytest.raises(convert.CheckpointError, match="not tensors"):
        convert_swav.swav_state_dict({**state_dict, "epoch": 3})


def test_width_override_that_does_not_fit_fails(state_dict):
    with pytest.raises(convert.CheckpointError, match="conv1.weight` has shape"):
        _convert(state_dict, width_multiplier=0.125)


def test_layer_names_map_one_to_one():
    model = resnet.resnet(50, WIDTH, padding="torch")
    names = [convert_swav.torch_module_name(layer.name) for layer in model.layers
             if layer.weights]
    assert len(names) == len(set(names)) == 1 + 1 + 16 * 6 + 4 * 2
    assert {"conv1", "bn1", "layer1.0.downsample.0", "layer4.2.bn3", "layer3.5.conv2"} <= set(names)


# ------------------------------------------------------------------------- the padding option
def test_torch_padding_keeps_names_and_weights_and_default_is_unchanged():
    same = resnet.resnet(50, WIDTH)
    torch_padded = resnet.resnet(50, WIDTH, padding="torch")
    weights = lambda m: [(w.path, tuple(w.shape)) for w in m.weights]  # noqa: E731
    assert weights(same) == weights(torch_padded)
    assert not any(isinstance(layer, (resnet.TorchPaddedConv2D, resnet.keras.layers.ZeroPadding2D))
                   for layer in same.layers)
    padded = [layer.name for layer in torch_padded.layers
              if isinstance(layer, resnet.TorchPaddedConv2D)]
    # the 7x7/2 stem and the 3x3/2 convolution of the first block of groups 1-3
    assert padded == ["initial_conv"] + [f"block_group_{g}__block_0__conv_1" for g in (1, 2, 3)]
    for size in (32, 33, 48, 41):  # same output sizes as TF "SAME" (and as PyTorch)
        x = np.zeros((1, size, size + 4, 3), np.float32)
        assert same(x).shape == torch_padded(x).shape
    with pytest.raises(ValueError, match="padding"):
        resnet.resnet(50, WIDTH, padding="valid")
