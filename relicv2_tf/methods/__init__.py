"""Self-supervised methods: one keras.Model subclass each, sharing `base.SelfSupervisedModel`.

`METHODS` maps `config.method` to a builder taking (config, total_steps, steps_per_epoch); a dict
is enough.
"""

from relicv2_tf.methods.byol import BYOL
from relicv2_tf.methods.moco_v2 import MoCoV2
from relicv2_tf.methods.relicv2 import ReLICv2
from relicv2_tf.methods.simclr import SimCLR
from relicv2_tf.methods.swav import SwAV


def _target(config):
    """The EMA target's rate and schedule (`training.base_target_ema`, `.target_ema_schedule`)."""
    return {"base_target_ema": config.training.base_target_ema,
            "target_ema_schedule": config.training.target_ema_schedule}


def _relicv2(config, total_steps, steps_per_epoch):
    return ReLICv2(config.model, config.loss, total_steps=total_steps, seed=config.seed,
                   **_target(config))


def _byol(config, total_steps, steps_per_epoch):
    return BYOL(config.model, total_steps=total_steps, seed=config.seed, **_target(config))


def _moco_v2(config, total_steps, steps_per_epoch):
    # The key encoder's momentum m is the target EMA rate (constant in MoCo).
    return MoCoV2(config.model, config.loss, total_steps=total_steps, seed=config.seed,
                  **_target(config))


def _swav(config, total_steps, steps_per_epoch):
    return SwAV(config.model, config.loss, total_steps=total_steps,
                steps_per_epoch=steps_per_epoch, seed=config.seed)


def _simclr(config, total_steps, steps_per_epoch):
    return SimCLR(config.model, config.loss, total_steps=total_steps, seed=config.seed)


METHODS = {
    "relicv2": _relicv2,
    "byol": _byol,
    "moco_v2": _moco_v2,
    "swav": _swav,
    "simclr": _simclr,
}


def build_method(config, total_steps: int, steps_per_epoch: float | None = None):
    """The method of `config` for a run of `total_steps`; `steps_per_epoch` (examples / global
    batch) turns epoch-valued settings into steps, computed from the data when not given."""
    if config.method not in METHODS:
        raise ValueError(f"config.method={config.method!r} is not one of {sorted(METHODS)}.")
    if steps_per_epoch is None:
        from relicv2_tf.data import sources
        steps_per_epoch = sources.num_examples(config.data) / config.training.batch_size
    return METHODS[config.method](config, total_steps, steps_per_epoch)
