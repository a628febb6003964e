"""The training engine every protocol that trains shares: one classifier step, one resumable loop.

`classifier_step` is a cross-entropy SGD step (frozen-encoder probe, fine-tuning, the supervised
baseline) that splits a global batch over the replicas of a tf.distribute strategy and applies
nothing when a loss or gradient is not finite (`optim/guard.py`). `train_loop` runs it over
per-epoch batch streams (`batches.py`), checkpoints with `tf.train.CheckpointManager` and resumes
mid-epoch, since every epoch's data order is a pure function of (seed, epoch).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from relicv2_tf import checkpointing, distribute
from relicv2_tf.optim import guard


def learning_rate_schedule(learning_rate: float, total_steps: int, schedule: str = "cosine",
                           decay_boundaries=(), decay_factor: float = 0.1):
    """cosine (to 0 over `total_steps`) | step (x decay_factor at each boundary step) | constant."""
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, max(int(total_steps), 1))
    if schedule == "step":
        boundaries = [int(b) for b in decay_boundaries]
        if not boundaries:
            return learning_rate
        values = [learning_rate * decay_factor ** i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if schedule == "constant":
        return learning_rate
    raise ValueError(f"schedule must be cosine | step | constant, got {schedule!r}.")


def sgd(schedule, momentum: float = 0.9, nesterov: bool = True):
    return keras.optimizers.SGD(learning_rate=schedule, momentum=momentum, nesterov=nesterov)


def step_counter() -> tf.Variable:
    """The global step of a training protocol, checkpointed with its state."""
    return tf.Variable(0, dtype=tf.int64, trainable=False, name="step")


def replica_shards(strategy, *arrays):
    """Splits a global batch (numpy arrays or tensors, same first dimension N) into contiguous
    per-replica shards, rows [N r / R, N (r + 1) / R) for replica r of R (uneven sizes allowed),
    each placed on its replica's device. Returns one distributed value per array."""
    num_replicas = strategy.num_replicas_in_sync
    size = len(arrays[0])

    def shard(context):
        r = context.replica_id_in_sync_group
        start, stop = size * r // num_replicas, size * (r + 1) // num_replicas
        return tuple(array[start:stop] for array in arrays)

    return strategy.experimental_distribute_values_from_function(shard)


def classifier_step(model, optimizer, *, training: bool = False, l2_weight_decay: float = 0.0,
                    variables=None, optimizers=None, strategy=None):
    """A step function (images or features, labels) -> (cross-entropy loss, applied), after one
    SGD update; `applied` is False when the loss or a gradient was not finite (no update, see
    `optim/guard.py`).

    `optimizers` optionally maps a list of (optimizer, variables) pairs for separate learning
    rates (fine-tuning: one for the encoder, one for the head). L2 weight decay (coupled, as in
    SGD with weight decay) is added on kernels only, never on biases or batch-norm parameters.
    Under a `strategy` with R > 1 replicas (the model and optimizers built in its scope) the
    global batch is split into R shards; each replica's loss is its share of the global mean
    (sum over its rows / global batch) and the optimizers all-reduce (sum) the gradients, so the
    update equals the single-device one. A batch with fewer rows than replicas is skipped
    when `training` (batch norm cannot normalise an empty shard): the step returns None.
    """
    strategy = strategy or tf.distribute.get_strategy()
    num_replicas = strategy.num_replicas_in_sync
    pairs = optimizers or [(optimizer, variables if variables is not None
                            else model.trainable_variables)]
    all_vars = [v for _, vs in pairs for v in vs]
    decayed = [v for v in all_vars if v.name.endswith("kernel")]

    def replica_step(inputs, labels, global_batch_size):
        with tf.GradientTape() as tape:
            logits = model(inputs, training=training)
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True)) / global_batch_size
            total = loss
            if l2_weight_decay and decayed:
                # Each replica adds 1/R of the penalty: the gradient all-reduce sums them.
                total += (0.5 * l2_weight_decay / num_replicas
                          * tf.add_n([tf.reduce_sum(v ** 2) for v in decayed]))
        grads = tape.gradient(total, all_vars)
        updates, offset = [], 0
        for opt, vs in pairs:
            updates.append((opt, grads[offset:offset + len(vs)], vs))
            offset += len(vs)
        finite = guard.replicas_all_finite(loss, grads)
        guard.apply_if_finite(updates, finite)  # a non-finite step applies nothing
        return loss, finite

    @tf.function(reduce_retracing=True)
    def distributed_step(inputs, labels, global_batch_size):
        losses, finite = strategy.run(replica_step, args=(inputs, labels, global_batch_size))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None),
                strategy.experimental_local_results(finite)[0])

    def step(inputs, labels):
        size = int(labels.shape[0])
        if num_replicas > 1:
            if training and size < num_replicas:
                return None
            inputs, labels = replica_shards(strategy, inputs, labels)
        return distributed_step(inputs, labels, tf.constant(size, tf.float32))
    return step


def train_loop(step_fn, batches_for_epoch, *, num_epochs: int, steps_per_epoch: int,
               state: dict, step: tf.Variable, checkpoint_dir: str | None = None,
               checkpoint_every_steps: int = 0, keep_checkpoints: int = 2,
               stop_after_steps: int | None = None, progress: bool = True,
               description: str = "train", on_nonfinite: str = "stop",
               max_consecutive_nonfinite: int = 5, strategy=None) -> dict:
    """Runs `step_fn(*batch) -> (loss, applied) | None` over `batches_for_epoch(epoch,
    skip_batches)`, resumably.

    `state` names every piece of state (Keras models, optimizers, `step`); it is restored from
    the latest checkpoint in `checkpoint_dir` first, and the remaining steps of the interrupted
    epoch are replayed in the same order (the batch stream is a pure function of the epoch).
    Checkpoints follow `checkpointing` (the state checked finite before each save; under
    MultiWorkerMirroredStrategy, the `strategy` of `step_fn`, only the chief keeps them). A step
    whose loss or gradients were not finite applied nothing (`classifier_step`): "stop" raises
    `guard.NonFiniteError` at once naming the step and the last good checkpoint; "skip_step"
    counts it and raises after `max_consecutive_nonfinite` in a row. `stop_after_steps` ends
    this call at that global step (saving a checkpoint first), for runs split into slices; the
    next call resumes there.
    """
    policy = checkpointing.NonFinitePolicy(on_nonfinite, max_consecutive_nonfinite)
    policy.check()
    checkpoints, role = None, distribute.worker_role(strategy)
    if checkpoint_dir:
        variables = [v for value in state.values() for v in _state_variables(value)]
        checkpoints = checkpointing.Checkpoints(
            tf.train.Checkpoint(**state), checkpoint_dir, keep_checkpoints, lambda: variables,
            role=role, what=f"{description} checkpoint")
        checkpoints.restore()

    start = int(step.numpy())
    total = num_epochs * steps_per_epoch
    losses, skipped, streak = [], 0, 0
    for epoch in range(start // max(steps_per_epoch, 1), num_epochs):
        skip = max(0, int(step.numpy()) - epoch * steps_per_epoch)
        bar = keras.utils.Progbar(steps_per_epoch, unit_name="step") if progress else None
        if bar is not None:
            print(f"{description} epoch {epoch + 1}/{num_epochs}", flush=True)
        epoch_losses = []
        for i, batch in enumerate(batches_for_epoch(epoch, skip)):
            with distribute.stop_on_lost_worker(role):  # a dead or hung peer: one error
                outcome = step_fn(*batch)
            step.assign_add(1)
            current = int(step.numpy())
            values = None
            if outcome is not None:  # None: a batch too small to split over the replicas
                loss, applied = float(outcome[0]), bool(outcome[1])
                if applied:
                    epoch_losses.append(loss)
                    values, streak = [("loss", loss)], 0
                else:
                    skipped, streak = skipped + 1, streak + 1
                    failure = policy.after_nonfinite_step(
                        current, skipped, streak, checkpoints.latest if checkpoints else None,
                        what=description, loss=loss)
                    if failure is not None:
                        raise failure
            if bar is not None:
                bar.update(skip + i + 1, values=values)
            if checkpoints and checkpoint_every_steps and current % checkpoint_every_steps == 0:
                checkpoints.save(current)
            if stop_after_steps is not None and current >= stop_after_steps:
                if checkpoints:
                    checkpoints.save(current)
                return {"stopped_at_step": current, "losses": losses, "nonfinite_steps": skipped}
        if epoch_losses:
            losses.append(float(np.mean(epoch_losses)))
    if checkpoints and int(step.numpy()) != start:
        checkpoints.save(int(step.numpy()))
    return {"stopped_at_step": None, "losses": losses, "total_steps": total,
            "nonfinite_steps": skipped}


def _state_variables(value):
    """The variables of one piece of training state (a Keras model or optimizer, a variable)."""
    if isinstance(value, keras.optimizers.Optimizer):
        return list(value.variables)
    if isinstance(value, keras.Model):
        return list(value.weights)
    return [value]
