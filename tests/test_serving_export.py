"""Export of a tiny trained encoder to TF Serving's layout (relicv2_tf/serving/export.py).

Fixed-cost steps (a fresh Python process, `saved_model_cli`, the CLI) run once per module.
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from relicv2_tf.data import eval_preprocess, normalize
from relicv2_tf.models import encoder_io
from relicv2_tf.serving import export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENCODER_CONFIG = {"depth": 18, "width_multiplier": 0.25}
FEATURE_DIM = 128  # 512 * 0.25
NUM_CLASSES = 5
IMAGE_SIZE = 64  # serving_bytes crop; resize 73
TOLERANCE = 1e-5


def subprocess_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def train_tiny_encoder(steps=3, seed=0):
    """ResNet-18 x0.25 after a few SGD steps, so moving BN statistics are far from their init."""
    keras.utils.set_random_seed(seed)
    encoder = encoder_io.build_encoder(ENCODER_CONFIG)
    optimizer = keras.optimizers.SGD(0.05)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        images = (rng.normal(size=(8, 32, 32, 3)) * 2 + 1).astype(np.float32)
        targets = rng.normal(size=(8, FEATURE_DIM)).astype(np.float32)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((encoder(images, training=True) - targets) ** 2)
        grads = tape.gradient(loss, encoder.trainable_variables)
        optimizer.apply_gradients(zip(grads, encoder.trainable_variables))
    return encoder


def linear_head():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((FEATURE_DIM,)),
                             keras.layers.Dense(NUM_CLASSES, name="linear_head")])


def smooth_image(rng, height, width):
    """uint8 [H, W, 3]: gradients plus noise (JPEG-friendly, not constant)."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], -1) * 200
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def encoded_test_images():
    rng = np.random.default_rng(2)
    return [tf.io.encode_png(smooth_image(rng, 80, 100)).numpy(),
            tf.io.encode_jpeg(smooth_image(rng, 50, 70), quality=90).numpy(),
            tf.io.encode_png(smooth_image(rng, 64, 64)).numpy()]


# Runs in a fresh interpreter: only TensorFlow and the SavedModel, nothing from this repository.
RELOAD_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    path, inputs_path, outputs_path, *image_files = sys.argv[1:]
    inputs = np.load(inputs_path)
    loaded = tf.saved_model.load(path)
    images = tf.constant(inputs["images"])
    results = {}
    for name, value in loaded.signatures["serving_default"](images=images).items():
        results["images/" + name] = value.numpy()
    single = loaded.signatures["serving_default"](images=images[:1])["embedding"]
    results["single/embedding"] = single.numpy()
    encoded = tf.constant([open(f, "rb").read() for f in image_files], dtype=tf.string)
    for name, value in loaded.signatures["serving_bytes"](image_bytes=encoded).items():
        results["bytes/" + name] = value.numpy()
    np.savez(outputs_path, **results)
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving_export")
    encoder, head = train_tiny_encoder(), linear_head()
    base_path = str(root / "models")
    path = export.export_encoder(encoder, base_path, "demo", head=head, image_size=IMAGE_SIZE)
    return {"root": root, "encoder": encoder, "head": head, "base_path": base_path, "path": path}


@pytest.fixture(scope="module")
def fresh_processes(exported):
    """Runs, in parallel, the reload script in a fresh interpreter and `saved_model_cli show`."""
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, size=(3, 40, 48, 3)).astype(np.float32)
    encoded = encoded_test_images()
    root = exported["root"]
    np.savez(root / "inputs.npz", images=images)
    image_files = [str(root / f"image_{i}.bin") for i in range(len(encoded))]
    for path, data in zip(image_files, encoded):
        with open(path, "wb") as f:
            f.write(data)
    reload = subprocess.Popen(
        [sys.executable, "-c", RELOAD_SCRIPT, exported["path"], str(root / "inputs.npz"),
         str(root / "outputs.npz"), *image_files],
        env=subprocess_env(), cwd=root, stderr=subprocess.PIPE, text=True)
    cli = subprocess.Popen(["saved_model_cli", "show", "--all", "--dir", exported["path"]],
                           env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    cli_stdout, cli_stderr = cli.communicate(timeout=300)
    _, reload_stderr = reload.communicate(timeout=300)
    assert reload.returncode == 0, reload_stderr[-3000:]
    assert cli.returncode == 0, cli_stderr[-3000:]
    with np.load(root / "outputs.npz") as data:
        served = dict(data)
    return {"images": images, "encoded": encoded, "served": served, "saved_model_cli": cli_stdout}


@pytest.fixture(scope="module")
def reloaded(exported, fresh_processes):
    """Outputs of the SavedModel reloaded in a fresh process, and the in-process Keras reference."""
    images, encoded = fresh_processes["images"], fresh_processes["encoded"]
    encoder, head = exported["encoder"], exported["head"]
    decoded = [tf.io.decode_image(b, channels=3, expand_animations=False) for b in encoded]
    crops = tf.stack([eval_preprocess.preprocess_for_eval(image, IMAGE_SIZE, 73)
                      for image in decoded])
    expected = {"images/embedding": encoder(normalize.normalize_images(images / 255.0),
                                            training=False),
                "bytes/embedding": encoder(crops, training=False)}
    for prefix in ("images", "bytes"):
        logits = head(expected[f"{prefix}/embedding"], training=False)
        expected[f"{prefix}/logits"] = logits
        expected[f"{prefix}/probabilities"] = tf.nn.softmax(logits)
    return fresh_processes["served"], {k: np.asarray(v) for k, v in expected.items()}


def test_layout_is_tf_serving_version_directory(exported):
    model_dir = os.path.join(exported["base_path"], "demo")
    assert exported["path"] == os.path.join(model_dir, "1")
    assert sorted(os.listdir(model_dir)) == ["1"]  # no temporary directory left behind
    assert os.path.isfile(os.path.join(exported["path"], "saved_model.pb"))
    assert os.path.isdir(os.path.join(exported["path"], "variables"))


def test_encoder_was_trained_so_batch_norm_statistics_matter(exported):
    moving_means = [w for w in exported["encoder"].weights if "moving_mean" in w.path]
    assert moving_means and max(float(np.abs(w.numpy()).max()) for w in moving_means) > 1e-2


@pytest.mark.parametrize("signature", ["images", "bytes"])
def test_reloaded_embeddings_equal_keras(reloaded, signature):
    served, expected = reloaded
    for output in ("embedding", "logits", "probabilities"):
        key = f"{signature}/{output}"
        assert served[key].shape == expected[key].shape, key
        # Graph-mode fusions (conv + batch norm) round differently from eager Keras.
        np.testing.assert_allclose(served[key], expected[key], atol=TOLERANCE,
                                   rtol=0 if output == "embedding" else TOLERANCE, err_msg=key)
    embedding = served[f"{signature}/embedding"]
    assert embedding.shape[1] == FEATURE_DIM and embedding.std() > 1e-3  # not a constant output
    np.testing.assert_allclose(served[f"{signature}/probabilities"].sum(-1), 1.0, atol=1e-6)


def test_batch_norm_in_inference_mode(reloaded, exported):
    served, _ = reloaded
    # With batch statistics an example's embedding would depend on the rest of the batch.
    np.testing.assert_allclose(served["single/embedding"][0], served["images/embedding"][0],
                               atol=TOLERANCE, rtol=0)
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(exported["path"], "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    graph = saved_model.meta_graphs[0].graph_def
    nodes = list(graph.node) + [n for fn in graph.library.function for n in fn.node_def]
    op_types = {node.op for node in nodes}
    assert not op_types & {"AssignSubVariableOp", "AssignAddVariableOp"}  # no moving-average update
    assert not [op for op in op_types if "Random" in op or "Dropout" in op]
    for node in nodes:
        if node.op.startswith("FusedBatchNorm"):
            assert not node.attr["is_training"].b


def test_saved_model_cli_lists_documented_signatures(fresh_processes):
    stdout = fresh_processes["saved_model_cli"]
    blocks = dict(re.findall(r"signature_def\['(\w+)'\]:\n(.*?)Method name is: (?:\S*)",
                             stdout, re.S))
    assert {"serving_default", "serving_bytes"} <= set(blocks)

    def tensors(block, kind):
        section = block.split("output(s):")[0 if kind == "input" else 1]
        return {name: (dtype, shape) for name, dtype, shape in re.findall(
            r"\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", section)}

    outputs = {"embedding": ("DT_FLOAT", f"(-1, {FEATURE_DIM})"),
               "logits": ("DT_FLOAT", f"(-1, {NUM_CLASSES})"),
               "probabilities": ("DT_FLOAT", f"(-1, {NUM_CLASSES})")}
    assert tensors(blocks["serving_default"], "input") == {
        "images": ("DT_FLOAT", "(-1, -1, -1, 3)")}
    assert tensors(blocks["serving_bytes"], "input") == {"image_bytes": ("DT_STRING", "(-1)")}
    for name in ("serving_default", "serving_bytes"):
        assert tensors(blocks[name], "output") == outputs
    assert "Method name is: tensorflow/serving/predict" in stdout


def test_bad_inputs_give_clear_errors(exported):
    loaded = tf.saved_model.load(exported["path"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Shape of tensor images \[2,8,8\]"):
        loaded.signatures["serving_default"](images=tf.zeros([2, 8, 8]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images \[1,8,8,4\]"):
        loaded.signatures["serving_default"](images=tf.zeros([1, 8, 8, 4]))
    good = encoded_test_images()[0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="is not a JPEG or PNG file"):
        loaded.signatures["serving_bytes"](image_bytes=tf.constant([good, b"GIF89a not really"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Shape of tensor image_bytes"):
        loaded.signatures["serving_bytes"](image_bytes=tf.constant([[good]]))


def test_refuses_to_overwrite_an_existing_version(exported):
    pb_path = os.path.join(exported["path"], "saved_model.pb")
    before = os.stat(pb_path).st_mtime_ns
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.export_encoder(exported["encoder"], exported["base_path"], "demo", version=1)
    with pytest.raises(FileExistsError, match="already exists"):
        export.export_encoder(exported["encoder"], exported["base_path"], "demo", version=1,
                              head=exported["head"])
    assert os.stat(pb_path).st_mtime_ns == before
    assert sorted(os.listdir(os.path.join(exported["base_path"], "demo"))) == ["1"]


def test_next_version_ignores_non_integer_directories(tmp_path):
    for name in ["1", "3", "007", "tmp-9", ".tmp-export-12-abcd", "-4"]:
        os.makedirs(tmp_path / name)
    (tmp_path / "99").write_text("a file, not a version")
    assert export.existing_versions(str(tmp_path)) == {1: "1", 3: "3", 7: "007"}
    assert export.next_version(str(tmp_path)) == 8
    assert export.next_version(str(tmp_path / "missing")) == 1


def test_invalid_arguments_are_rejected_before_writing(exported, tmp_path):
    encoder = exported["encoder"]
    for kwargs, message in [({"model_name": "a/b"}, "model_name"),
                            ({"model_name": "m", "version": -1}, "version"),
                            ({"model_name": "m", "version": "2"}, "version"),
                            ({"model_name": "m", "image_size": 64, "resize_size": 60},
                             "resize_size")]:
        with pytest.raises(ValueError, match=message):
            export.export_encoder(encoder, str(tmp_path), **kwargs)
    wrong_head = keras.Sequential([keras.Input((7,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="linear_head.keras"):
        export.export_encoder(encoder, str(tmp_path), "m", head=wrong_head)
    assert not os.path.exists(tmp_path / "m") or os.listdir(tmp_path / "m") == []


def test_failure_mid_export_leaves_no_version(exported, tmp_path, monkeypatch):
    seen = []

    def crash_after_partial_write(archive, directory):
        seen.append(directory)
        os.makedirs(os.path.join(directory, "variables"))
        with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(export, "write_archive", crash_after_partial_write)
    base_path = str(tmp_path)
    with pytest.raises(OSError, match="simulated"):
        export.export_encoder(exported["encoder"], base_path, "demo", version=4)
    model_dir = tmp_path / "demo"
    assert os.listdir(model_dir) == []
    # The temporary directory lived inside the model directory, under a name TF Serving skips.
    name = os.path.basename(seen[0])
    assert os.path.dirname(seen[0]) == str(model_dir) and name.startswith(export.TMP_PREFIX)
    assert not name.lstrip().lstrip("+-").isdigit()

    # A failed overwrite keeps the old version intact.
    os.makedirs(model_dir / "4")
    (model_dir / "4" / "saved_model.pb").write_bytes(b"old version")
    with pytest.raises(OSError, match="simulated"):
        export.export_encoder(exported["encoder"], base_path, "demo", version=4, overwrite=True)
    assert os.listdir(model_dir) == ["4"]
    assert (model_dir / "4" / "saved_model.pb").read_bytes() == b"old version"

    # A crash at the final rename, after the old version was moved aside, puts it back.
    def write_fully(archive, directory):
        os.makedirs(directory)
        (tmp_path / "demo" / os.path.basename(directory) / "saved_model.pb").write_bytes(b"new")

    real_rename = os.rename

    def failing_rename(src, dst):
        if os.path.basename(src).startswith(export.TMP_PREFIX + "export"):
            raise OSError("rename failed (simulated)")
        return real_rename(src, dst)

    monkeypatch.setattr(export, "write_archive", write_fully)
    monkeypatch.setattr(export.os, "rename", failing_rename)
    with pytest.raises(OSError, match="rename failed"):
        export.export_encoder(exported["encoder"], base_path, "demo", version=4, overwrite=True)
    assert os.listdir(model_dir) == ["4"]
    assert (model_dir / "4" / "saved_model.pb").read_bytes() == b"old version"


def signature_outputs(version_dir):
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    signatures = saved_model.meta_graphs[0].signature_def
    return {name: sorted(sig.outputs) for name, sig in signatures.items()
            if not name.startswith("__")}


def holders(**values):
    """Stand-ins for a CLI's absl FlagHolders: its `main` reads only `.value`."""
    return {name: types.SimpleNamespace(value=value) for name, value in values.items()}


def test_export_cli_overwrites_a_version_with_encoder_and_head(exported, tmp_path, capsys):
    from relicv2_tf.cli import export as export_cli  # defines no flags at import

    encoder_dir = tmp_path / "workdir" / "encoder"
    encoder_io.save_encoder(exported["encoder"], ENCODER_CONFIG, str(encoder_dir))
    head_path = tmp_path / "linear_head.keras"
    exported["head"].save(head_path)
    model_dir = tmp_path / "models" / "relicv2"
    shutil.copytree(exported["path"], model_dir / "1")
    (model_dir / "1" / "old_marker").write_text("from the previous export")
    os.makedirs(model_dir / "2")
    flag_values = holders(
        encoder_dir=None, workdir=str(tmp_path / "workdir"), linear_head=str(head_path),
        base_path=str(tmp_path / "models"), model_name="relicv2", version=1, overwrite=True,
        image_size=32, resize_size=None)
    export_cli.main(flag_values, ["relicv2-export"])
    path = str(model_dir / "1")
    out = capsys.readouterr().out
    assert f"Exported {encoder_dir} -> {path}" in out
    assert "(resize 37, crop 32) -> ['embedding', 'logits', 'probabilities']" in out
    assert sorted(os.listdir(model_dir)) == ["1", "2"]  # replaced in place, nothing left over
    assert not (model_dir / "1" / "old_marker").exists()
    assert signature_outputs(path) == {name: ["embedding", "logits", "probabilities"]
                                       for name in ("serving_default", "serving_bytes")}
    with pytest.raises(ValueError, match="exactly one of --encoder_dir"):
        export_cli.encoder_directory(str(encoder_dir), str(tmp_path / "workdir"))
    with pytest.raises(FileNotFoundError, match="relicv2-pretrain"):
        export.export_encoder_directory(str(tmp_path), str(tmp_path / "models"), "relicv2")
    with pytest.raises(FileNotFoundError, match="linear_head"):
        export.export_encoder_directory(str(encoder_dir), str(tmp_path / "models"), "relicv2",
                                        linear_head=str(tmp_path / "nope.keras"))
    flag_values["linear_head"].value = str(tmp_path / "nope.keras")
    with pytest.raises(SystemExit) as exit_info:  # the CLI's one error path: a line, exit 2
        export_cli.main(flag_values, ["relicv2-export"])
    assert exit_info.value.code == 2
    assert "relicv2-export: --linear_head=" in capsys.readouterr().err
