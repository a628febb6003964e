"""BYOL (Grill et al. 2020): online predictor regresses the EMA target's projection.

Per step: the large views go through the online network (encoder, projector, predictor) and the
EMA target (encoder, projector); the loss is the symmetrised normalised MSE of every online
prediction against the target projections of the other views (eq. 2-3); LARS updates the online
network and the target follows the cosine EMA schedule tau_base -> 1 (section 3.2).
Background augmentations act in the data pipeline. BG_Swaps has no negatives to add here: for BYOL
it only changes the positive (second view = the anchor's foreground on another background), and
the `hard_negative` of the batch is ignored.
"""

from __future__ import annotations

import tensorflow as tf

from relicv2_tf import cross_replica, losses
from relicv2_tf.methods import base


class BYOL(base.SelfSupervisedModel):
    def __init__(self, model_config, *, total_steps, seed=0, **kwargs):
        super().__init__(model_config, total_steps=total_steps, use_predictor=True, seed=seed,
                         **kwargs)
        self.declare_metrics(["loss", "learning_rate", "target_ema"])

    def train_step(self, data):
        large = data["large"]
        num_views = large.shape[1]
        _, num_replicas = cross_replica.replica_info()

        views = base.views_to_batch(large)
        targets = base.split_views(self.target_projections(views), num_views)
        with tf.GradientTape() as tape:
            predictions = base.split_views(self.online_predictions(views), num_views)
            loss = losses.byol_loss(predictions, targets,
                                    global_batch_size=int(large.shape[0]) * num_replicas)
        # Learning rate and EMA rate of step k, read before the update increments k (as BYOL's
        # code evaluates both schedules at the step being taken).
        learning_rate, ema = self.optimizer.learning_rate, self.target_ema()
        self.apply_loss(tape, loss)
        self.update_target(ema)
        return self.track({"loss": loss}, {"learning_rate": learning_rate, "target_ema": ema})
