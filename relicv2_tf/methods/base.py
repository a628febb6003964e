"""What every self-supervised method shares: online/target networks, EMA, views, metrics.

A method subclasses `SelfSupervisedModel` and writes only its `train_step` (and its loss in
`relicv2_tf/losses.py`). Distribution is a strategy choice, not a code path: the helpers below
(`replica_info`, `gather`) are identities on one device.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from relicv2_tf.models import heads
from relicv2_tf.models import resnet as resnet_lib
from relicv2_tf.optim import schedules


def replica_info():
    """(replica_id, num_replicas) of the current replica context."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return 0, 1
    return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync


def gather(x):
    """Concatenates `x` over replicas along axis 0, without gradient (targets, negatives)."""
    ctx = tf.distribute.get_replica_context()
    x = tf.stop_gradient(x)
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_gather(x, axis=0)


def views_to_batch(views):
    """[b, V, H, W, C] -> [V * b, H, W, C], view-major (view v is rows v*b .. v*b+b-1)."""
    shape = tf.shape(views)
    static = views.shape
    stacked = tf.transpose(views, [1, 0, 2, 3, 4])
    return tf.reshape(stacked, [shape[0] * shape[1], static[2], static[3], static[4]])


def split_views(x, num_views: int):
    """[V * b, D] -> list of V tensors [b, D] (inverse of `views_to_batch` on embeddings)."""
    return tf.split(x, num_views, axis=0)


class SelfSupervisedModel(keras.Model):
    """Online encoder + projector (+ predictor) and, optionally, an EMA target copy.

    Args:
      model_config: the `model` config section (resnet + head sizes).
      total_steps: length of training, for the EMA schedule.
      base_target_ema: tau_base of the BYOL EMA schedule; None = no target network.
      use_predictor: build the online predictor q.
      seed: base of the per-step stateless seeds (negative sampling).
    """

    def __init__(self, model_config, *, total_steps: int, base_target_ema=0.996,
                 use_predictor=True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.model_config = model_config
        self.total_steps = int(total_steps)
        self.base_target_ema = base_target_ema
        self.seed = int(seed)
        self.online_encoder = self._encoder("online_encoder")
        feature_dim = resnet_lib.feature_dim(model_config.depth, model_config.width_multiplier)
        self.online_projector = self._mlp(feature_dim, "online_projector")
        self.online_predictor = (
            self._mlp(model_config.projector_output_dim, "online_predictor",
                      hidden_dim=model_config.predictor_hidden_dim) if use_predictor else None)
        self.target_encoder = self.target_projector = None
        if base_target_ema is not None:
            self.target_encoder = self._encoder("target_encoder")
            self.target_projector = self._mlp(feature_dim, "target_projector")
            self.target_encoder.trainable = False  # updated by EMA only, never by the optimizer
            self.target_projector.trainable = False
            for online, target in self._online_target_pairs():
                target.assign(online)
        self.trackers = {}
        self.built = True  # every sub-network is a built functional model

    # ------------------------------------------------------------------ construction helpers
    def _encoder(self, name):
        c = self.model_config
        return resnet_lib.resnet(c.depth, c.width_multiplier, bn_momentum=c.bn_momentum,
                                 bn_epsilon=c.bn_epsilon, synchronized_bn=c.synchronized_bn,
                                 name=name)

    def _mlp(self, input_dim, name, hidden_dim=None):
        c = self.model_config
        return heads.mlp(input_dim, hidden_dim or c.projector_hidden_dim, c.projector_output_dim,
                         bn_momentum=c.bn_momentum, bn_epsilon=c.bn_epsilon,
                         synchronized_bn=c.synchronized_bn, name=name)

    def _online_target_pairs(self):
        """(online, target) parameter pairs; batch-norm statistics are not averaged (BYOL)."""
        pairs = []
        for online_net, target_net in ((self.online_encoder, self.target_encoder),
                                       (self.online_projector, self.target_projector)):
            pairs += [(o, t) for o, t in zip(online_net.weights, target_net.weights)
                      if o.trainable]
        return pairs

    def online_variables(self):
        """The variables the optimizer updates."""
        nets = [self.online_encoder, self.online_projector, self.online_predictor]
        return [v for net in nets if net is not None for v in net.trainable_weights]

    def compile(self, optimizer, **kwargs):
        """Builds the optimizer's slots eagerly (inside the strategy scope), not in a replica."""
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.online_variables())

    # ------------------------------------------------------------------ training-time pieces
    def online_projections(self, images):
        """g(f(x)) of a batch of images [N, H, W, 3] (views folded by `views_to_batch`)."""
        return self.online_projector(self.online_encoder(images, training=True), training=True)

    def online_predictions(self, images):
        """q(g(f(x))): the online branch of BYOL and ReLICv2."""
        return self.online_predictor(self.online_projections(images), training=True)

    def target_projections(self, images):
        """g'(f'(x)) of the EMA target, without gradient."""
        features = self.target_encoder(images, training=True)
        return tf.stop_gradient(self.target_projector(features, training=True))

    def step_seed(self):
        """A [2] int64 stateless seed unique to this training step."""
        return tf.stack([tf.constant(self.seed, tf.int64),
                         tf.cast(self.optimizer.iterations, tf.int64)])

    def target_ema(self):
        return schedules.target_ema_rate(self.optimizer.iterations, self.base_target_ema,
                                         self.total_steps)

    def update_target(self, ema):
        """target <- ema * target + (1 - ema) * online, in cross-replica context so that mirrored
        variables are updated on every device with the same value."""
        pairs = [(o.value, t.value) for o, t in self._online_target_pairs()]

        def merge_fn(strategy, ema):
            for online, target in pairs:
                strategy.extended.update(
                    target, lambda t, o, e: t.assign(e * t + (1.0 - e) * o), args=(online, ema),
                    group=False)

        ctx = tf.distribute.get_replica_context()
        if ctx is None:
            merge_fn(tf.distribute.get_strategy(), ema)
        else:
            ctx.merge_call(merge_fn, args=(ema,))

    def apply_loss(self, tape, loss):
        """Gradients of `loss` (already normalised by the global batch) and one optimizer step;
        replicas' gradients are summed by the optimizer's all-reduce. The tape is closed here, so
        the loss scale (LossScaleOptimizer under mixed_float16, 1 otherwise) seeds the backward
        pass: the gradients of scale * loss, which `apply_gradients` unscales."""
        variables = self.online_variables()
        grads = tape.gradient(loss, variables,
                              output_gradients=self.optimizer.scale_loss(tf.ones_like(loss)))
        self.optimizer.apply_gradients(zip(self.transform_gradients(grads), variables))

    def transform_gradients(self, grads):
        """Hook for a method to alter gradients before the update (SwAV freezes prototypes)."""
        return grads

    def track(self, losses: dict, scalars: dict):
        """Updates one Mean tracker per name and returns the logs. `losses` are per-replica
        partial sums over the global batch, so they are scaled by the replica count to read as
        global means; `scalars` (learning rate, EMA rate) are the same on every replica."""
        _, num_replicas = replica_info()
        for name, value in losses.items():
            self.trackers[name].update_state(value * num_replicas)
        for name, value in scalars.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def declare_metrics(self, names):
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        """Inference: pooled online-encoder features (what evaluation and export use)."""
        return self.online_encoder(images, training=training)
