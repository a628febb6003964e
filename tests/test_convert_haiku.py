"""Published ReLICv2/BYOL Haiku checkpoints -> our Keras ResNet, checked against real Haiku.

The reference is Haiku's own `hk.nets.ResNet` (v1, bottleneck, strides 1,2,2,2, projection
shortcuts, BN decay 0.9 / eps 1e-5, width multiplier on every channel count including the stem:
the configuration of BYOL's and ReLICv2's `ResNetTorso`), with random parameters and batch-norm
statistics from a Haiku training-mode step, written in the released file layout with `dill` and
converted by `relicv2_tf.models.convert`. Its pooled features come out of `hk.nets.ResNet` through
an identity `logits` layer (exact in float32), so the comparison needs no copy of Haiku's torso.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import typing

import numpy as np
import pytest

hk = pytest.importorskip(
    "haiku", reason="dm-haiku + jax (requirements-test.txt) are the independent reference")
jax = pytest.importorskip("jax", reason="jax (requirements-test.txt) runs the Haiku reference")
dill = pytest.importorskip(
    "dill", reason="dill (requirements-test.txt) writes files in the released format")
import jax.numpy as jnp  # noqa: E402

from relicv2_tf.models import convert, encoder_io, safe_pickle  # noqa: E402
from relicv2_tf.models import resnet as resnet_lib  # noqa: E402

HAIKU_BLOCKS = {18: ((2, 2, 2, 2), False), 50: ((3, 4, 6, 3), True), 101: ((3, 4, 23, 3), True),
                152: ((3, 8, 36, 3), True), 200: ((3, 24, 36, 3), True)}
RELEASED = [(50, 1), (50, 2), (50, 4), (101, 1), (152, 1), (200, 1), (200, 2)]
SLOW = {(50, 4), (200, 2)}  # Keras builds of 250-375 M parameters: ~7 s each


class _ByolExperimentState(typing.NamedTuple):  # field order of byol.byol_experiment
    online_params: dict
    target_params: dict
    online_state: dict
    target_state: dict
    opt_state: tuple


def haiku_resnet(depth, width):
    """hk.nets.ResNet in the BYOL/ReLICv2 configuration; pooled features via identity logits."""
    blocks, bottleneck = HAIKU_BLOCKS[depth]
    base = (256, 512, 1024, 2048) if bottleneck else (64, 128, 256, 512)
    channels = tuple(int(c * width) for c in base)

    def forward(images, is_training):
        net = hk.nets.ResNet(
            blocks_per_group=blocks, num_classes=channels[-1], bottleneck=bottleneck,
            channels_per_group=channels,
            # ResNet-18: no projection in group 0, like hk.nets.ResNet18 and models/resnet.py
            # (BYOL's own ResNetTorso projects in every group; no published file is a ResNet-18)
            use_projection=(True,) * 4 if bottleneck else (False, True, True, True),
            resnet_v2=False, strides=(1, 2, 2, 2), bn_config={"decay_rate": 0.9, "eps": 1e-5},
            initial_conv_config={"output_channels": int(64 * width)},
            logits_config={"w_init": lambda shape, dtype: jnp.eye(*shape, dtype=dtype)})
        return net(images, is_training=is_training)

    return hk.without_apply_rng(hk.transform_with_state(forward))


def random_variables(model, images, seed):
    """Random parameters and batch-norm statistics for `model`.

    Shapes come from `jax.eval_shape` (no init compute). The statistics come from one Haiku
    training-mode step (Haiku updates `hidden`, `average` and `counter` itself) on `images` plus as
    many random ones: inference-mode batch norm on `images` then uses means and variances that
    are neither 0/1 nor the evaluated batch's own. (Statistics drawn at random, or perturbed,
    compound through 50 layers into features of 1e3-1e4 where a 32 px input leaves 1x1 maps;
    calibrated ones keep features O(1), so the 1e-4 float32 bound is meaningful.)
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(functools.partial(model.init, is_training=True),
                            jax.random.PRNGKey(0), jnp.zeros((1, *images.shape[1:])))

    last_batchnorm = "batchnorm_2" if any("batchnorm_2" in m for m in shapes[0]) else "batchnorm_1"

    def param(module, name, shape):
        if module.endswith("logits"):
            return np.eye(*shape, dtype=np.float32) if name == "w" else np.zeros(shape, np.float32)
        if name == "w":
            return rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape).astype(np.float32)
        if name == "scale" and module.endswith(last_batchnorm):
            # trained residual branches end small (BYOL zero-initialises this scale); large ones
            # would amplify float32 rounding by ~10 % per block, an artefact of random weights
            return rng.uniform(0.1, 0.5, shape).astype(np.float32)
        if name == "scale":
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        return rng.normal(0, 0.1, shape).astype(np.float32)

    params = {m: {n: param(m, n, v.shape) for n, v in d.items()} for m, d in shapes[0].items()}
    state = {m: {n: np.zeros(v.shape, v.dtype) for n, v in d.items()}
             for m, d in shapes[1].items()}
    batch = np.concatenate([images, rng.normal(size=images.shape).astype(np.float32)])
    _, state = model.apply(params, state, batch, is_training=True)
    return params, {m: dict(d) for m, d in jax.device_get(state).items()}


def released_layout(params, state, prefix="res_net50/~/", replicas=0, byol=False,
                    keep_logits=False):
    """The published file's dict: encoder under `prefix` (ResNetTorso: `res_net50`) + heads."""
    def rename(tree):
        return {prefix + k[len("res_net/~/"):]: dict(v) for k, v in tree.items()
                if keep_logits or not k.endswith("/logits")}

    def replicate(tree):
        return {k: {n: np.stack([a] * replicas) for n, a in v.items()} for k, v in tree.items()}

    online_params, online_state = rename(params), rename(state)
    heads = {"projector/~/linear": {"w": np.ones((4, 3), np.float32), "b": np.zeros(3, np.float32)},
             "predictor/~/linear": {"w": np.ones((3, 3), np.float32)},
             "classifier": {"w": np.ones((4, 10), np.float32), "b": np.zeros(10, np.float32)}}
    online_params.update(heads)
    online_state["projector/~/batch_norm/~/mean_ema"] = {"average": np.zeros(3, np.float32)}
    if replicas:
        online_params, online_state = replicate(online_params), replicate(online_state)
    if byol:
        experiment_state = _ByolExperimentState(online_params, online_params, online_state,
                                                online_state, ((), {"mu": online_params}, ()))
    else:
        experiment_state = {"online_params": online_params, "online_state": online_state,
                            "target_params": online_params, "target_state": online_state}
    return {"experiment_state": experiment_state, "step": 12345,
            "rng": np.array([0, 42], np.uint32)}


def write(path, data):
    with open(path, "wb") as f:
        dill.dump(data, f, protocol=2)  # as byol/relicv2 utils/checkpointing.py
    return str(path)


def haiku_count(tree):
    return sum(int(np.prod(np.shape(a))) for m, d in tree.items() if not m.endswith("logits")
               for a in d.values())


def compare(tmp_path, depth, width, image_size, seed, **layout):
    model = haiku_resnet(depth, width)
    images = np.random.default_rng(seed + 1).normal(size=(2, image_size, image_size, 3))
    images = images.astype(np.float32)
    params, state = random_variables(model, images, seed)
    expected, _ = model.apply(params, state, images, is_training=False)
    path = write(tmp_path / f"r{depth}x{width:g}.pkl", released_layout(params, state, **layout))
    encoder, model_config, report = convert.convert_checkpoint(path, trust_pickle=True)
    features = encoder(images, training=False).numpy()
    error = float(np.max(np.abs(features - np.asarray(expected))))
    return dict(encoder=encoder, model_config=model_config, report=report, error=error,
                scale=float(np.max(np.abs(expected))), params=params, state=state, path=path,
                images=images, expected=np.asarray(expected))


@pytest.mark.parametrize("width", [1, 2])
def test_resnet50_features_equal_haiku(tmp_path, width):
    result = compare(tmp_path, 50, width, image_size=64, seed=width)
    report = result["report"]
    print(json.dumps({"depth": 50, "width": width, "max_abs_error": result["error"],
                      "max_abs_feature": result["scale"]}))
    assert result["model_config"] == {"depth": 50, "width_multiplier": width,
                                      "bn_momentum": 0.9, "bn_epsilon": 1e-5}
    assert result["error"] < 1e-4
    assert result["scale"] > 0.1  # features are not trivially zero
    assert report.prefix == "res_net50/~/" and report.step == 12345
    assert report.ignored_modules == ["classifier", "predictor", "projector"]
    # parameter counts: Haiku's trainable parameters and BN averages == Keras' variables
    params, state = result["params"], result["state"]
    averages = sum(a.size for m, d in state.items() for n, a in d.items() if n == "average")
    assert report.num_parameters == haiku_count(params) == result["encoder"].count_params() - (
        averages)
    assert report.num_statistics == averages
    assert report.num_tensors == sum(len(d) for m, d in params.items()
                                     if not m.endswith("logits")) + len(state)


def test_tiny_byol_layout_with_trained_statistics(tmp_path):
    """ResNet-18 x0.25 in BYOL's named-tuple state; BN statistics from real training-mode steps."""
    model = haiku_resnet(18, 0.25)
    rng = np.random.default_rng(4)
    images = rng.normal(size=(2, 48, 40, 3)).astype(np.float32)  # odd sizes: SAME padding
    params, state = random_variables(model, images, seed=3)
    for _ in range(2):  # two more Haiku training steps on top of the perturbed statistics
        batch = np.concatenate([images, rng.normal(size=images.shape).astype(np.float32)])
        _, state = model.apply(params, state, batch, is_training=True)
    state = jax.device_get(state)
    expected, _ = model.apply(params, state, images, is_training=False)
    path = write(tmp_path / "byol.pkl", released_layout(params, state, prefix="res_net/~/",
                                                        byol=True))
    encoder, model_config, report = convert.convert_checkpoint(path, trust_pickle=True)
    assert model_config["depth"] == 18 and model_config["width_multiplier"] == 0.25
    np.testing.assert_allclose(encoder(images, training=False).numpy(), expected, atol=1e-4)
    assert report.num_parameters == haiku_count(params)


def test_relicv2_replicated_layout_and_hk_prefix(tmp_path):
    """ReLICv2 files keep a leading replica axis (its eval reads them with `get_first`)."""
    result = compare(tmp_path, 50, 0.125, image_size=63, seed=5, prefix="res_net/~/", replicas=2,
                     keep_logits=True)
    assert result["report"].replicated
    assert result["report"].ignored_modules == [
        "classifier", "predictor", "projector", "res_net/~/logits"]
    assert result["error"] < 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """ResNet-50 x0.125 in the ReLICv2 layout, for the error cases and the CLI."""
    model = haiku_resnet(50, 0.125)
    images = np.random.default_rng(8).normal(size=(2, 64, 64, 3)).astype(np.float32)
    params, state = random_variables(model, images, seed=7)
    expected, _ = model.apply(params, state, images, is_training=False)
    data = released_layout(params, state)
    data["haiku_features"] = (images, np.asarray(expected))  # test-only entry, ignored
    return data, tmp_path_factory.mktemp("tiny")


def _error(tmp_path, data, name="bad.pkl", **kwargs):
    path = write(tmp_path / name, data)
    with pytest.raises(convert.CheckpointError) as info:
        convert.convert_checkpoint(path, **{"trust_pickle": True, **kwargs})
    return str(info.value)


def _copy(data):
    return pickle.loads(pickle.dumps(data))


def test_state_records_pickled_by_reference(tiny, monkeypatch):
    """Plain pickle names experiment / optimiser named tuples by module path; no import happens."""
    import collections
    import sys
    import types

    data, tmp_path = tiny
    online = data["experiment_state"]
    classes = {}
    for module, name, fields in [
            ("relicv2.eval_experiment", "_EvalExperimentState", (
                "backbone_params", "classif_params", "backbone_state", "backbone_opt_state",
                "classif_opt_state")),
            ("optax._src.transform", "TraceState", ("trace",))]:
        cls = collections.namedtuple(name, fields)
        cls.__module__ = module
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # fake packages, so pickle can name the class
            monkeypatch.setitem(sys.modules, ".".join(parts[:i]),
                                types.ModuleType(".".join(parts[:i])))
        setattr(sys.modules[module], name, cls)
        classes[name] = cls
    state = classes["_EvalExperimentState"](
        online["online_params"], {"linear": {"w": np.zeros((2, 2), np.float32)}},
        online["online_state"], None, (classes["TraceState"](trace={"w": np.zeros(2)}),))
    blob = pickle.dumps({"experiment_state": state, "step": 7, "rng": None}, protocol=2)
    assert b"relicv2.eval_experiment" in blob and b"optax._src.transform" in blob
    monkeypatch.undo()  # the converter must not need (or import) those modules
    path = tmp_path / "linear_eval.pkl"
    path.write_bytes(blob)
    _, config, report = convert.convert_checkpoint(str(path), trust_pickle=True)
    assert config["depth"] == 50 and report.step == 7


def test_missing_tensor_is_named(tiny):
    data, tmp_path = tiny
    data = _copy(data)
    del data["experiment_state"]["online_params"]["res_net50/~/block_group_1/~/block_2/~/conv_1"]
    message = _error(tmp_path, data)
    assert "1 problems" in message
    assert "missing tensor `res_net50/~/block_group_1/~/block_2/~/conv_1/w`" in message


def test_extra_tensor_is_named(tiny):
    data, tmp_path = tiny
    data = _copy(data)
    online = data["experiment_state"]["online_params"]
    online["res_net50/~/block_group_0/~/block_0/~/conv_0"]["b"] = np.zeros(8, np.float32)
    message = _error(tmp_path, data)
    assert "left-over tensor `res_net50/~/block_group_0/~/block_0/~/conv_0/b`" in message
    assert "1 problems" in message


def test_misshaped_tensor_is_named(tiny):
    data, tmp_path = tiny
    data = _copy(data)
    state = data["experiment_state"]["online_state"]
    name = "res_net50/~/block_group_3/~/block_0/~/batchnorm_1/~/var_ema"
    state[name]["average"] = np.ones((1, 1, 1, 17), np.float32)
    message = _error(tmp_path, data)
    assert f"tensor `{name}/average` has shape (1, 1, 1, 17)" in message
    assert "1 problems" in message


def test_width_override_that_does_not_fit_fails(tiny):
    data, tmp_path = tiny
    message = _error(tmp_path, data, name="ok.pkl", width_multiplier=0.25)
    assert "ResNet-50 x0.25" in message
    assert "tensor `res_net50/~/initial_conv/w` has shape (7, 7, 3, 8)" in message


def test_truncated_file(tiny):
    data, tmp_path = tiny
    path = write(tmp_path / "full.pkl", data)
    blob = open(path, "rb").read()
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(convert.CheckpointError, match="truncated"):
        convert.convert_checkpoint(str(truncated), trust_pickle=True)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_disallowed_class_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"experiment_state": _Exploit(marker)}, protocol=2))
    with pytest.raises(convert.CheckpointError) as info:
        convert.convert_checkpoint(str(path), trust_pickle=True)
    assert f"`{os.system.__module__}.system`" in str(info.value)
    assert not marker.exists()


def test_untrusted_path_needs_trust_or_checksum(tiny):
    data, tmp_path = tiny
    path = write(tmp_path / "untrusted.pkl", data)
    with pytest.raises(convert.CheckpointError, match="--trust_pickle"):
        convert.convert_checkpoint(path)
    with pytest.raises(convert.CheckpointError, match="does not match"):
        convert.convert_checkpoint(path, expected_sha256="0" * 64)
    _, config, _ = convert.convert_checkpoint(path, expected_sha256=safe_pickle.file_sha256(path))
    assert config["width_multiplier"] == 0.125


def test_import_checks_its_arguments_before_reading_and_the_cli_offers_its_formats(tmp_path):
    from relicv2_tf import import_encoder
    from relicv2_tf.cli import import_checkpoint

    assert import_checkpoint.FORMATS == import_encoder.FORMATS  # --format's choices
    with pytest.raises(ValueError, match="unknown checkpoint format 'onnx'"):
        import_encoder.import_encoder("x.pkl", output_dir=str(tmp_path), checkpoint_format="onnx")
    with pytest.raises(ValueError, match="nothing to write"):
        import_encoder.import_encoder("x.pkl")


def test_import_writes_a_loadable_encoder_and_servable_model(tiny):
    from relicv2_tf import import_encoder

    data, tmp_path = tiny
    images, expected = data["haiku_features"]
    path = write(tmp_path / "cli.pkl", data)
    out = tmp_path / "encoder"
    try:
        from relicv2_tf.serving import export
        export_base_path = str(tmp_path / "serving")
    except ImportError:
        export_base_path = None
    result = import_encoder.import_encoder(checkpoint=path, output_dir=str(out),
                                           trust_pickle=True, export_base_path=export_base_path,
                                           model_name="relicv2_r50", version=3)
    loaded = encoder_io.load_encoder(str(out))
    assert np.max(np.abs(loaded(images, training=False).numpy() - expected)) < 1e-4
    assert result["report"]["depth"] == 50 and result["report"]["width_multiplier"] == 0.125
    if export_base_path is None:
        pytest.skip("relicv2_tf.serving.export not available")
    assert result["export_path"] == os.path.join(export_base_path, "relicv2_r50", "3")
    import tensorflow as tf

    served = tf.saved_model.load(result["export_path"]).signatures["serving_default"]
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    from relicv2_tf.data.normalize import normalize_images

    features = served(**{export.IMAGES_INPUT: tf.constant(pixels)})[export.EMBEDDING].numpy()
    reference = loaded(normalize_images(pixels / 255.0), training=False).numpy()
    np.testing.assert_allclose(features, reference, atol=1e-4)


def _count_case(depth, width):
    marks = [pytest.mark.slow] if (depth, width) in SLOW else []
    return pytest.param(depth, width, marks=marks, id=f"r{depth}x{width}")


@pytest.mark.parametrize("depth,width", [_count_case(d, w) for d, w in RELEASED])
def test_parameter_counts_match_haiku(depth, width):
    """Published architectures: Haiku shapes (no memory, jax.eval_shape) vs Keras count_params."""
    model = haiku_resnet(depth, width)
    params, state = jax.eval_shape(functools.partial(model.init, is_training=True),
                                   jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    haiku_params = haiku_count(params)
    haiku_statistics = sum(int(np.prod(a.shape)) for m, d in state.items()
                           for n, a in d.items() if n == "average")
    encoder = resnet_lib.resnet(depth, width)
    trainable = sum(int(np.prod(v.shape)) for v in encoder.trainable_weights)
    print(json.dumps({"depth": depth, "width": width, "haiku_parameters": haiku_params,
                      "keras_trainable": trainable, "keras_count_params": encoder.count_params(),
                      "bn_statistics": haiku_statistics}))
    assert trainable == haiku_params
    assert encoder.count_params() == haiku_params + haiku_statistics
