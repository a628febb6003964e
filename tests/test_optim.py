"""LARS and schedules against numpy transcriptions of their definitions."""

import math

import keras
import numpy as np
import pytest

from relicv2_tf.optim import lars, schedules


def numpy_lars(w, grads, lr, momentum, weight_decay, eeta, nesterov, decay, adapt):
    """The issue's update rule, written independently."""
    w = w.copy()
    v = np.zeros_like(w)
    for g in grads:
        g = g.copy()
        if decay:
            g = g + weight_decay * w
        if adapt:
            wn, gn = np.linalg.norm(w), np.linalg.norm(g)
            trust = eeta * wn / gn if wn > 0 and gn > 0 else 1.0
            g = trust * g
        v = momentum * v + lr * g
        w = w - (momentum * v + lr * g) if nesterov else w - v
    return w


def _run_keras(optimizer, layer_weights, grads_per_step):
    """Applies the gradients to a Dense layer's kernel and bias; returns final values."""
    layer = keras.layers.Dense(3, name="dense")
    layer.build((None, 4))
    layer.kernel.assign(layer_weights[0])
    layer.bias.assign(layer_weights[1])
    optimizer.build([layer.kernel, layer.bias])
    for g_kernel, g_bias in grads_per_step:
        optimizer.apply_gradients([(g_kernel, layer.kernel), (g_bias, layer.bias)])
    return np.asarray(layer.kernel), np.asarray(layer.bias)


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_numpy_over_steps(nesterov):
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(4, 3)), rng.normal(size=3)
    grads = [(rng.normal(size=(4, 3)), rng.normal(size=3)) for _ in range(5)]
    hp = dict(momentum=0.9, weight_decay=0.01, eeta=0.002)
    opt = lars.LARS(learning_rate=0.5, nesterov=nesterov, **hp)
    k, b = _run_keras(opt, (kernel, bias), [(g.astype("float32"), h.astype("float32"))
                                            for g, h in grads])
    # The kernel is decayed and adapted; the bias (excluded by default) is neither.
    k_ref = numpy_lars(kernel, [g for g, _ in grads], 0.5, nesterov=nesterov, decay=True,
                       adapt=True, **hp)
    b_ref = numpy_lars(bias, [h for _, h in grads], 0.5, nesterov=nesterov, decay=False,
                       adapt=False, **hp)
    np.testing.assert_allclose(k, k_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, b_ref, rtol=1e-5, atol=1e-6)


def test_lars_zero_weights_use_unit_trust():
    kernel = np.zeros((4, 3))
    g = np.ones((4, 3), np.float32)
    opt = lars.LARS(learning_rate=0.1, momentum=0.0, weight_decay=0.0, eeta=0.001)
    k, _ = _run_keras(opt, (kernel, np.zeros(3)), [(g, np.zeros(3, np.float32))])
    np.testing.assert_allclose(k, -0.1 * g, rtol=1e-6)  # trust = 1, not 0 or nan


def test_lars_exclusions_resolved_on_paths():
    layer = keras.layers.BatchNormalization(name="initial_batchnorm")
    layer.build((None, 4))
    dense = keras.layers.Dense(2, name="proj")
    dense.build((None, 4))
    variables = [layer.gamma, layer.beta, dense.kernel, dense.bias]
    opt = lars.LARS(0.1, weight_decay=1e-4)
    opt.build(variables)
    assert opt._decayed == [False, False, True, False]
    assert opt._adapted == [False, False, True, False]
    custom = lars.LARS(0.1, weight_decay=1e-4, exclude_from_weight_decay=("proj",),
                       exclude_from_layer_adaptation=())
    custom.build(variables)
    assert custom._decayed == [True, True, False, False]  # "proj" matches proj/bias too
    assert custom._adapted == [True, True, True, True]


def test_lars_config_round_trip():
    opt = lars.LARS(0.2, momentum=0.8, weight_decay=1e-6, eeta=0.01, nesterov=True)
    again = lars.LARS.from_config(opt.get_config())
    assert (again.momentum, again.lars_weight_decay, again.eeta, again.nesterov) == (
        0.8, 1e-6, 0.01, True)


def test_warmup_cosine_matches_formula():
    base, total, warm = 0.8, 100, 10
    for step in [0, 1, 5, 10, 11, 50, 99, 100, 150]:
        if step < warm:
            expected = base * step / warm
        else:
            progress = min((step - warm) / (total - warm), 1.0)
            expected = 0.5 * base * (1 + math.cos(math.pi * progress))
        got = float(schedules.warmup_cosine(step, base, total, warm))
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-7), step


def test_target_ema_schedule_endpoints_and_midpoint():
    assert float(schedules.target_ema_rate(0, 0.996, 1000)) == pytest.approx(0.996)
    assert float(schedules.target_ema_rate(500, 0.996, 1000)) == pytest.approx(0.998)
    assert float(schedules.target_ema_rate(1000, 0.996, 1000)) == pytest.approx(1.0)
    values = [float(schedules.target_ema_rate(s, 0.99, 100)) for s in range(0, 101, 10)]
    assert values == sorted(values)  # monotone increase to 1
    # k = 250 of 1000: 1 - 0.004 (cos(pi / 4) + 1) / 2 = 0.99658578644 (by hand).
    assert float(schedules.target_ema_rate(250, 0.996, 1000, "cosine")) == pytest.approx(
        0.99658578644, abs=1e-9)


def test_constant_target_ema_is_the_rate_at_every_step():
    """ReLICv2's xi_t = tau xi_{t-1} + (1 - tau) theta_t with a fixed tau (appendix G.3)."""
    for step in (0, 1, 499, 1000, 5000):
        assert float(schedules.target_ema_rate(step, 0.99, 1000, "constant")) == pytest.approx(
            0.99, abs=1e-7)
    with pytest.raises(ValueError, match="not one of"):
        schedules.target_ema_rate(0, 0.99, 1000, "linear")


def test_schedule_drives_optimizer_learning_rate():
    schedule = schedules.WarmupCosine(1.0, total_steps=10, warmup_steps=5)
    opt = lars.LARS(schedule)
    _run_keras(opt, (np.ones((4, 3)), np.ones(3)),
               [(np.ones((4, 3), np.float32), np.ones(3, np.float32))] * 3)
    assert float(opt.learning_rate) == pytest.approx(3 / 5)
