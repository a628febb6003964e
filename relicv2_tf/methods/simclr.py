"""SimCLR (Chen et al. 2020): NT-Xent between two views over the global batch, no target network.

Per step: both large views go through the online encoder and projector in one pass; every
projection is an anchor whose positive is the other view of its example and whose 2B - 2
negatives are the other examples' projections, gathered over replicas WITH gradient (SimCLR
back-propagates through the negatives; `ReplicaContext.all_gather` sums the gradients of the
gathered rows back to the replica that owns them). LARS, no EMA.
BG_Swaps: the hard negative (another foreground on the first view's background) goes through the
online network with the views and is one extra negative of the first view's anchor, masked by
`hard_negative_valid`.
"""

from __future__ import annotations

import tensorflow as tf

from relicv2_tf import cross_replica, losses
from relicv2_tf.methods import base


def views_and_hard_negatives(data):
    """The large views as one batch [L * b, ...], followed by the BG_Swaps hard negatives [b, ...]
    when the batch has them; returns (images, num_views, hard_negative_valid or None)."""
    large = data["large"]
    images = base.views_to_batch(large)
    if "hard_negative" not in data:
        return images, large.shape[1], None
    return (tf.concat([images, data["hard_negative"]], axis=0), large.shape[1],
            data["hard_negative_valid"])


class SimCLR(base.SelfSupervisedModel):
    def __init__(self, model_config, loss_config, *, total_steps, seed=0, **kwargs):
        super().__init__(model_config, total_steps=total_steps, base_target_ema=None,
                         use_predictor=False, seed=seed, **kwargs)
        self.temperature = loss_config.temperature
        self.declare_metrics(["loss", "learning_rate"])

    def train_step(self, data):
        images, num_views, hard_negative_valid = views_and_hard_negatives(data)
        if num_views != 2:
            raise ValueError(f"SimCLR uses 2 large views, got {num_views} (data.num_large_views).")
        replica_id, num_replicas = cross_replica.replica_info()
        local_batch = int(data["large"].shape[0])

        with tf.GradientTape() as tape:
            projections = self.online_projections(images)
            view1, view2, *hard_negatives = base.split_views(
                projections, num_views + (hard_negative_valid is not None))
            loss = losses.nt_xent_loss(
                view1, view2, temperature=self.temperature,
                view1_all=cross_replica.gather(view1, with_gradient=True),
                view2_all=cross_replica.gather(view2, with_gradient=True),
                row_offset=replica_id * local_batch,
                global_batch_size=local_batch * num_replicas,
                hard_negatives=hard_negatives[0] if hard_negatives else None,
                hard_negative_valid=hard_negative_valid)
        learning_rate = self.optimizer.learning_rate
        self.apply_loss(tape, loss)
        return self.track({"loss": loss}, {"learning_rate": learning_rate})
