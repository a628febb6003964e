"""No NaN is ever applied or checkpointed: the non-finite guard of every training loop, tested by
injecting NaNs (optim/guard.py, methods/base.py, train.py, evaluation/engine.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf import train
from relicv2_tf.evaluation import linear
from relicv2_tf.methods import build_method
from relicv2_tf.optim import guard, lars
from tests.conftest import tiny_config
from tests.test_relicv2_train import _fixed_batch


def _state(model):
    return ([np.asarray(v).copy() for v in model.online_variables()]
            + [np.asarray(v).copy() for v in model.optimizer.variables
               if "iteration" not in v.path])


def test_a_nan_batch_applies_no_update_and_is_counted():
    keras.utils.set_random_seed(0)
    model = build_method(tiny_config(), total_steps=10)
    model.compile(optimizer=lars.LARS(0.1, weight_decay=1e-4))
    good = _fixed_batch(batch=8)
    model.fit(tf.data.Dataset.from_tensors(good), epochs=1, verbose=0)  # builds the slots
    before = _state(model)
    bad = {k: v.copy() for k, v in good.items()}
    bad["large"][3, 0, 5, 5, 0] = np.nan  # one pixel of one view of one example
    model.fit(tf.data.Dataset.from_tensors(bad), epochs=1, verbose=0)
    after = _state(model)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # weights, momenta, target
    assert int(model.optimizer.iterations) == 2  # the step is spent (schedules move on)
    assert int(model.nonfinite_steps) == 1 and int(model.nonfinite_streak) == 1
    model.fit(tf.data.Dataset.from_tensors(good), epochs=1, verbose=0)
    assert int(model.nonfinite_steps) == 1 and int(model.nonfinite_streak) == 0
    assert not np.array_equal(_state(model)[0], after[0])


class PoisonWeightAtStep(keras.callbacks.Callback):
    """Sets one encoder weight to NaN after the given step (a hardware fault, say)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            variable = self.model.online_encoder.trainable_weights[0]
            variable.assign(tf.fill(variable.shape, float("nan")))


@pytest.mark.parametrize("policy", ["stop", "skip_step"])
def test_pretraining_stops_and_never_checkpoints_a_nan_state(tmp_path, policy):
    config = tiny_config(**{"training.max_steps": 12, "training.checkpoint_every_steps": 2,
                            "training.on_nonfinite": policy,
                            "training.max_consecutive_nonfinite": 3,
                            "data.num_examples": 96})
    with pytest.raises(guard.NonFiniteError) as error:
        train.pretrain(config, str(tmp_path), extra_callbacks=[PoisonWeightAtStep(3)],
                       verbose=0)
    message = str(error.value)
    saved = sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.index"))
    # Only the step-2 checkpoint: the poisoned state (from step 3) is never written, and
    # retention (keep 3) had nothing to drop.
    assert saved == ["ckpt-2.index"], (saved, message)
    assert "ckpt-2" in message and "non-finite" in message
    if policy == "stop":
        assert "Step 4:" in message  # the first step after the fault
    else:  # skipped steps 4, 5, 6; the step-4 save found NaN weights and refused
        assert "Step 6:" in message or "step 4" in message


def test_a_checkpoint_of_a_nan_state_is_refused():
    variable = tf.Variable([1.0, float("nan")], name="w")
    with pytest.raises(guard.NonFiniteError, match="w"):
        guard.assert_finite_state([variable], "test")
    guard.assert_finite_state([tf.Variable([1.0, 2.0])], "test")


@pytest.mark.parametrize("policy", ["stop", "skip_step"])
def test_linear_probe_guard(policy, tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(24, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 24).astype(np.int32)
    features[13, 2] = np.inf  # one row of the second batch of the first epoch (order varies)
    kwargs = dict(num_classes=3, batch_size=8, num_epochs=1, augment=False,
                  train_features=(features, labels), progress=False, on_nonfinite=policy,
                  checkpoint_dir=str(tmp_path), checkpoint_every_steps=1)
    if policy == "stop":
        with pytest.raises(guard.NonFiniteError, match="last good checkpoint"):
            linear.train_linear_head(None, None, **kwargs)
        return
    head, info = linear.train_linear_head(None, None, **kwargs)
    assert info["nonfinite_steps"] == 1
    assert all(np.isfinite(np.asarray(w)).all() for w in head.weights)


def test_lars_norms_do_not_overflow():
    """A gradient of norm ~1e25 (its squares overflow float32) gets the same LARS update as the
    same direction at norm ~1: the trust ratio scales it to eeta * ||w||."""
    updates = []
    for scale in (1.0, 1e25):
        variable = keras.Variable(np.ones((4, 4), np.float32), name="kernel")
        optimizer = lars.LARS(0.1, momentum=0.0, weight_decay=0.0, eeta=1e-3)
        optimizer.build([variable])
        gradient = np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4) * np.float32(scale)
        optimizer.apply_gradients([(gradient, variable)])
        updates.append(np.ones((4, 4), np.float32) - np.asarray(variable))
    assert np.isfinite(updates[1]).all()
    np.testing.assert_allclose(updates[1], updates[0], rtol=1e-5)
    np.testing.assert_allclose(float(lars.l2_norm(np.full(3, 1e30, np.float32))),
                               np.sqrt(3) * 1e30, rtol=1e-6)
    assert float(lars.l2_norm(np.zeros(3, np.float32))) == 0.0
