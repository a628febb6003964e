"""The ReLICv2 train step: learning, EMA target, metrics, and equality under MirroredStrategy."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf.methods import build_method
from relicv2_tf.optim import lars
from tests.conftest import REPO, tiny_config


def _fixed_batch(batch=16, seed=0):
    rng = np.random.default_rng(seed)
    return {"large": rng.normal(size=(batch, 2, 32, 32, 3)).astype("float32"),
            "small": rng.normal(size=(batch, 1, 16, 16, 3)).astype("float32")}


def _model(config, lr=0.05, steps=100):
    model = build_method(config, total_steps=steps)
    model.compile(optimizer=lars.LARS(lr, weight_decay=0.0, eeta=0.02))
    return model


def test_loss_decreases_on_a_fixed_batch():
    tf.keras.utils.set_random_seed(0)
    model = _model(tiny_config(**{"loss.num_negatives": -1}), lr=0.5)
    data = tf.data.Dataset.from_tensors(_fixed_batch()).repeat(30)
    history = model.fit(data, epochs=1, verbose=0).history
    logs = model.fit(tf.data.Dataset.from_tensors(_fixed_batch()).repeat(1), epochs=1,
                     verbose=0).history
    # Chance level with 15 negatives is log(16) = 2.77; training on one batch must go well below.
    assert logs["contrastive"][0] < np.log(16) - 0.3, (history, logs)


@pytest.mark.parametrize("schedule,base_ema,expected", [
    # ReLICv2 (appendix G.3, Table 22): a fixed rate; step 2 uses tau = 0.99 again.
    ("constant", 0.99, [0.99, 0.99]),
    # BYOL (section 3.2): tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, K = 10 steps:
    # k = 0 -> 0.996, k = 1 -> 1 - 0.004 (cos(0.1 pi) + 1) / 2 = 0.996097887.
    ("cosine", 0.996, [0.996, 0.996097887]),
])
def test_target_is_ema_of_online_after_each_step(schedule, base_ema, expected):
    """xi_k = tau_k xi_{k-1} + (1 - tau_k) theta_k, with tau_k computed by hand."""
    tf.keras.utils.set_random_seed(1)
    config = tiny_config(**{"training.target_ema_schedule": schedule,
                            "training.base_target_ema": base_ema})
    model = _model(config, steps=10)

    def params(network):
        return [np.asarray(v) for v in network.weights if "moving" not in v.path]

    target = params(model.target_encoder)
    np.testing.assert_allclose(params(model.online_encoder)[0], target[0])  # starts as a copy
    for tau in expected:
        model.fit(tf.data.Dataset.from_tensors(_fixed_batch()), epochs=1, verbose=0)
        online = params(model.online_encoder)
        target_after = params(model.target_encoder)
        for tb, ta, oa in zip(target, target_after, online):
            np.testing.assert_allclose(ta, tau * tb + (1 - tau) * oa, rtol=1e-5, atol=1e-7)
        target = target_after
    assert not np.allclose(online[0], target[0])


def test_target_network_normalises_with_its_batch_statistics():
    """The frozen EMA target runs batch norm in training mode, as BYOL's target does: a row's
    embedding depends on the rest of the batch, and the target's moving statistics move."""
    model = _model(tiny_config())
    images = _fixed_batch(batch=8)["large"][:, 0]
    whole = np.asarray(model.target_projections(images))
    half = np.asarray(model.target_projections(images[:4]))
    assert not np.allclose(whole[:4], half, atol=1e-4)
    moving = [v for v in model.target_encoder.weights if "moving_mean" in v.path][0]
    assert np.abs(np.asarray(moving)).max() > 0  # updated from 0 by the passes above
    assert not any(v.trainable for v in model.target_encoder.weights)


def test_metrics_are_logged():
    model = _model(tiny_config())
    logs = model.fit(tf.data.Dataset.from_tensors(_fixed_batch()), epochs=1, verbose=0).history
    assert set(logs) == {"loss", "contrastive", "invariance", "learning_rate", "target_ema"}
    assert logs["loss"][0] == pytest.approx(logs["contrastive"][0] + logs["invariance"][0],
                                            rel=1e-5)
    assert logs["learning_rate"][0] == pytest.approx(0.05)


def test_optimizer_sees_only_online_variables():
    model = _model(tiny_config())
    trainable = {id(v) for v in model.trainable_variables}
    assert trainable == {id(v) for v in model.online_variables()}
    assert not trainable & {id(v) for v in model.target_encoder.weights}
    assert len(model.optimizer._momenta) == len(model.online_variables())


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    from relicv2_tf import distribute
    distribute.split_cpu(2)
    import numpy as np, tensorflow as tf
    from relicv2_tf.methods import build_method
    from relicv2_tf.optim import lars
    from tests.conftest import tiny_config
    from tests.test_relicv2_train import _fixed_batch

    def run(strategy, synchronized):
        config = tiny_config(**{{"model.synchronized_bn": synchronized,
                                "loss.num_negatives": 3}})
        with strategy.scope():
            tf.keras.utils.set_random_seed(0)
            model = build_method(config, total_steps=10)
            model.compile(optimizer=lars.LARS(0.1, weight_decay=1e-4))
        data = tf.data.Dataset.from_tensors(_fixed_batch(batch=8))
        logs = model.fit(data, epochs=1, verbose=0).history
        weights = [np.asarray(v).ravel()[:50].tolist() for v in model.online_variables()[:6]]
        target = [np.asarray(v).ravel()[:50].tolist() for v in model.target_encoder.weights[:4]]
        return {{"logs": logs, "weights": weights, "target": target}}

    single = run(tf.distribute.get_strategy(), True)
    mirrored = run(distribute.get_strategy("mirrored"), True)
    print(json.dumps({{"single": single, "mirrored": mirrored,
                      "replicas": distribute.get_strategy("mirrored").num_replicas_in_sync}}))
""")


def test_mirrored_two_replicas_equal_single_device():
    """Same global batch on 1 device and on 2 logical CPUs (synchronised BN, cross-replica
    negatives): same losses, same updated weights (so the same gradients), same EMA target."""
    script = MIRRORED_SCRIPT.format(repo=str(REPO))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    import json
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    single, mirrored = result["single"], result["mirrored"]
    for key in ("loss", "contrastive", "invariance"):
        np.testing.assert_allclose(mirrored["logs"][key], single["logs"][key], rtol=1e-5)
    for a, b in zip(single["weights"] + single["target"], mirrored["weights"] + mirrored["target"]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
