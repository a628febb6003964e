"""ReLICv2 (Tomasev et al. 2022): multi-view ReLIC with saliency-masked large views.

Per step: L large views go through the online network and the EMA target network, S small
views through the online network only; the loss averages the ReLIC pair loss over the appendix E
listing's (anchor, target) pairs (every large anchor with every large target, the same view
included, and every small anchor with every large target: (L + S) x L pairs; `losses.view_pairs`);
LARS updates the online network; the target follows by EMA. Saliency masking happens in the
data pipeline (relicv2_tf/data/views.py; docs/OBJECTIVE.md).
BatchNorm statistics are computed over all views of one resolution on a replica together (one
forward pass per resolution, as in multi-crop implementations), synchronised across replicas
when `model.synchronized_bn` is set.
"""

from __future__ import annotations

import tensorflow as tf

from relicv2_tf import cross_replica, losses
from relicv2_tf.methods import base


class ReLICv2(base.SelfSupervisedModel):
    def __init__(self, model_config, loss_config, *, total_steps, seed=0, **kwargs):
        super().__init__(model_config, total_steps=total_steps, use_predictor=True, seed=seed,
                         **kwargs)
        self.temperature = loss_config.temperature
        self.contrast_scale = loss_config.contrast_scale
        self.alpha = loss_config.alpha
        self.num_negatives = None if loss_config.num_negatives < 0 else loss_config.num_negatives
        self.same_view_pairs = loss_config.same_view_pairs
        self.declare_metrics(["loss", "contrastive", "invariance", "learning_rate", "target_ema"])

    def train_step(self, data):
        large, small = data["large"], data.get("small")
        num_large = large.shape[1]
        num_small = 0 if small is None else small.shape[1]
        replica_id, num_replicas = cross_replica.replica_info()
        local_batch = tf.shape(large)[0]

        targets = base.split_views(self.target_projections(base.views_to_batch(large)),
                                   num_large)
        with tf.GradientTape() as tape:
            online = base.split_views(self.online_predictions(base.views_to_batch(large)),
                                      num_large)
            if num_small:
                online += base.split_views(
                    self.online_predictions(base.views_to_batch(small)), num_small)
            terms = losses.relicv2_loss(
                online, targets, num_large=num_large, temperature=self.temperature,
                contrast_scale=self.contrast_scale, alpha=self.alpha,
                num_negatives=self.num_negatives, seed=self.step_seed(),
                same_view_pairs=self.same_view_pairs,
                global_batch_size=int(large.shape[0]) * num_replicas,
                online_views_all=[cross_replica.gather(o) for o in online],
                target_views_all=[cross_replica.gather(t) for t in targets],
                row_offset=replica_id * local_batch)
        # Learning rate and EMA rate of step k, read before the update increments k (as BYOL's
        # code evaluates both schedules at the step being taken).
        learning_rate, ema = self.optimizer.learning_rate, self.target_ema()
        self.apply_loss(tape, terms["loss"])
        self.update_target(ema)
        return self.track(terms, {"learning_rate": learning_rate, "target_ema": ema})
