"""Never apply a non-finite update: the guard every training loop puts around its optimizer.

A step is "finite" when its loss and the squared norm of its gradients are finite on every
replica (the squared norm also catches finite gradients too large to square, ~1e19, which no
sane step produces). A non-finite step applies no update (weights and optimizer slots stay as
they were) but still advances the optimizers' step counters, so learning-rate schedules and the
data position stay those of the step taken. The decision is all-reduced, so every replica takes
the same branch. What to do next is the loop's choice (`training.on_nonfinite`): "stop" at the
first such step, or "skip_step" (count, log, go on; stop after `max_consecutive` in a row).

Under MirroredStrategy a `tf.cond` in replica context cannot contain `merge_call` (which
`apply_gradients` uses), so the condition runs in cross-replica context and the update is
called for each replica from its true branch (the pattern of Keras's LossScaleOptimizer);
strategies without merge_call (TPUStrategy) take the cond in replica context.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from relicv2_tf import cross_replica

ON_NONFINITE = ("stop", "skip_step")


def check_config(config, fail):
    """What a training loop does after a non-finite step (`config.training`)."""
    t = config.training
    if t.on_nonfinite not in ON_NONFINITE:
        fail(f"training.on_nonfinite={t.on_nonfinite!r}; choose one of {ON_NONFINITE}.")
    if t.max_consecutive_nonfinite < 1:
        fail(f"training.max_consecutive_nonfinite={t.max_consecutive_nonfinite} must be >= 1.")


class NonFiniteError(RuntimeError):
    """A training loop stopped at a non-finite step (nothing of it was applied or saved)."""


def replicas_all_finite(loss, grads):
    """Whether `loss` and every gradient are finite on every replica (bool scalar, identical
    on all replicas). Gradients may be None (variables without gradient)."""
    squares = [tf.reduce_sum(tf.square(tf.cast(g, tf.float32))) for g in grads if g is not None]
    local = tf.math.is_finite(tf.cast(loss, tf.float32))
    if squares:
        local = local & tf.math.is_finite(tf.add_n(squares))
    bad = cross_replica.all_reduce_sum(tf.cast(tf.logical_not(local), tf.float32))
    return tf.equal(bad, 0.0)


def apply_if_finite(updates, finite, on_skip=None):
    """Applies `updates`, a list of (optimizer, gradients, variables), only when `finite`.

    Otherwise nothing is applied; each optimizer's `iterations` still advances and `on_skip()`
    (if given) runs. Call in replica context (a train step) or with the default strategy.
    """
    optimizers = [optimizer for optimizer, _, _ in updates]
    variables = [list(v) for _, _, v in updates]

    def apply(grads):
        for optimizer, optimizer_grads, optimizer_vars in zip(optimizers, grads, variables):
            optimizer.apply_gradients(zip(optimizer_grads, optimizer_vars))

    def skip():
        for optimizer in optimizers:
            optimizer.iterations.assign_add(1)
        if on_skip is not None:
            on_skip()

    grads = [list(g) for _, g, _ in updates]
    context = tf.distribute.get_replica_context()
    if context is None or tf.__internal__.distribute.strategy_supports_no_merge_call():
        keras.ops.cond(finite, lambda: apply(grads), skip)
        return

    def cross_replica(strategy, finite, grads):
        decision = strategy.experimental_local_results(finite)[0]  # the same on every replica
        keras.ops.cond(decision,
                       lambda: strategy.extended.call_for_each_replica(apply, args=(grads,)),
                       skip)

    context.merge_call(cross_replica, args=(finite, grads))


def assert_finite_state(variables, what: str):
    """Raises NonFiniteError if any variable holds a NaN or an infinity: the last check before a
    checkpoint is written, so checkpoint retention can only ever drop good checkpoints."""
    for variable in variables:
        value = tf.convert_to_tensor(variable)
        if value.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(value))):
            raise NonFiniteError(f"{what}: variable {getattr(variable, 'path', variable.name)} "
                                 "holds non-finite values; nothing was written.")
