"""Learning-rate and target-EMA schedules.

Learning rate: linear warm-up then cosine decay (BYOL, Grill et al. 2020, appendix C; SimCLR).
Target EMA xi <- tau xi + (1 - tau) theta: BYOL anneals tau from tau_base to 1 with a cosine
(section 3.2); ReLICv2 writes a fixed rate tau (appendix G.3 "Target EMA", Table 22: 0.99-0.993
best), as MoCo does for its key encoder (m = 0.999).
"""

from __future__ import annotations

import math

import keras
from keras import ops


def warmup_cosine(step, base_learning_rate: float, total_steps: int, warmup_steps: int):
    """Linear warm-up from 0 to `base_learning_rate` over `warmup_steps`, then cosine decay to 0
    at `total_steps` (no restarts)."""
    step = ops.cast(step, "float32")
    warmup = base_learning_rate * step / max(warmup_steps, 1)
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    progress = ops.clip(progress, 0.0, 1.0)
    cosine = 0.5 * base_learning_rate * (1.0 + ops.cos(math.pi * progress))
    return ops.where(step < warmup_steps, warmup, cosine)


TARGET_EMA_SCHEDULES = ("constant", "cosine")


def target_ema_rate(step, base_ema: float, total_steps: int, schedule: str = "cosine"):
    """The EMA rate tau(k) at step k of K = `total_steps`.

    constant: tau(k) = tau (ReLICv2 appendix G.3; MoCo's momentum m).
    cosine:   tau(k) = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2, from tau_base at 0 to 1 at
              K (BYOL section 3.2).
    """
    if schedule == "constant":
        return ops.cast(ops.full((), base_ema), "float32")
    if schedule != "cosine":
        raise ValueError(f"target EMA schedule {schedule!r} is not one of {TARGET_EMA_SCHEDULES}.")
    progress = ops.clip(ops.cast(step, "float32") / max(total_steps, 1), 0.0, 1.0)
    return 1.0 - (1.0 - base_ema) * (ops.cos(math.pi * progress) + 1.0) / 2.0


@keras.saving.register_keras_serializable("relicv2_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """`warmup_cosine` as a Keras schedule for the optimizer."""

    def __init__(self, base_learning_rate: float, total_steps: int, warmup_steps: int):
        self.base_learning_rate = base_learning_rate
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        return warmup_cosine(step, self.base_learning_rate, self.total_steps, self.warmup_steps)

    def get_config(self):
        return {"base_learning_rate": self.base_learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}
