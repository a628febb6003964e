"""Self-supervised methods: one keras.Model subclass each (`relicv2.py`, `byol.py`, `moco_v2.py`,
`swav.py`, `simclr.py`), sharing `base.SelfSupervisedModel`.

`METHODS` maps `config.method` to its `Method`: the defaults of its `loss` section (its paper's
recipe, with the source of each value), the check of its settings (`config.validate` calls
`check_config`) and its builder. A config selects a method with
`relicv2_tf.config.get_default_config(method)` and changes only what differs. This module imports
no TensorFlow, because config files read the loss defaults before TensorFlow starts; a builder
imports its model class. A dict is enough.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections


@dataclasses.dataclass(frozen=True)
class Method:
    """One `config.method`.

    loss_config: () -> the default `loss` section (a new ConfigDict; {} when the method has none).
    check_config: (config, fail) -> None; calls `fail(message)` on the first bad setting.
    build: (config, run: `schedules.RunLength`) -> the keras.Model.
    """

    loss_config: Callable[[], ml_collections.ConfigDict]
    check_config: Callable
    build: Callable


def _target(config):
    """The EMA target's rate and schedule (`training.base_target_ema`, `.target_ema_schedule`)."""
    return {"base_target_ema": config.training.base_target_ema,
            "target_ema_schedule": config.training.target_ema_schedule}


def _two_large_views(config, fail, exactly: bool):
    views = config.data.num_large_views
    if views < 2:
        fail(f"data.num_large_views={views}; {config.method} needs 2 large views.")
    if exactly and views != 2:
        fail(f"data.num_large_views={views}; {config.method} pairs exactly 2 views (set 2).")


# ------------------------------------------------------------------ ReLICv2 (methods/relicv2.py)
def _relicv2_loss():
    loss = ml_collections.ConfigDict()  # arguments of losses.relicv2_loss
    loss.temperature = 0.2  # tau
    loss.contrast_scale = 1.0  # c, weight of the contrastive term (appendix D.1)
    loss.alpha = 1.0  # invariance weight ("invariance scale", appendix D.1)
    loss.num_negatives = 10  # K; -1 = every other example of the global batch (paper Table 21)
    # Appendix E listing: all L x L large pairs incl. anchor == target, divided by (L + S) x L;
    # False = anchor != target only (an earlier reading, kept for comparison).
    loss.same_view_pairs = True
    return loss


def _relicv2_check(config, fail):
    views, batch_size = config.data.num_large_views, config.training.batch_size
    if views < 2:
        fail(f"data.num_large_views={views}; ReLICv2 needs at least 2 large views.")
    if config.loss.num_negatives >= batch_size:
        fail(f"loss.num_negatives={config.loss.num_negatives} must be < training.batch_size="
             f"{batch_size} (or -1 for every other example of the batch).")


def _relicv2_build(config, run):
    from relicv2_tf.methods.relicv2 import ReLICv2
    return ReLICv2(config.model, config.loss, total_steps=run.total_steps, seed=config.seed,
                   **_target(config))


# ------------------------------------------------------------------ BYOL (methods/byol.py)
def _byol_check(config, fail):
    _two_large_views(config, fail, exactly=False)


def _byol_build(config, run):
    from relicv2_tf.methods.byol import BYOL
    return BYOL(config.model, total_steps=run.total_steps, seed=config.seed, **_target(config))


# ------------------------------------------------------------------ MoCo-v2 (methods/moco_v2.py)
def _moco_v2_loss():
    """Sources: experiments/configs/moco_v2.py's docstring and docs/RECIPES.md."""
    loss = ml_collections.ConfigDict()
    loss.temperature = 0.2  # T (Chen et al. 2020b, Table 1 with the MLP head; --moco-t 0.2)
    loss.queue_size = 65536  # K keys (He et al. section 4; main_moco.py --moco-k)
    loss.symmetric = False  # q1 . k2 only, as main_moco.py / builder.py
    loss.shuffle_bn_splits = 8  # key batch-norm groups of the global batch (8 GPUs)
    return loss


def _moco_v2_check(config, fail):
    _two_large_views(config, fail, exactly=True)
    loss, batch_size = config.loss, config.training.batch_size
    keys_per_step = batch_size * (2 if loss.symmetric else 1)
    if loss.queue_size < keys_per_step:
        fail(f"loss.queue_size={loss.queue_size} must be >= {keys_per_step}, the keys each "
             f"step enqueues (training.batch_size, x 2 with loss.symmetric).")
    if loss.shuffle_bn_splits < 1 or batch_size % loss.shuffle_bn_splits:
        fail(f"loss.shuffle_bn_splits={loss.shuffle_bn_splits} must be >= 1 and divide "
             f"training.batch_size={batch_size} (Shuffle-BN groups of the key batch).")
    if config.model.synchronized_bn:
        fail("model.synchronized_bn=True would pool MoCo's Shuffle-BN key groups across "
             "replicas; set it False (loss.shuffle_bn_splits sets the key groups).")


def _moco_v2_build(config, run):
    from relicv2_tf.methods.moco_v2 import MoCoV2
    # The key encoder's momentum m is the target EMA rate (constant in MoCo).
    return MoCoV2(config.model, config.loss, total_steps=run.total_steps, seed=config.seed,
                  **_target(config))


# ------------------------------------------------------------------ SwAV (methods/swav.py)
def _swav_loss():
    """Sources: experiments/configs/swav.py's docstring and docs/RECIPES.md."""
    loss = ml_collections.ConfigDict()
    loss.temperature = 0.1
    loss.epsilon = 0.05  # Sinkhorn-Knopp regularisation
    loss.sinkhorn_iterations = 3
    loss.num_prototypes = 3000
    loss.code_views = (0, 1)  # codes of the two large crops
    loss.queue_size = 0  # off at batch 4096 (the paper: 3840 for batch 256)
    # Epochs (floats: fractions allowed), turned into steps by the builder for the run's batch.
    loss.queue_start_epochs = 15.0
    loss.freeze_prototypes_epochs = 1.0
    return loss


def _swav_check(config, fail):
    _two_large_views(config, fail, exactly=False)
    loss, training = config.loss, config.training
    views = config.data.num_large_views
    if not loss.code_views or max(loss.code_views) >= views or min(loss.code_views) < 0:
        fail(f"loss.code_views={tuple(loss.code_views)} must index large views 0..{views - 1}.")
    if loss.queue_size and loss.queue_size < training.batch_size:
        fail(f"loss.queue_size={loss.queue_size} must be 0 (no queue) or >= "
             f"training.batch_size={training.batch_size}.")
    if (loss.queue_size and training.max_steps <= 0
            and loss.queue_start_epochs >= training.num_epochs):
        fail(f"loss.queue_size={loss.queue_size} but loss.queue_start_epochs="
             f"{loss.queue_start_epochs} >= training.num_epochs={training.num_epochs}: the queue "
             "would never be used. Start it earlier (SwAV: 15 of 200 epochs) or set "
             "--config.loss.queue_size=0.")


def _swav_build(config, run):
    from relicv2_tf.methods.swav import SwAV
    loss = config.loss
    # SwAV's one epoch of frozen prototypes is 313 iterations at batch 4096.
    return SwAV(config.model, loss, total_steps=run.total_steps,
                queue_start_steps=run.steps(loss.queue_start_epochs, "loss.queue_start_epochs"),
                freeze_prototypes_steps=run.steps(loss.freeze_prototypes_epochs,
                                                  "loss.freeze_prototypes_epochs"),
                seed=config.seed)


# ------------------------------------------------------------------ SimCLR (methods/simclr.py)
def _simclr_loss():
    loss = ml_collections.ConfigDict()
    loss.temperature = 0.1  # NT-Xent at batch 4096 (appendix B.6; 0.5 in shorter ablations)
    return loss


def _simclr_check(config, fail):
    _two_large_views(config, fail, exactly=True)


def _simclr_build(config, run):
    from relicv2_tf.methods.simclr import SimCLR
    return SimCLR(config.model, config.loss, total_steps=run.total_steps, seed=config.seed)


METHODS = {
    "relicv2": Method(_relicv2_loss, _relicv2_check, _relicv2_build),
    "byol": Method(ml_collections.ConfigDict, _byol_check, _byol_build),
    "moco_v2": Method(_moco_v2_loss, _moco_v2_check, _moco_v2_build),
    "swav": Method(_swav_loss, _swav_check, _swav_build),
    "simclr": Method(_simclr_loss, _simclr_check, _simclr_build),
}


def check_config(config, fail):
    """`method` names a method, `loss` is that method's section, and the method's own check."""
    if config.method not in METHODS:
        fail(f"method={config.method!r}; choose one of {sorted(METHODS)} (--config.method=...).")
    method = METHODS[config.method]
    expected, given = sorted(method.loss_config()), sorted(config.loss)
    if given != expected:
        fail(f"method={config.method!r} with loss keys {given}, not {config.method}'s "
             f"{expected}: a config file selects its method with relicv2_tf.config."
             f"get_default_config({config.method!r}), which gives the method's loss section "
             "(--config.method alone keeps the loss section of the file's method); the demo "
             f"takes it as experiments/configs/demo.py:{config.method}.")
    method.check_config(config, fail)


def build_method(config, total_steps: int, steps_per_epoch: float | None = None):
    """The method of `config` for a run of `total_steps`. `steps_per_epoch` (examples / global
    batch, not rounded) turns the settings a method gives in epochs into steps (SwAV's); a
    method with such settings refuses to build without it."""
    from relicv2_tf.optim import schedules

    if config.method not in METHODS:
        raise ValueError(f"config.method={config.method!r} is not one of {sorted(METHODS)}.")
    return METHODS[config.method].build(config, schedules.RunLength(total_steps, steps_per_epoch))
