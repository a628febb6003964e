"""MoCo-v2 (He et al. 2020; Chen et al. 2020b): momentum key encoder, queue of negatives,
Shuffle-BN.

Per step, as facebookresearch/moco's moco/builder.py `MoCo.forward`: the query q = g(f(x1)) of
the first large view (online network), the key k = g'(f'(x2)) of the second view (momentum
network = the base class's target, with a constant momentum m), logits [q.k, q.queue] / T,
cross-entropy with the positive at index 0, mean over the global batch, then the B keys k are
enqueued. `loss.symmetric` adds the swapped direction (q2 with k1) as the authors' single-GPU
CIFAR demo does: its own query and key passes, the two losses summed and both key views enqueued.

The queue is a non-trainable [K, D] variable of unit keys, newest first; it is updated in
cross-replica context with the keys gathered over replicas, so every replica holds the same
queue (FIFO: new keys enter at the top, the oldest leave at the bottom; the MoCo code's ring
buffer holds the same set).

Shuffle-BN (He et al. 2020, section 3.3). If the query and its key were batch-normalised over
the same examples, a query could find its key through the batch statistics they share instead
of through the image. MoCo regroups the key batch at random before the key encoder (gather over
GPUs, shuffle, each GPU encodes a slice, gather, unshuffle: `_batch_shuffle_ddp` /
`_batch_unshuffle_ddp`), while the query encoder's batch norm sees its own GPU's batch.
Here `loss.shuffle_bn_splits` = G is the number of batch-norm groups the global key batch of B
is cut into, whatever the hardware (8 = the paper's 8 GPUs x 32 keys):
  * a permutation of the B global rows, drawn from (seed, step) and so identical on every
    replica, puts rows perm[g B/G : (g + 1) B/G] in group g;
  * with N replicas (G must be a multiple of N), the key images are gathered over replicas and
    replica r encodes groups r G/N .. (r + 1) G/N - 1, one key-network call per group (its own
    batch-norm statistics: the single-GPU demo's SplitBatchNorm), the keys are gathered over
    replicas, unpermuted, and each replica keeps its own rows;
  * on one device (N = 1) the same code splits the shuffled batch into G groups (no gathers).
So the key statistics are over B/G examples on 1 device, N GPUs or a pod alike, and a given step
computes the same keys on any N. G = N is builder.py's setting (one group per GPU); G = 1 on one
device is a whole-batch key pass (the shuffle then does nothing). The query encoder's batch
norm is per replica and not synchronised (B/N examples; on one device the whole batch, where
the CIFAR demo also splits the queries). The key encoder is frozen (momentum updates only) yet
normalises with its group's statistics, as MoCo's does (`base.use_batch_statistics`); its moving
statistics are never used (only the query encoder is evaluated) and each group updates them in
turn. Like builder.py, multi-replica Shuffle-BN all-gathers the key images (N x the local key
batch per replica) and the keys.

BG_Swaps (Ryali et al. 2021): the hard negative (another foreground on the first view's
background) goes through the key encoder in its own Shuffle-BN pass (own permutation, own
groups), so it never shares batch-norm statistics with the keys, whose values are those of
MoCo without BG_Swaps; it is one extra negative of q1, masked by `hard_negative_valid`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from relicv2_tf import cross_replica, losses
from relicv2_tf.methods import base
from relicv2_tf.models import heads

# Stream of the per-step seed that draws the Shuffle-BN permutations (one per encoded input).
_SHUFFLE_STREAM = 1


def shuffle_permutation(size: int, seed):
    """A uniformly random permutation of range(size), a function of the [2] stateless seed only
    (identical on every replica that passes the same seed)."""
    return tf.random.experimental.stateless_shuffle(tf.range(size), seed)


def shuffle_bn(network, images, *, num_splits: int, seed):
    """`network(images)` with batch-norm statistics over random groups of the global batch.

    Args:
      network: maps a batch [n, ...] to [n, D]; its batch norm uses the batch's statistics.
      images: this replica's rows [b, ...] (b static).
      num_splits: G, the number of groups of the global batch N * b; a multiple of N.
      seed: [2] stateless seed, the same on every replica.
    Returns:
      [b, D]: each row encoded within its group, in the order of `images`.
    """
    replica_id, num_replicas = cross_replica.replica_info()
    if num_splits % num_replicas:
        raise ValueError(
            f"loss.shuffle_bn_splits={num_splits} must be a multiple of the {num_replicas} "
            "replicas (each replica batch-normalises at least its own slice); use e.g. "
            f"--config.loss.shuffle_bn_splits={num_replicas * max(1, num_splits // num_replicas)}.")
    if num_replicas == 1 and num_splits == 1:
        return network(images)  # one group of the whole batch: order does not matter
    local = int(images.shape[0])
    permutation = shuffle_permutation(local * num_replicas, seed)
    own = slice(replica_id * local, (replica_id + 1) * local)
    shuffled = tf.gather(cross_replica.gather(images), permutation[own])
    groups = tf.split(shuffled, num_splits // num_replicas, axis=0)
    outputs = tf.concat([network(group) for group in groups], axis=0)
    # Row j of the gathered outputs is example permutation[j]; its inverse restores the order.
    return tf.gather(cross_replica.gather(outputs), tf.argsort(permutation)[own])


class MoCoV2(base.SelfSupervisedModel):
    def __init__(self, model_config, loss_config, *, total_steps, seed=0, **kwargs):
        super().__init__(model_config, total_steps=total_steps, use_predictor=False, seed=seed,
                         **kwargs)
        self.temperature = loss_config.temperature
        self.symmetric = loss_config.symmetric
        self.shuffle_bn_splits = loss_config.shuffle_bn_splits
        # Random unit vectors until real keys replace them (as in the MoCo code).
        initial = tf.math.l2_normalize(tf.random.stateless_normal(
            [loss_config.queue_size, model_config.projector_output_dim], seed=[self.seed, 1]),
            axis=-1)
        self.queue = self.add_weight(
            shape=initial.shape, initializer=keras.initializers.Constant(initial.numpy()),
            trainable=False, name="queue")
        self.declare_metrics(["loss", "learning_rate"])

    def _mlp(self, input_dim, name, hidden_dim=None):
        """MoCo-v2's head: fc -> ReLU -> fc without batch norm (query and key projectors)."""
        c = self.model_config
        return heads.mlp(input_dim, hidden_dim or c.projector_hidden_dim, c.projector_output_dim,
                         use_batch_norm=False, name=name)

    def key_projections(self, images, seed):
        """Unit keys g'(f'(x)) of this replica's `images` under Shuffle-BN (no gradient)."""
        keys = shuffle_bn(self.target_projections, images, num_splits=self.shuffle_bn_splits,
                          seed=seed)
        return losses.l2_normalize(keys)

    def input_seed(self, index: int):
        """The Shuffle-BN seed of encoded input `index` (a view, or the hard negatives) at this
        step."""
        step_seed = tf.random.experimental.stateless_fold_in(self.step_seed(), _SHUFFLE_STREAM)
        return tf.random.experimental.stateless_fold_in(step_seed, index)

    def update_queue(self, keys):
        """Enqueues `keys` (identical on every replica) on every replica's copy of the queue."""
        cross_replica.update_variables(
            [(self.queue, lambda queue, k: queue.assign(base.enqueue(queue, k)), (keys,))])

    def train_step(self, data):
        views = data["large"]  # [b, 2, H, W, 3]
        _, num_replicas = cross_replica.replica_info()
        global_batch = int(views.shape[0]) * num_replicas
        # (query view, key view): q1 . k2 as in the MoCo code, and q2 . k1 when symmetric.
        pairs = [(0, 1), (1, 0)] if self.symmetric else [(0, 1)]

        keys = [self.key_projections(views[:, k], self.input_seed(k)) for _, k in pairs]
        hard_negatives = hard_negative_valid = None
        if "hard_negative" in data:  # BG_Swaps: a negative for q1, through the key encoder
            hard_negatives = self.key_projections(data["hard_negative"],
                                                  self.input_seed(views.shape[1]))
            hard_negative_valid = data["hard_negative_valid"]
        with tf.GradientTape() as tape:
            queries = [self.online_projections(views[:, q]) for q, _ in pairs]
            loss = losses.moco_loss(
                queries, keys, self.queue.value, temperature=self.temperature,
                global_batch_size=global_batch, hard_negatives=hard_negatives,
                hard_negative_valid=hard_negative_valid)
        learning_rate = self.optimizer.learning_rate
        self.apply_loss(tape, loss)
        self.update_queue(tf.concat([cross_replica.gather(k) for k in keys], axis=0))
        self.update_target(self.target_ema())  # key momentum m
        return self.track({"loss": loss}, {"learning_rate": learning_rate})
