"""Every entry point that trains, run from the command line under MirroredStrategy over 2 logical
CPUs (the path of multi-GPU and TPU users), and the distributed evaluation step against one device.

Each test starts its own process: the CPU must be split into logical devices before TensorFlow
initialises, and a CLI is what users run.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import REPO

MIRRORED = ["--strategy=mirrored", "--num_cpu_replicas=2"]
KNN_LINE = "kNN top-1 (k=20"


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _cli(module, args, timeout=900):
    return subprocess.run([sys.executable, "-m", f"relicv2_tf.cli.{module}", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=_env())


def _checkpoint_steps(workdir):
    return sorted(int(p.name.split("-")[1].split(".")[0])
                  for p in Path(workdir, "checkpoints").glob("ckpt-*.index"))


# The Quickstart's demo config, for a few steps at a quarter of its batch (CPU time in CI).
DEMO = ["--config=experiments/configs/demo.py", "--config.training.checkpoint_every_steps=2",
        "--config.training.batch_size=32"]


def test_pretrain_demo_mirrored_prints_knn(tmp_path):
    # Kill and resume under a distribution strategy: test_multi_worker.py (bit-identical).
    out = _cli("pretrain", [*DEMO, *MIRRORED, f"--workdir={tmp_path}",
                            "--config.training.max_steps=4"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Pretraining done: 4 steps" in out.stdout and KNN_LINE in out.stdout
    assert _checkpoint_steps(tmp_path) == [2, 4]
    assert (tmp_path / "encoder" / "encoder.weights.h5").exists()
    knn = json.loads((tmp_path / "knn_eval.json").read_text())
    assert 0.0 < knn["pretrained_top1"] <= 1.0


def test_pretrain_byol_mirrored_with_xla(tmp_path):
    # BYOL's EMA target is cross-replica state (updated in a merge_call), here inside the
    # XLA-compiled step (training.jit_compile; ReLICv2 under XLA: test_performance.py).
    byol_demo = ["--config=experiments/configs/demo.py:byol", *DEMO[1:]]
    out = _cli("pretrain", [*byol_demo, *MIRRORED, f"--workdir={tmp_path}",
                            "--config.data.num_large_views=2", "--config.data.num_small_views=0",
                            "--config.data.mask_apply_prob=0", "--config.training.max_steps=4",
                            "--config.training.jit_compile=True"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Pretraining done: 4 steps" in out.stdout and KNN_LINE in out.stdout
    assert _checkpoint_steps(tmp_path) == [2, 4]
    history = json.loads((tmp_path / "pretrain_summary.json").read_text())["history"]
    assert np.isfinite(history["loss"]).all()


def test_linear_eval_cli_mirrored(tmp_path):
    out = _cli("linear_eval", ["--config=experiments/configs/linear_eval_demo.py", *MIRRORED,
                               "--config.random_init=True", "--config.linear.num_epochs=2",
                               f"--output_dir={tmp_path}", "--progress=false"])
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "linear_eval.json").read_text())
    assert 0.0 < result["metrics"]["top1"] <= 1.0
    assert (tmp_path / "linear_head.keras").exists()


def test_finetune_cli_mirrored(tmp_path):
    out = _cli("finetune", [
        "--config=experiments/configs/finetune_imagenet_1pct.py", *MIRRORED,
        "--config.random_init=True", "--config.model.depth=18",
        "--config.model.width_multiplier=0.25", "--config.num_classes=10",
        "--config.data.source=digits", "--config.data.tfds_name=",
        "--config.test_data.source=digits", "--config.test_data.tfds_name=",
        "--config.test_split=test", "--config.resize_size=32", "--config.finetune.image_size=32",
        "--config.data.num_examples=256", "--config.finetune.batch_size=64",
        "--config.finetune.num_epochs=1",
        "--config.finetune.decay_epochs=()", f"--output_dir={tmp_path}", "--progress=false"])
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "finetune.json").read_text())
    assert 0.0 < result["metrics"]["top1"] <= 1.0
    assert (tmp_path / "encoder" / "encoder.weights.h5").exists()


def test_supervised_cli_mirrored(tmp_path):
    out = _cli("supervised", ["--config=experiments/configs/supervised_demo.py", *MIRRORED,
                              "--config.supervised.num_epochs=1", "--config.data.num_examples=256",
                              f"--output_dir={tmp_path}", "--progress=false"])
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "supervised.json").read_text())
    assert 0.0 < result["metrics"]["top1"] <= 1.0


def test_transfer_cli_mirrored_linear_and_finetune(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        for c, name in enumerate(("red", "green")):
            folder = tmp_path / "folders" / "aircraft" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 60, size=(36, 36, 3))
                image[..., c] += 180
                Image.fromarray(image.astype(np.uint8)).save(folder / f"{i}.png")
    out = _cli("transfer", [
        "--config=experiments/configs/transfer.py", *MIRRORED, "--config.random_init=True",
        "--config.model.depth=18", "--config.model.width_multiplier=0.25",
        "--config.datasets=aircraft", "--config.protocol=both",
        f"--config.image_folder_root={tmp_path / 'folders'}", "--config.eval_batch_size=8",
        "--config.linear.batch_size=4", "--config.linear.num_epochs=2",
        "--config.linear.image_size=32", "--config.linear.resize_size=32",
        "--config.linear_sweep.learning_rate=(0.1,)", "--config.linear_sweep.weight_decay=(0.0,)",
        "--config.finetune.batch_size=4", "--config.finetune.num_epochs=1",
        "--config.finetune.decay_epochs=()", "--config.finetune.image_size=32",
        "--config.finetune_sweep.learning_rate=(0.01,)", f"--output_dir={tmp_path / 'out'}",
        "--progress=false"])
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "transfer.json").read_text())
    assert set(result["metrics"]) == {"aircraft/linear", "aircraft/finetune"}


EQUALITY_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    from relicv2_tf import distribute
    distribute.split_cpu(2)
    import keras, numpy as np, tensorflow as tf
    from relicv2_tf.evaluation import engine, features, linear_head
    from relicv2_tf.models import resnet

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(2, 10, 16, 16, 3)).astype(np.float32)  # 2 steps of 10
    labels = rng.integers(0, 3, size=(2, 10)).astype(np.int32)
    odd = (images[0, :7], labels[0, :7])  # a batch that splits unevenly (3 + 4)

    def run(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            encoder = resnet.resnet(18, 0.125, name="encoder")
            head = linear_head.make_linear_head(int(encoder.output_shape[-1]), 3, seed=0)
            x = keras.Input((None, None, 3))
            model = keras.Model(x, head(encoder(x)))
            optimizer = engine.sgd(0.1)
            optimizer.build(model.trainable_variables)
        # Batch norm in inference mode, every variable trained (fine-tuning with frozen batch
        # statistics, `finetune.bn_training=False`): the update must not depend on the split.
        step = engine.classifier_step(model, optimizer, training=False, l2_weight_decay=1e-3,
                                      strategy=strategy)
        losses = [float(step(images[i], labels[i])[0]) for i in range(2)] + [float(step(*odd)[0])]
        extracted = features.extract_features(
            encoder, [(images[0, :7], labels[0, :7])], progress=False, strategy=strategy)[0]
        return {{"losses": losses, "features": extracted.tolist(),
                "weights": [np.asarray(v).ravel()[:40].tolist()
                            for v in model.trainable_variables]}}

    def guard_on_one_replica(strategy):
        # A NaN in replica 1's rows only: both replicas skip the update and stay identical.
        with strategy.scope():
            head = linear_head.make_linear_head(4, 3, seed=0)
            optimizer = engine.sgd(0.1)
            optimizer.build(head.trainable_variables)
        step = engine.classifier_step(head, optimizer, strategy=strategy)
        batch = rng.normal(size=(8, 4)).astype(np.float32)
        batch[6, 1] = np.nan  # rows 4-7 are replica 1's
        before = [np.asarray(v).copy() for v in head.weights]
        _, applied = step(batch, labels[0, :8])
        copies = [[np.asarray(c) for c in strategy.experimental_local_results(v.value)]
                  for v in head.weights]
        unchanged = all(np.array_equal(c, b) for cs, b in zip(copies, before) for c in cs)
        # The ReLICv2 train step under the same strategy: same guard, through merge_call.
        from relicv2_tf.methods import build_method
        from relicv2_tf.optim import lars
        from tests.conftest import tiny_config
        from tests.test_relicv2_train import _fixed_batch
        with strategy.scope():
            model = build_method(tiny_config(), total_steps=10)
            model.compile(optimizer=lars.LARS(0.1))
        batch = _fixed_batch(batch=8)
        batch["small"][7, 0, 3, 3, 2] = np.nan  # example 7: replica 1
        online = [np.asarray(v).copy() for v in model.online_variables()]
        model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        model_unchanged = all(np.array_equal(np.asarray(v), w)
                              for v, w in zip(model.online_variables(), online))
        return {{"applied": bool(applied), "unchanged": unchanged,
                "model_unchanged": model_unchanged,
                "model_nonfinite_steps": int(model.nonfinite_steps.numpy()),
                "model_step": int(model.optimizer.iterations.numpy())}}

    mirrored = distribute.get_strategy("mirrored")
    print(json.dumps({{"replicas": mirrored.num_replicas_in_sync,
                      "single": run(tf.distribute.get_strategy()), "mirrored": run(mirrored),
                      "guard": guard_on_one_replica(mirrored)}}))
""")


def test_distributed_classifier_step_and_features_equal_one_device():
    """Three fine-tuning steps (L2 decay; the last batch splits unevenly, 3 + 4 rows) and feature
    extraction: 2 replicas and 1 device on the same global batches give the same losses, the same
    updated weights (so the same summed gradients) and the same features in the same order.
    And the non-finite guard decides for all replicas at once."""
    out = subprocess.run([sys.executable, "-c", EQUALITY_SCRIPT.format(repo=str(REPO))],
                         capture_output=True, text=True, timeout=600, cwd=REPO, env=_env())
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    single, mirrored = result["single"], result["mirrored"]
    np.testing.assert_allclose(mirrored["losses"], single["losses"], rtol=1e-5)
    for a, b in zip(single["weights"], mirrored["weights"]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mirrored["features"], single["features"], rtol=1e-5, atol=1e-6)
    # A NaN on one replica: neither applies anything (classifier step and ReLICv2 step).
    assert result["guard"] == {"applied": False, "unchanged": True, "model_unchanged": True,
                               "model_nonfinite_steps": 1, "model_step": 1}
