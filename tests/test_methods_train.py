"""Baseline methods train: loss goes down, BG_Swaps hard negatives enter the first-step loss
exactly, the MoCo queue / Sinkhorn / SimCLR gradients are right and a SwAV multi-crop step
runs under MirroredStrategy; SwAV's head sees all crops at once, as in the authors' code."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf import train
from relicv2_tf.data import views
from relicv2_tf.methods import build_method
from relicv2_tf.methods.base import views_to_batch
from relicv2_tf.methods.simclr import views_and_hard_negatives

REPO = Path(__file__).resolve().parents[1]
BATCH = 16
STEPS_PER_EPOCH = 64 / BATCH  # data.num_examples / training.batch_size of tiny_method_config


def tiny_method_config(method, **overrides):
    """The method's paper config shrunk to a CPU test: synthetic 32 px, ResNet-18/4, batch 16."""
    config = importlib.import_module(f"experiments.configs.{method}").get_config()
    data = config.data
    data.source, data.tfds_name, data.data_dir = "synthetic", "", ""
    data.image_size, data.small_image_size = 32, 16
    data.num_examples, data.cache, data.shuffle_buffer = 64, True, 64
    if method == "swav":
        data.num_small_views = 1
        config.loss.num_prototypes = 16
        config.loss.freeze_prototypes_epochs = 0.5  # 2 steps: 64 examples / batch 16
    if method == "moco_v2":
        config.loss.queue_size = 2 * BATCH
        config.loss.shuffle_bn_splits = 2  # key batch-norm groups of 8 (fewer network calls)
        config.training.base_target_ema = 0.99
    model = config.model
    model.depth, model.width_multiplier, model.synchronized_bn = 18, 0.25, False
    model.projector_hidden_dim, model.projector_output_dim, model.predictor_hidden_dim = 32, 16, 32
    config.training.batch_size = BATCH
    config.training.mixed_precision = ""
    config.optimizer.warmup_epochs = 0
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def fixed_batch(config, seed=0):
    dataset = views.pretrain_dataset(config.data, batch_size=config.training.batch_size,
                                     seed=seed)
    return next(iter(dataset))


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def moco_first_loss(model, batch, queue, temperature, use_hard=True):
    """MoCo's q1 . k2 loss from the networks' outputs, in numpy (first step, before updates);
    keys and hard negatives through the key encoder with the step's Shuffle-BN seeds."""
    large = batch["large"]
    query = unit(model.online_projections(large[:, 0]).numpy())
    key = model.key_projections(large[:, 1], model.input_seed(1)).numpy()
    hard = model.key_projections(batch["hard_negative"], model.input_seed(2)).numpy()
    logits = [np.sum(query * key, 1, keepdims=True), query @ unit(queue).T]
    if use_hard:
        hard_logit = np.sum(query * hard, 1, keepdims=True)
        logits.append(np.where(batch["hard_negative_valid"].numpy()[:, None] > 0, hard_logit,
                               -np.inf))
    return -log_softmax(np.concatenate(logits, 1) / temperature)[:, 0].mean()


def simclr_first_loss(model, batch, temperature, use_hard=True):
    images, num_views, valid = views_and_hard_negatives(batch)
    z1, z2, hard = np.split(model.online_projections(images).numpy(), num_views + 1)
    n = len(z1)
    z = unit(np.concatenate([z1, z2]))
    sim = z @ z.T / temperature
    np.fill_diagonal(sim, -np.inf)
    extra = np.full((2 * n, 1), -np.inf)
    if use_hard:
        hard_logit = np.sum(unit(z1) * unit(hard), 1) / temperature
        extra[:n, 0] = np.where(valid.numpy() > 0, hard_logit, -np.inf)
    logp = log_softmax(np.concatenate([sim, extra], 1))
    positives = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    return -np.mean(logp[np.arange(2 * n), positives])


@pytest.mark.parametrize("method,base_lr", [("byol", 1.0), ("moco_v2", 0.5), ("swav", 1.0),
                                            ("simclr", 1.0)])
def test_training_reduces_loss_and_hard_negatives_enter_the_loss(method, base_lr):
    steps = 8
    bg_swaps = method in ("moco_v2", "simclr")
    config = tiny_method_config(method, **{"optimizer.base_learning_rate": base_lr,
                                           "data.bg_swaps_prob": 1.0 if bg_swaps else 0.0})
    batch = fixed_batch(config)
    model = build_method(config, total_steps=steps, steps_per_epoch=STEPS_PER_EPOCH)
    model.compile(optimizer=train.make_optimizer(config, steps, steps_per_epoch=steps))
    expected_first = None
    if bg_swaps:
        assert float(tf.reduce_sum(batch["hard_negative_valid"])) >= BATCH // 2
        temperature = config.loss.temperature
        if method == "moco_v2":
            queue = model.queue.numpy()
            expected_first = moco_first_loss(model, batch, queue, temperature)
            without = moco_first_loss(model, batch, queue, temperature, use_hard=False)
        else:
            expected_first = simclr_first_loss(model, batch, temperature)
            without = simclr_first_loss(model, batch, temperature, use_hard=False)
        assert expected_first - without > 1e-3  # the hard negatives make a visible difference
    # One step per Keras epoch: history["loss"][i] is the loss of step i.
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    history = model.fit(dataset, epochs=steps, steps_per_epoch=1, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    if expected_first is not None:
        np.testing.assert_allclose(history[0], expected_first, rtol=2e-4)
    # Compared from step 2: MoCo's queue starts as random vectors (easy negatives) and is full
    # of real keys (2 batches) from step 2 on.
    assert np.mean(history[-2:]) < history[2], history


def test_swav_head_normalises_large_and_small_crops_together():
    """The authors' multi-crop forward (facebookresearch/swav src/resnet50.py) runs the backbone
    once per resolution and the head once on the concatenation: the head's batch norm shares
    its statistics across large and small crops. Per-resolution head passes differ."""
    config = tiny_method_config("swav")
    batch = fixed_batch(config)
    model = build_method(config, total_steps=4, steps_per_epoch=STEPS_PER_EPOCH)
    # The loss section's epochs in steps of this run (4 steps per epoch).
    assert (model.freeze_prototypes_steps, model.queue_start_steps) == (2, 60)
    large, small = batch["large"], batch["small"]
    got = np.concatenate([e.numpy() for e in model.crop_embeddings(large, small)])
    features = [model.online_encoder(views_to_batch(x), training=True).numpy()
                for x in (large, small)]
    joint = model.online_projector(np.concatenate(features), training=True).numpy()
    separate = np.concatenate([model.online_projector(f, training=True).numpy()
                               for f in features])
    np.testing.assert_allclose(got, unit(joint), atol=1e-5)
    assert np.abs(got - unit(separate)).max() > 1e-2  # the test can tell the two apart
    assert got.shape == ((large.shape[1] + small.shape[1]) * BATCH, 16)


MIRRORED_CHECK = r"""
from relicv2_tf import distribute
distribute.split_cpu(2)
import numpy as np
import tensorflow as tf
from relicv2_tf import losses, train
from relicv2_tf.methods import build_method
from relicv2_tf import cross_replica
from tests.test_methods_train import BATCH, STEPS_PER_EPOCH, fixed_batch, tiny_method_config

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
half = BATCH // 2

def per_replica(tensors):
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.nest.map_structure(
            lambda t: t[ctx.replica_id_in_sync_group * half:][:half], tensors))

# 1. MoCo queue: after each step, every replica's queue = [gathered new keys; old[:-B]].
config = tiny_method_config("moco_v2")
with strategy.scope():
    model = build_method(config, total_steps=2, steps_per_epoch=STEPS_PER_EPOCH)
    model.compile(optimizer=train.make_optimizer(config, 2, 2))
train_step = tf.function(lambda data: strategy.run(model.train_step, args=(data,)))

@tf.function
def key_view_keys(data):  # the keys of view 2 (q1's positives), under Shuffle-BN
    return strategy.run(lambda d: model.key_projections(d["large"][:, 1], model.input_seed(1)),
                        args=(data,))

old = model.queue.numpy()
for seed in (0, 1):
    batch = {k: v for k, v in fixed_batch(config, seed).items() if k in ("large",)}
    data = per_replica(batch)
    keys = np.concatenate([k.numpy() for k in strategy.experimental_local_results(
        key_view_keys(data))])
    train_step(data)
    copies = [v.numpy() for v in model.queue.value.values]
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[0], copies[1])
    np.testing.assert_allclose(copies[0], np.concatenate([keys, old[:-BATCH]]), atol=1e-5)
    old = copies[0]

# 2. Sinkhorn over the global batch: 2 replicas x 8 rows == one device x 16 rows.
rng = np.random.default_rng(0)
z = rng.normal(size=(BATCH, 8)); c = rng.normal(size=(5, 8))
scores = tf.constant((z / np.linalg.norm(z, axis=1, keepdims=True))
                     @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T, tf.float32)
codes = tf.function(lambda s: strategy.run(
    lambda x: losses.sinkhorn_knopp(x, all_reduce_sum=cross_replica.all_reduce_sum), args=(s,)))(
    per_replica(scores))
codes = np.concatenate([c.numpy() for c in strategy.experimental_local_results(codes)])
np.testing.assert_allclose(codes, losses.sinkhorn_knopp(scores).numpy(), rtol=1e-4, atol=1e-7)

# 3. SimCLR: gradients through the gathered negatives add up to the single-device gradient.
x1, x2 = (tf.constant(rng.normal(size=(BATCH, 6)), tf.float32) for _ in range(2))
w0 = rng.normal(size=(6, 4)).astype(np.float32)
with strategy.scope():
    w = tf.Variable(w0)

def local_grad(x1, x2):
    ctx = tf.distribute.get_replica_context()
    with tf.GradientTape() as tape:
        z1, z2 = x1 @ w, x2 @ w
        loss = losses.nt_xent_loss(z1, z2, temperature=0.5,
                                   view1_all=cross_replica.gather(z1, with_gradient=True),
                                   view2_all=cross_replica.gather(z2, with_gradient=True),
                                   row_offset=ctx.replica_id_in_sync_group * half,
                                   global_batch_size=BATCH)
    return tape.gradient(loss, w)

grads = tf.function(lambda a, b: strategy.run(local_grad, args=(a, b)))(
    per_replica(x1), per_replica(x2))
grad = sum(g.numpy() for g in strategy.experimental_local_results(grads))
w_single = tf.Variable(w0)
with tf.GradientTape() as tape:
    loss = losses.nt_xent_loss(x1 @ w_single, x2 @ w_single, temperature=0.5)
np.testing.assert_allclose(grad, tape.gradient(loss, w_single).numpy(), rtol=1e-4, atol=1e-6)

# 4. SwAV with small crops (head over all crops, Sinkhorn over the global batch): two steps.
config = tiny_method_config("swav")
with strategy.scope():
    model = build_method(config, total_steps=2, steps_per_epoch=STEPS_PER_EPOCH)
    model.compile(optimizer=train.make_optimizer(config, 2, 2))
swav_step = tf.function(lambda data: strategy.run(model.train_step, args=(data,)))
batch = {k: v for k, v in fixed_batch(config).items() if k in ("large", "small")}
assert batch["small"].shape[1] == 1
for _ in range(2):
    logs = swav_step(per_replica(batch))
swav_losses = [float(x) for x in strategy.experimental_local_results(logs["loss"])]
assert np.all(np.isfinite(swav_losses)), swav_losses
assert int(model.optimizer.iterations.numpy()) == 2
print("MIRRORED OK")
"""


def test_moco_queue_sinkhorn_simclr_gradients_and_swav_step_under_mirrored_strategy():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", MIRRORED_CHECK], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "MIRRORED OK" in result.stdout, result.stderr[-3000:]
