"""The online linear probe: a classifier on the encoder's stop-gradient features, trained during
pretraining alongside the method (as solo-learn's and lightly's online classifiers), so the run
shows a label-based accuracy as it goes (`evaluation.online_probe`).

It reads the online encoder's pooled features of the first large view from the method's own
forward pass (no extra encoder pass; `SelfSupervisedModel.online_projections` hands them over),
stops their gradient, standardises them over the batch, and takes one step of its own SGD
optimizer on softmax cross-entropy.
Nothing flows back into the encoder and the probe draws no random numbers (zero-initialised), so
the encoder's trajectory is exactly that of a run without the probe. Its top-1 is measured on the
training batch before the step (a running estimate, not a held-out evaluation).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from relicv2_tf import cross_replica


class OnlineProbe:
    """A linear classifier [feature_dim -> num_classes] with its own optimizer and metrics.

    Create it inside the strategy scope (its variables and optimizer slots are built here)."""

    def __init__(self, feature_dim: int, num_classes: int, learning_rate: float,
                 momentum: float = 0.9):
        self.num_classes = int(num_classes)
        # Zero initialisation: no draw from the global random generators, which the method's own
        # initialisation and the data pipeline's seeds must not see moved.
        self.classifier = keras.Sequential(
            [keras.Input([feature_dim]),
             keras.layers.Dense(num_classes, kernel_initializer="zeros", dtype="float32",
                                name="online_probe")],  # float32 under mixed precision too
            name="online_probe")
        self.optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum,
                                              name="online_probe_sgd")
        self.optimizer.build(self.classifier.trainable_variables)
        self.metrics = {name: keras.metrics.Mean(name=name)
                        for name in ("probe_loss", "probe_top1")}

    def train_step(self, features, labels) -> dict:
        """One step on a replica's batch; the loss is normalised by the global batch, so the
        optimizer's sum over replicas is the global mean's gradient."""
        _, num_replicas = cross_replica.replica_info()
        features = tf.stop_gradient(tf.cast(features, tf.float32))
        # Standardised over the batch, as MAE's linear probe (BatchNorm without affine before
        # the head, He et al. 2022 appendix A.2): the encoder's feature scale changes by orders
        # of magnitude over training, and one learning rate then fits every stage.
        mean, variance = tf.nn.moments(features, axes=[0])
        features = (features - mean) * tf.math.rsqrt(variance + 1e-6)
        labels = tf.cast(labels, tf.int32)
        global_batch = tf.cast(tf.shape(labels)[0] * num_replicas, tf.float32)
        variables = self.classifier.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.classifier(features, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                       from_logits=True)
            loss = tf.reduce_sum(per_example) / global_batch
        grads = tape.gradient(loss, variables)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                          tf.float32)
        self.optimizer.apply_gradients(zip(grads, variables))
        self.metrics["probe_loss"].update_state(loss * num_replicas)
        self.metrics["probe_top1"].update_state(tf.reduce_mean(correct))
        return {name: metric.result() for name, metric in self.metrics.items()}
