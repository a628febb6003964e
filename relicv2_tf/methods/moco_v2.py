"""MoCo-v2 (He et al. 2020; Chen et al. 2020b): momentum key encoder and a queue of negatives.

Per step: both large views go through the online (query) network and the momentum (key)
network, i.e. the base class's EMA target with a constant momentum m (no schedule, no
predictor). The symmetrised InfoNCE pairs q1 with k2 and q2 with k1 against the queue (the
original code's asymmetric loss is `loss.symmetric = False`). The queue is a non-trainable
[K, D] variable holding the most recent keys, newest first; it is updated in cross-replica
context with the keys gathered over replicas, so every replica holds the same queue (FIFO:
the B new keys enter at the top, the B oldest leave at the bottom). Keys of the first view are
enqueued (the key view of the original code's loss).
Deviations: no Shuffle BN (batch-norm statistics of keys are per replica, or synchronised with
`model.synchronized_bn`); the projector is the BYOL-shaped MLP with batch norm.
BG_Swaps: the hard negative goes through the key encoder with the views and is one extra
negative of the first query, masked by `hard_negative_valid`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from relicv2_tf import losses
from relicv2_tf.methods import base
from relicv2_tf.methods.simclr import views_and_hard_negatives


def enqueue(queue, keys):
    """FIFO: the newest keys first, the oldest `len(keys)` rows dropped."""
    return tf.concat([keys, queue[:-tf.shape(keys)[0]]], axis=0)


class MoCoV2(base.SelfSupervisedModel):
    def __init__(self, model_config, loss_config, *, total_steps, key_momentum=0.999, seed=0,
                 **kwargs):
        super().__init__(model_config, total_steps=total_steps, base_target_ema=key_momentum,
                         use_predictor=False, seed=seed, **kwargs)
        self.temperature = loss_config.temperature
        self.symmetric = loss_config.symmetric
        self.key_momentum = key_momentum
        # Random unit vectors until real keys replace them (as in the MoCo code).
        initial = tf.math.l2_normalize(tf.random.stateless_normal(
            [loss_config.queue_size, model_config.projector_output_dim], seed=[self.seed, 1]),
            axis=-1)
        self.queue = self.add_weight(
            shape=initial.shape, initializer=keras.initializers.Constant(initial.numpy()),
            trainable=False, name="queue")
        self.declare_metrics(["loss", "learning_rate"])

    def update_queue(self, keys):
        """Enqueues `keys` (identical on every replica) on every replica's copy of the queue."""
        def merge_fn(strategy, keys):
            strategy.extended.update(self.queue.value, lambda q, k: q.assign(enqueue(q, k)),
                                     args=(keys,), group=False)

        ctx = tf.distribute.get_replica_context()
        if ctx is None:
            merge_fn(tf.distribute.get_strategy(), keys)
        else:
            ctx.merge_call(merge_fn, args=(keys,))

    def train_step(self, data):
        images, num_views, hard_negative_valid = views_and_hard_negatives(data)
        _, num_replicas = base.replica_info()
        local_batch = int(data["large"].shape[0])
        with_hard_negatives = hard_negative_valid is not None

        keys = base.split_views(self.target_projections(images), num_views + with_hard_negatives)
        hard_negatives = keys.pop() if with_hard_negatives else None
        keys = [losses.l2_normalize(k) for k in keys]  # the queue stores unit vectors
        with tf.GradientTape() as tape:
            # Hard negatives go through the key encoder only.
            queries = base.split_views(
                self.online_projections(base.views_to_batch(data["large"])), num_views)
            if not self.symmetric:
                queries, keys_of_queries = queries[:1], keys[1:2]  # q1 . k2
            else:
                keys_of_queries = keys[::-1]  # q1 . k2 and q2 . k1
            loss = losses.moco_loss(
                queries, keys_of_queries, self.queue.value,
                temperature=self.temperature, global_batch_size=local_batch * num_replicas,
                hard_negatives=hard_negatives, hard_negative_valid=hard_negative_valid)
        learning_rate = self.optimizer.learning_rate
        self.apply_loss(tape, loss)
        self.update_queue(base.gather(keys[0]))
        self.update_target(tf.constant(self.key_momentum, tf.float32))
        return self.track({"loss": loss}, {"learning_rate": learning_rate})
