"""MoCo-v2 as published: one InfoNCE direction (q1 . k2) whose keys are enqueued, the MLP head
without batch norm, and Shuffle-BN on one device and over 2 MirroredStrategy replicas."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf import config as config_lib
from relicv2_tf import train
from relicv2_tf.methods import build_method, moco_v2
from relicv2_tf.models import heads
from tests.test_methods_train import BATCH, fixed_batch, log_softmax, tiny_method_config, unit

REPO = Path(__file__).resolve().parents[1]
SPLITS = 4  # Shuffle-BN groups of 4 rows of the tiny batch of 16


def numpy_infonce(query, key, queue, temperature):
    """He et al. 2020 eq. 1 with label 0: mean over rows of -log softmax([q.k+, q.queue] / T)."""
    query, key, queue = unit(query), unit(key), unit(queue)
    logits = np.concatenate([np.sum(query * key, 1, keepdims=True), query @ queue.T], 1)
    return -log_softmax(logits / temperature)[:, 0].mean()


def is_batch_norm(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


@pytest.fixture(scope="module")
def moco():
    config = tiny_method_config("moco_v2")  # train steps with 2 key groups of 8
    model = build_method(config, total_steps=4)
    model.compile(optimizer=train.make_optimizer(config, 4, steps_per_epoch=4))
    return model, config, fixed_batch(config)


@pytest.mark.parametrize("overrides,message", [
    ({"loss.shuffle_bn_splits": 3}, "shuffle_bn_splits=3 must be >= 1 and divide"),
    ({"loss.symmetric": True, "loss.queue_size": BATCH}, "queue_size=16 must be >= 32"),
    ({"model.synchronized_bn": True}, "synchronized_bn=True would pool"),
])
def test_config_errors_name_the_fix(overrides, message):
    config_lib.validate(tiny_method_config("moco_v2"))
    with pytest.raises(ValueError, match=message):
        config_lib.validate(tiny_method_config("moco_v2", **overrides))


def test_moco_head_has_no_batch_norm_and_the_default_head_keeps_it(moco):
    model, _, _ = moco
    for projector in (model.online_projector, model.target_projector):
        assert not any(is_batch_norm(layer) for layer in projector.layers)
        assert [type(layer).__name__ for layer in projector.layers[1:]] == [
            "Dense", "ReLU", "Dense"]
    assert sum(is_batch_norm(layer) for layer in heads.mlp(8, 16, 4).layers) == 1
    # The key encoder batch-normalises with batch statistics yet nothing of it is trainable.
    assert {id(v) for v in model.trainable_weights} == {id(v) for v in model.online_variables()}
    assert not any(is_batch_norm(layer)
                   for layer in heads.mlp(8, 16, 4, use_batch_norm=False).layers)


def test_shuffle_bn_encodes_each_shuffled_group_separately_and_restores_the_order(moco):
    model, _, batch = moco
    images = batch["large"][:, 1]
    seed = tf.constant([3, 7], tf.int64)
    keys = moco_v2.shuffle_bn(model.target_projections, images, num_splits=SPLITS,
                              seed=seed).numpy()

    permutation = moco_v2.shuffle_permutation(BATCH, seed).numpy()
    assert sorted(permutation) == list(range(BATCH)) and not np.all(permutation == np.arange(16))
    expected = np.zeros_like(keys)
    for group in permutation.reshape(SPLITS, -1):  # each group batch-normalised on its own
        expected[group] = model.target_projections(tf.gather(images, group)).numpy()
    np.testing.assert_allclose(keys, expected, rtol=1e-4, atol=1e-5)
    whole_batch = model.target_projections(images).numpy()
    assert np.abs(keys - whole_batch).max() > 1e-2  # group statistics differ from the batch's
    np.testing.assert_allclose(
        moco_v2.shuffle_bn(model.target_projections, images, num_splits=1, seed=seed),
        whole_batch, rtol=1e-5, atol=1e-6)

    # Row-wise networks see through the shuffle: rows come back in the original order.
    def inference(x):
        return model.target_projector(model.target_encoder(x, training=False), training=False)

    np.testing.assert_allclose(
        moco_v2.shuffle_bn(inference, images, num_splits=SPLITS, seed=seed),
        inference(images), rtol=1e-4, atol=1e-5)
    rows = tf.reshape(images, [BATCH, -1])
    np.testing.assert_array_equal(
        moco_v2.shuffle_bn(tf.identity, rows, num_splits=SPLITS, seed=seed), rows)


def run_step(model, batch):
    """One train step (a fresh trace, so `model.symmetric` is read) and its loss."""
    model.reset_metrics()
    return float(tf.function(model.train_step)(batch)["loss"])


def test_one_direction_loss_against_numpy_and_the_key_view_is_enqueued(moco):
    model, config, batch = moco
    views = batch["large"]
    queue = model.queue.numpy()
    query = model.online_projections(views[:, 0]).numpy()
    keys = model.key_projections(views[:, 1], model.input_seed(1)).numpy()
    other_keys = model.key_projections(views[:, 0], model.input_seed(0)).numpy()
    expected = numpy_infonce(query, keys, queue, config.loss.temperature)
    symmetric_value = expected + numpy_infonce(
        model.online_projections(views[:, 1]).numpy(), other_keys, queue, config.loss.temperature)

    loss = run_step(model, batch)
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    assert abs(loss - symmetric_value) > 0.5  # not the symmetrised loss
    np.testing.assert_allclose(model.queue.numpy(), np.concatenate([keys, queue[:-BATCH]]),
                               atol=1e-5)  # the keys of view 2 (q1's positives), newest first


def test_symmetric_option_sums_both_directions_and_enqueues_both_key_views(moco):
    model, config, batch = moco
    views = batch["large"]
    queue = model.queue.numpy()
    queries = [model.online_projections(views[:, v]).numpy() for v in (0, 1)]
    keys = [model.key_projections(views[:, v], model.input_seed(v)).numpy() for v in (0, 1)]
    expected = (numpy_infonce(queries[0], keys[1], queue, config.loss.temperature)
                + numpy_infonce(queries[1], keys[0], queue, config.loss.temperature))
    model.symmetric = True
    try:
        loss = run_step(model, batch)
    finally:
        model.symmetric = False
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    np.testing.assert_allclose(
        model.queue.numpy(), np.concatenate([keys[1], keys[0], queue[:-2 * BATCH]]), atol=1e-5)


MIRRORED_SCRIPT = r"""
from relicv2_tf import distribute
distribute.split_cpu(2)
import numpy as np
import tensorflow as tf
from relicv2_tf import config as config_lib
from relicv2_tf import train
from relicv2_tf.methods import build_method, moco_v2
from tests.test_methods_train import BATCH, fixed_batch, tiny_method_config

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
half = BATCH // 2
seed = tf.constant([5, 11], tf.int64)

def per_replica(tensors):
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.nest.map_structure(
            lambda t: t[ctx.replica_id_in_sync_group * half:][:half], tensors))

def local_results(values):
    return np.concatenate([v.numpy() for v in strategy.experimental_local_results(values)])

# 1. A batch-norm-like network (x - its batch mean) over 2 replicas: every row is normalised
#    within its shuffled group of the GLOBAL batch and comes back to its own replica and row.
x = tf.constant(np.random.default_rng(0).normal(size=(BATCH, 3)), tf.float32)
centre = lambda rows: rows - tf.reduce_mean(rows, axis=0, keepdims=True)
permutation = moco_v2.shuffle_permutation(BATCH, seed).numpy()
for splits in (2, 4):  # one group per replica (builder.py), two per replica
    got = local_results(tf.function(lambda x: strategy.run(
        lambda r: moco_v2.shuffle_bn(centre, r, num_splits=splits, seed=seed), args=(x,)))(
        per_replica(x)))
    expected = np.zeros((BATCH, 3), np.float32)
    for group in permutation.reshape(splits, -1):
        expected[group] = x.numpy()[group] - x.numpy()[group].mean(0)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(got - (x.numpy() - x.numpy().mean(0))).max() > 1e-2
    identity = local_results(tf.function(lambda x: strategy.run(
        lambda r: moco_v2.shuffle_bn(tf.identity, r, num_splits=splits, seed=seed),
        args=(x,)))(per_replica(x)))
    np.testing.assert_array_equal(identity, x.numpy())
try:
    tf.function(lambda x: strategy.run(
        lambda r: moco_v2.shuffle_bn(centre, r, num_splits=3, seed=seed), args=(x,)))(
        per_replica(x))
    raise AssertionError("3 groups over 2 replicas must be refused")
except ValueError as error:
    assert "shuffle_bn_splits=3 must be a multiple of the 2 replicas" in str(error)

# 2. The real key network: 2 replicas x 1 group give the keys of 1 device x 2 groups.
config = tiny_method_config("moco_v2", **{"loss.shuffle_bn_splits": 2})
with strategy.scope():
    model = build_method(config, total_steps=2)
    model.compile(optimizer=train.make_optimizer(config, 2, 2))
batch = {"large": fixed_batch(config)["large"]}  # (also the data of both train steps)
one_device = model.key_projections(batch["large"][:, 1], seed).numpy()
replicated = local_results(tf.function(lambda d: strategy.run(
    lambda r: model.key_projections(r["large"][:, 1], seed), args=(d,)))(per_replica(batch)))
np.testing.assert_allclose(replicated, one_device, rtol=1e-4, atol=1e-5)

# 3. Train steps: every replica's queue = [this step's view-2 keys of both replicas; old].
train_step = tf.function(lambda d: strategy.run(model.train_step, args=(d,)))
key_view = tf.function(lambda d: strategy.run(
    lambda r: model.key_projections(r["large"][:, 1], model.input_seed(1)), args=(d,)))
old = model.queue.numpy()
data = per_replica(batch)
for step in range(2):
    keys = local_results(key_view(data))
    logs = train_step(data)
    assert all(np.isfinite(v.numpy()) for v in strategy.experimental_local_results(logs["loss"]))
    copies = [v.numpy() for v in model.queue.value.values]
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[0], copies[1])
    np.testing.assert_allclose(copies[0], np.concatenate([keys, old[:-BATCH]]), atol=1e-5)
    old = copies[0]
print("MOCO MIRRORED OK")
"""


def test_shuffle_bn_and_queue_under_mirrored_strategy():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "MOCO MIRRORED OK" in result.stdout, result.stderr[-3000:]
