"""What every self-supervised method shares: online/target networks, EMA, views, metrics.

A method subclasses `SelfSupervisedModel` and writes only its `train_step` (and its loss in
`relicv2_tf/losses.py`). Distribution is a strategy choice, not a code path: the cross-replica
helpers (`relicv2_tf/cross_replica.py`) are identities on one device.
"""

from __future__ import annotations

import threading

import keras
import tensorflow as tf

from relicv2_tf import cross_replica
from relicv2_tf.models import heads
from relicv2_tf.models import resnet as resnet_lib
from relicv2_tf.optim import guard, schedules


def enqueue(queue, keys):
    """FIFO queue [K, D]: the newest keys first, the oldest `len(keys)` rows dropped (MoCo's
    queue of keys, SwAV's queue of embeddings)."""
    return tf.concat([keys, queue[:-tf.shape(keys)[0]]], axis=0)


def views_to_batch(views):
    """[b, V, H, W, C] -> [V * b, H, W, C], view-major (view v is rows v*b .. v*b+b-1)."""
    shape = tf.shape(views)
    static = views.shape
    stacked = tf.transpose(views, [1, 0, 2, 3, 4])
    return tf.reshape(stacked, [shape[0] * shape[1], static[2], static[3], static[4]])


def split_views(x, num_views: int):
    """[V * b, D] -> list of V tensors [b, D] (inverse of `views_to_batch` on embeddings)."""
    return tf.split(x, num_views, axis=0)


def use_batch_statistics(network):
    """Freezes `network` for the optimizer (`trainable = False`) while `network(x, training=True)`
    still batch-normalises with the batch's statistics.

    Keras runs a BatchNormalization layer whose `trainable` is False in inference mode (moving
    statistics) even when called with training=True. The EMA target (BYOL, ReLICv2) and MoCo's
    key encoder are updated by the EMA rule alone, yet run in training mode: BYOL's target
    normalises with its batch's statistics (Grill et al. 2020, deepmind-research byol: the
    target forward uses is_training=True). So the batch-norm layers are marked trainable again
    and their scale and offset variables stay non-trainable (no optimizer ever sees them).
    """
    network.trainable = False
    layers = list(network.layers)
    while layers:
        layer = layers.pop()
        layers += getattr(layer, "layers", [])  # nested models
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = True
            for variable in layer.trainable_weights:
                variable.trainable = False


class SelfSupervisedModel(keras.Model):
    """Online encoder + projector (+ predictor) and, optionally, an EMA target copy.

    Args:
      model_config: the `model` config section (resnet + head sizes).
      total_steps: length of training, for the EMA schedule.
      base_target_ema: the EMA rate tau (`target_ema_schedule="constant"`) or tau_base of the
        cosine schedule; None = no target network.
      target_ema_schedule: "constant" (ReLICv2, MoCo) or "cosine" (BYOL), see
        `schedules.target_ema_rate`.
      use_predictor: build the online predictor q.
      seed: base of the per-step stateless seeds (negative sampling).
    """

    def __init__(self, model_config, *, total_steps: int, base_target_ema=0.996,
                 target_ema_schedule: str = "cosine", use_predictor=True, seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.model_config = model_config
        self.total_steps = int(total_steps)
        self.base_target_ema = base_target_ema
        self.target_ema_schedule = target_ema_schedule
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
            # Updated by EMA only, never by the optimizer; batch norm in training mode.
            use_batch_statistics(self.target_encoder)
            use_batch_statistics(self.target_projector)
            for online, target in self._online_target_pairs():
                target.assign(online)
        self.trackers = {}
        # Steps whose loss or gradients were not finite (no update applied; optim/guard.py):
        # in all, and in a row up to the last step. Plain tf.Variables: checkpointed with the
        # model, not among its (float) weights.
        self.nonfinite_steps, self.nonfinite_streak = (
            tf.Variable(0, dtype=tf.int64, trainable=False, name=name,
                        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            for name in ("nonfinite_steps", "nonfinite_streak"))
        self.online_probe = None  # methods/online_probe.py, attached by `attach_online_probe`
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
        """g(f(x)) of a batch of images [N, H, W, 3] (views folded by `views_to_batch`); the
        step's first encoder features also go to the online probe, when there is one."""
        features = self.online_encoder(images, training=True)
        if self.online_probe is not None and getattr(self._probe_features, "value", None) is None:
            self._probe_features.value = features
        return self.online_projector(features, training=True)

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
        """The EMA rate of the step being taken (read it before `apply_loss`)."""
        return schedules.target_ema_rate(self.optimizer.iterations, self.base_target_ema,
                                         self.total_steps, self.target_ema_schedule)

    def update_target(self, ema):
        """target <- ema * target + (1 - ema) * online on every replica's copy."""
        cross_replica.update_variables(
            [(target, lambda t, o, e: t.assign(e * t + (1.0 - e) * o), (online.value, ema))
             for online, target in self._online_target_pairs()])

    def apply_loss(self, tape, loss):
        """Gradients of `loss` (already normalised by the global batch) and one optimizer step;
        replicas' gradients are summed by the optimizer's all-reduce. The tape is closed here, so
        the loss scale (LossScaleOptimizer under mixed_float16, 1 otherwise) seeds the backward
        pass: the gradients of scale * loss, which `apply_gradients` unscales.
        A step whose loss or gradients are not finite on some replica applies nothing
        (`guard.apply_if_finite`) and is counted in `nonfinite_steps` / `nonfinite_streak`.
        Under loss scaling, overflowing (scaled) gradients are the LossScaleOptimizer's to skip
        and shrink its scale; the guard then checks the loss only."""
        variables = self.online_variables()
        grads = tape.gradient(loss, variables,
                              output_gradients=self.optimizer.scale_loss(tf.ones_like(loss)))
        grads = self.transform_gradients(grads)
        loss_scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        finite = guard.replicas_all_finite(loss, [] if loss_scaled else grads)

        def count_skip():
            self.nonfinite_steps.assign_add(1)
            self.nonfinite_streak.assign_add(1)

        guard.apply_if_finite([(self.optimizer, grads, variables)], finite, on_skip=count_skip)
        # Reset the streak after a finite step (a select: no merge_call inside a cond).
        self.nonfinite_streak.assign(tf.where(finite, tf.constant(0, tf.int64),
                                              self.nonfinite_streak))

    def transform_gradients(self, grads):
        """Hook for a method to alter gradients before the update (SwAV freezes prototypes)."""
        return grads

    def track(self, losses: dict, scalars: dict):
        """Updates one Mean tracker per name and returns the logs. `losses` are per-replica
        partial sums over the global batch, so they are scaled by the replica count to read as
        global means; `scalars` (learning rate, EMA rate) are the same on every replica."""
        _, num_replicas = cross_replica.replica_info()
        for name, value in losses.items():
            self.trackers[name].update_state(value * num_replicas)
        for name, value in scalars.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def declare_metrics(self, names):
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    @property
    def metrics(self):
        probe = list(self.online_probe.metrics.values()) if self.online_probe else []
        return list(self.trackers.values()) + probe

    def attach_online_probe(self, num_classes: int, learning_rate: float):
        """Trains a linear classifier on the stop-gradient features of the first large view
        after each method step (`methods/online_probe.py`; call in the strategy scope, before
        `compile`). It is kept out of the model's weights and checkpoints: the encoder's
        trajectory and a checkpoint are the same with and without it."""
        from relicv2_tf.methods import online_probe

        feature_dim = resnet_lib.feature_dim(self.model_config.depth,
                                             self.model_config.width_multiplier)
        probe = online_probe.OnlineProbe(feature_dim, num_classes, learning_rate)
        object.__setattr__(self, "online_probe", probe)  # not tracked: not in checkpoints
        # The step's features, handed from `online_projections` to `probe_step`: per thread,
        # because MirroredStrategy traces each replica's step in a thread of its own.
        object.__setattr__(self, "_probe_features", threading.local())

        def probe_step(data):
            features = getattr(self._probe_features, "value", None)
            self._probe_features.value = None
            if features is None:  # a method that calls its encoder directly (SwAV)
                features = self.online_encoder(data["large"][:, 0], training=False)
            labels = data["label"]
            return probe.train_step(features[:tf.shape(labels)[0]], labels)
        self._after_train_step(probe_step)

    def capture_views(self, num_examples: int, every_steps: int, large_shape, small_shape=None):
        """Keeps the first `num_examples` large (and small) views of the batch of step 1 and of
        every `every_steps`-th step (the first replica's) in `captured_views`, for the image
        summaries (`train_logging`); a copy only on those steps. Call in the strategy scope."""
        def variable(shape, name):  # per replica, read as the first replica's; not checkpointed
            return tf.Variable(tf.zeros([num_examples, *shape]), trainable=False, name=name,
                               synchronization=tf.VariableSynchronization.ON_READ,
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        captured = {"large": variable(large_shape, "captured_large")}
        if small_shape is not None:
            captured["small"] = variable(small_shape, "captured_small")
        object.__setattr__(self, "captured_views", captured)

        def capture_step(data):
            step = self.optimizer.iterations

            def store():
                for key, target in captured.items():
                    target.assign(tf.cast(data[key][:num_examples], tf.float32))
                return tf.constant(True)
            tf.cond(tf.logical_or(tf.equal(step, 1), tf.equal(step % every_steps, 0)), store,
                    lambda: tf.constant(False))
            return {}
        self._after_train_step(capture_step)

    def _after_train_step(self, extra):
        """Runs `extra(data) -> logs` after the method's `train_step` (probe, view capture)."""
        method_step = self.train_step

        def train_step(data):
            logs = method_step(data)
            return {**logs, **extra(data)}
        object.__setattr__(self, "train_step", train_step)

    def call(self, images, training=False):
        """Inference: pooled online-encoder features (what evaluation and export use)."""
        return self.online_encoder(images, training=training)
