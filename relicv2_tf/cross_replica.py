"""Cross-replica communication of the method steps: replica info, gather, all-reduce sum and
variable updates in cross-replica context. (Two other modules ask the replica context one thing
each: `optim/guard.py` takes its apply-or-skip decision in its own `merge_call`, and
`models/batch_norm.py` checks for a context before it synchronises through `all_reduce_sum`.)

Every function is the identity (or a plain call) on one device and outside a strategy, so a
method's step reads the same on 1 CPU, 2 logical CPUs in tests and a TPU pod: distribution is a
strategy choice, not a code path.
"""

from __future__ import annotations

import tensorflow as tf


def replica_info():
    """(replica_id, num_replicas) of the current replica context."""
    context = tf.distribute.get_replica_context()
    if context is None:
        return 0, 1
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


def gather(x, with_gradient: bool = False):
    """Concatenates `x` over replicas along axis 0 (replica order).

    Without gradient (targets, negatives, queue keys) the result is stop-gradient. With
    gradient (SimCLR back-propagates through the negatives), `ReplicaContext.all_gather` sums
    the gradients of the gathered rows back to the replica that owns them.
    """
    if not with_gradient:
        x = tf.stop_gradient(x)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    return context.all_gather(x, axis=0)


def all_reduce_sum(x):
    """Sum of `x` over replicas (the identity on one replica)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    return context.all_reduce(tf.distribute.ReduceOp.SUM, x)


def update_variables(updates):
    """Applies `fn(variable_copy, *args)` to every replica's copy of each variable, for
    `updates` = [(variable, fn, args)], where `args` hold the same value on every replica (e.g.
    gathered keys, an EMA rate, a mirrored online variable).

    Mirrored variables must be written in cross-replica context so that all copies stay equal:
    the updates run inside one `merge_call` (a plain call on one device).
    """
    variables = [getattr(variable, "value", variable) for variable, _, _ in updates]
    functions = [fn for _, fn, _ in updates]

    def merge_fn(strategy, all_args):
        for variable, fn, args in zip(variables, functions, all_args):
            strategy.extended.update(variable, fn, args=tuple(args), group=False)

    all_args = [tuple(args) for _, _, args in updates]
    context = tf.distribute.get_replica_context()
    if context is None:
        merge_fn(tf.distribute.get_strategy(), all_args)
    else:
        context.merge_call(merge_fn, args=(all_args,))
