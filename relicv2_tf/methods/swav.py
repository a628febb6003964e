"""SwAV (Caron et al. 2020): swapped prediction of online Sinkhorn codes, with multi-crop.

Per step: the L large and S small crops go through the online encoder (one pass per
resolution) and the projector (one pass over all crops, as in the authors' code), are
L2-normalised and scored against K prototypes (rows of a [K, D] weight matrix, L2-normalised in
the forward pass). For each large crop (`code_views`) the Sinkhorn-Knopp codes
(epsilon, 3 iterations) are computed over the global batch, with the queue's stored embeddings
in front once the queue is full; every other crop predicts them through a softmax at
`temperature` (eq. 1-2). No target network.
Schedule details of the paper: the prototypes receive no gradient for the first
`freeze_prototypes_steps` (zeroed gradient; weight decay then only rescales the matrix, which the
forward normalisation removes); the queue (`queue_size` embeddings per code view, identical on
every replica, each replica using its own block in Sinkhorn) starts filling at step
`queue_start_steps` and is used once full. The config gives both in epochs
(`loss.freeze_prototypes_epochs`, `loss.queue_start_epochs`); the builder (methods/__init__.py)
turns them into steps of the run (`schedules.epochs_to_steps`), so they follow the batch size.
Background augmentations act in the data pipeline; BG_Swaps only changes the second large view
(SwAV has no negatives), so the batch's `hard_negative` is ignored.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from relicv2_tf import cross_replica, losses
from relicv2_tf.methods import base


class SwAV(base.SelfSupervisedModel):
    def __init__(self, model_config, loss_config, *, total_steps, queue_start_steps: int,
                 freeze_prototypes_steps: int, seed=0, **kwargs):
        super().__init__(model_config, total_steps=total_steps, base_target_ema=None,
                         use_predictor=False, seed=seed, **kwargs)
        self.temperature = loss_config.temperature
        self.epsilon = loss_config.epsilon
        self.sinkhorn_iterations = loss_config.sinkhorn_iterations
        self.code_views = tuple(loss_config.code_views)
        self.queue_size = loss_config.queue_size
        self.queue_start_steps = queue_start_steps
        self.freeze_prototypes_steps = freeze_prototypes_steps
        if self.queue_size and self.queue_start_steps >= total_steps:
            raise ValueError(
                f"loss.queue_size={self.queue_size} but the queue starts at step "
                f"{self.queue_start_steps} (loss.queue_start_epochs="
                f"{loss_config.queue_start_epochs}) and the run has {total_steps}: it would "
                "never be used. Start it earlier or set --config.loss.queue_size=0.")
        dim = model_config.projector_output_dim
        self.prototypes = self.add_weight(
            shape=(loss_config.num_prototypes, dim), name="prototypes", trainable=True,
            initializer=keras.initializers.GlorotUniform(seed=self.seed))
        self.queue = None
        if self.queue_size:
            self.queue = self.add_weight(shape=(len(self.code_views), self.queue_size, dim),
                                         initializer="zeros", trainable=False, name="queue")
        self.declare_metrics(["loss", "learning_rate", "queue_in_use"])

    def online_variables(self):
        return super().online_variables() + [self.prototypes]

    def transform_gradients(self, grads):
        """The prototypes' gradient (last variable) is zero while they are frozen."""
        frozen = self.optimizer.iterations < self.freeze_prototypes_steps
        return list(grads[:-1]) + [tf.where(frozen, tf.zeros_like(grads[-1]), grads[-1])]

    def codes(self, scores, view, prototypes, queue_weight):
        """Sinkhorn codes [b, K] of one code view, with this replica's block of the queue."""
        if self.queue is None:
            return losses.sinkhorn_knopp(scores, epsilon=self.epsilon,
                                         num_iters=self.sinkhorn_iterations,
                                         all_reduce_sum=cross_replica.all_reduce_sum)
        replica_id, num_replicas = cross_replica.replica_info()
        block = self.queue_size // num_replicas
        stored = self.queue.value[view, replica_id * block:(replica_id + 1) * block]
        stored_scores = tf.matmul(stored, prototypes, transpose_b=True)
        weight = tf.concat([tf.fill([block], queue_weight), tf.ones([tf.shape(scores)[0]])], 0)
        codes = losses.sinkhorn_knopp(tf.concat([stored_scores, scores], axis=0),
                                      epsilon=self.epsilon, num_iters=self.sinkhorn_iterations,
                                      sample_weight=weight,
                                      all_reduce_sum=cross_replica.all_reduce_sum)
        return codes[block:]

    def update_queue(self, embeddings, active):
        """Enqueues the gathered code-view embeddings [V_code, B, D] on every replica (only when
        `active`: the queue starts filling at `queue_start_steps`)."""
        def push(queue, embeddings, active):
            pushed = tf.stack([base.enqueue(queue[i], embeddings[i])
                               for i in range(len(self.code_views))])
            return queue.assign(tf.where(active, pushed, queue))

        cross_replica.update_variables([(self.queue, push, (embeddings, active))])

    def crop_embeddings(self, large, small=None):
        """L2-normalised projections of every crop, a list of [b, D] in view order (large, then
        small). The encoder runs once per resolution, the projector once over all crops
        together, as in the authors' multi-crop forward (facebookresearch/swav,
        src/resnet50.py: backbone per resolution, head on the concatenation): the head's batch
        norm normalises large and small crops with shared statistics."""
        features = [self.online_encoder(base.views_to_batch(large), training=True)]
        num_views = large.shape[1]
        if small is not None and small.shape[1]:
            features.append(self.online_encoder(base.views_to_batch(small), training=True))
            num_views += small.shape[1]
        projections = self.online_projector(tf.concat(features, axis=0), training=True)
        return base.split_views(losses.l2_normalize(projections), num_views)

    def train_step(self, data):
        large, small = data["large"], data.get("small")
        _, num_replicas = cross_replica.replica_info()
        global_batch = int(large.shape[0]) * num_replicas
        step = self.optimizer.iterations
        queue_in_use = tf.cast(
            step >= self.queue_start_steps + -(-self.queue_size // global_batch), tf.float32)

        with tf.GradientTape() as tape:
            prototypes = losses.l2_normalize(self.prototypes)
            embeddings = self.crop_embeddings(large, small)
            scores = [tf.matmul(z, prototypes, transpose_b=True) for z in embeddings]
            codes = {v: self.codes(scores[v], i, prototypes, queue_in_use)
                     for i, v in enumerate(self.code_views)}
            loss = losses.swav_loss(scores, codes, temperature=self.temperature,
                                    code_views=self.code_views, global_batch_size=global_batch)
        learning_rate = self.optimizer.learning_rate
        if self.queue is not None:
            stored = tf.stack([cross_replica.gather(embeddings[v]) for v in self.code_views])
            self.update_queue(stored, step >= self.queue_start_steps)
        self.apply_loss(tape, loss)
        return self.track({"loss": loss}, {"learning_rate": learning_rate,
                                           "queue_in_use": queue_in_use})
