"""Self-supervised methods: one keras.Model subclass each, sharing `base.SelfSupervisedModel`.

`METHODS` maps `config.method` to a builder taking (config, total_steps); a dict is enough.
"""

from relicv2_tf.methods.byol import BYOL
from relicv2_tf.methods.moco_v2 import MoCoV2
from relicv2_tf.methods.relicv2 import ReLICv2
from relicv2_tf.methods.simclr import SimCLR
from relicv2_tf.methods.swav import SwAV


def _relicv2(config, total_steps):
    return ReLICv2(config.model, config.loss, total_steps=total_steps,
                   base_target_ema=config.training.base_target_ema, seed=config.seed)


def _byol(config, total_steps):
    return BYOL(config.model, total_steps=total_steps,
                base_target_ema=config.training.base_target_ema, seed=config.seed)


def _moco_v2(config, total_steps):
    # The key encoder's momentum m is the (constant) target EMA rate.
    return MoCoV2(config.model, config.loss, total_steps=total_steps,
                  key_momentum=config.training.base_target_ema, seed=config.seed)


def _swav(config, total_steps):
    return SwAV(config.model, config.loss, total_steps=total_steps, seed=config.seed)


def _simclr(config, total_steps):
    return SimCLR(config.model, config.loss, total_steps=total_steps, seed=config.seed)


METHODS = {
    "relicv2": _relicv2,
    "byol": _byol,
    "moco_v2": _moco_v2,
    "swav": _swav,
    "simclr": _simclr,
}


def build_method(config, total_steps: int):
    if config.method not in METHODS:
        raise ValueError(f"config.method={config.method!r} is not one of {sorted(METHODS)}.")
    return METHODS[config.method](config, total_steps)
