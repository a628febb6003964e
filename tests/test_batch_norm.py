"""relicv2_tf.models.batch_norm: packed cross-replica statistics == numpy == Keras's sync BN."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf

from relicv2_tf.models import batch_norm


def test_packed_moments_match_numpy_on_one_device():
    x = np.random.RandomState(0).normal(2.0, 3.0, size=(6, 5, 4, 7)).astype(np.float32)
    mean, variance = batch_norm.packed_moments(tf.constant(x), [0, 1, 2], lambda v: v)
    np.testing.assert_allclose(mean.numpy(), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(variance.numpy(), x.var(axis=(0, 1, 2)), rtol=1e-4)


def test_packed_moments_sum_over_replicas():
    # Two "replicas" of different sizes: the all-reduce adds the other replica's packed vector.
    rng = np.random.RandomState(1)
    a, b = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(1.0, 2.0, (9, 5)).astype(
        np.float32)
    packed_b = tf.concat([tf.reduce_sum(b, 0), tf.reduce_sum(b * b, 0), [9.0]], 0)
    mean, variance = batch_norm.packed_moments(tf.constant(a), [0], lambda v: v + packed_b)
    both = np.concatenate([a, b])
    np.testing.assert_allclose(mean.numpy(), both.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance.numpy(), both.var(0), rtol=1e-4)


def test_layer_without_sync_is_keras_batch_norm():
    x = np.random.RandomState(2).normal(size=(8, 3, 3, 4)).astype(np.float32)
    ours = batch_norm.BatchNormalization(synchronized=False)
    reference = keras.layers.BatchNormalization()
    np.testing.assert_allclose(ours(x, training=True).numpy(),
                               reference(x, training=True).numpy(), atol=1e-6)


SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, tensorflow as tf, keras
    from relicv2_tf import distribute
    from relicv2_tf.models import batch_norm
    distribute.split_cpu(2)
    strategy = distribute.get_strategy("mirrored")
    x = np.random.RandomState(3).normal(1.0, 2.0, size=(8, 4, 4, 6)).astype(np.float32)
    upstream = np.random.RandomState(4).normal(size=x.shape).astype(np.float32)
    with strategy.scope():
        layers = {"ours": batch_norm.BatchNormalization(synchronized=True, epsilon=1e-5),
                  "keras": keras.layers.BatchNormalization(synchronized=True, epsilon=1e-5)}
        for layer in layers.values():
            layer.build(x.shape)
    inputs = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[4 * ctx.replica_id_in_sync_group:][:4]))
    grads = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(upstream[4 * ctx.replica_id_in_sync_group:][:4]))
    result = {}
    for name, layer in layers.items():
        def step(inp, g):
            with tf.GradientTape() as tape:
                tape.watch(inp)
                out = layer(inp, training=True)
                loss = tf.reduce_sum(out * g)
            return out, tape.gradient(loss, inp)
        fn = tf.function(lambda a, b: strategy.run(step, args=(a, b)))
        out, dx = fn(inputs, grads)
        graph_def = fn.get_concrete_function(inputs, grads).graph.as_graph_def()
        op_types = [n.op for n in graph_def.node] + [
            n.op for f in graph_def.library.function for n in f.node_def]
        collectives = sum(t.startswith("CollectiveReduce") for t in op_types)
        result[name] = {
            "out": np.concatenate(
                [t.numpy() for t in strategy.experimental_local_results(out)]).tolist(),
            "dx": np.concatenate(
                [t.numpy() for t in strategy.experimental_local_results(dx)]).tolist(),
            "moving_mean": layer.moving_mean.numpy().tolist(), "collectives": int(collectives)}
    print(json.dumps(result))
""")


def test_one_all_reduce_under_mirrored_strategy_same_values_and_gradients_as_keras():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ours, keras_sync = result["ours"], result["keras"]
    x = np.random.RandomState(3).normal(1.0, 2.0, size=(8, 4, 4, 6)).astype(np.float32)
    # Whole-batch statistics (both replicas) in numpy; gamma = 1, beta = 0.
    expected = (x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(np.array(ours["out"]), expected, atol=2e-5)
    np.testing.assert_allclose(np.array(ours["out"]), np.array(keras_sync["out"]), atol=2e-5)
    np.testing.assert_allclose(np.array(ours["dx"]), np.array(keras_sync["dx"]), atol=2e-5)
    np.testing.assert_allclose(ours["moving_mean"], keras_sync["moving_mean"], atol=1e-6)
    # Forward + backward, per replica: Keras 3 + 2 collectives (10 in all), ours 1 + 1 (4).
    assert keras_sync["collectives"] >= 3
    assert 1 <= ours["collectives"] < keras_sync["collectives"]
