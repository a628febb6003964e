"""Learning-rate and target-EMA schedules.

Learning rate: linear warm-up then cosine decay (BYOL, Grill et al. 2020, appendix C; SimCLR).
Target EMA xi <- tau xi + (1 - tau) theta: BYOL anneals tau from tau_base to 1 with a cosine
(section 3.2); ReLICv2 writes a fixed rate tau (appendix G.3 "Target EMA", Table 22: 0.99-0.993
best), as MoCo does for its key encoder (m = 0.999).
Settings given in epochs become steps in one place, `epochs_to_steps`.
"""

from __future__ import annotations

import dataclasses
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


def epochs_to_steps(epochs: float, steps_per_epoch: float) -> int:
    """The step at which `epochs` (a float: fractions allowed) have passed, rounded to the
    nearest step; `steps_per_epoch` is the number of the run's steps in one epoch."""
    return round(epochs * steps_per_epoch)


@dataclasses.dataclass(frozen=True)
class RunLength:
    """A run's `total_steps`, and its `steps_per_epoch` (examples / global batch, not rounded;
    None when the caller has no data size) for the settings a method gives in epochs."""

    total_steps: int
    steps_per_epoch: float | None = None

    def steps(self, epochs: float, name: str) -> int:
        """`epochs` of the setting `name` in steps (`epochs_to_steps`)."""
        if self.steps_per_epoch is None:
            raise ValueError(f"{name}={epochs} is given in epochs, but the run's steps per epoch "
                             "are unknown: pass steps_per_epoch (examples / global batch) to "
                             "methods.build_method.")
        return epochs_to_steps(epochs, self.steps_per_epoch)


TARGET_EMA_SCHEDULES = ("constant", "cosine")


def check_config(config, fail):
    """The target EMA of `config.training` (rate and schedule)."""
    t = config.training
    if t.target_ema_schedule not in TARGET_EMA_SCHEDULES:
        fail(f"training.target_ema_schedule={t.target_ema_schedule!r}; choose one of "
             f"{TARGET_EMA_SCHEDULES}.")
    if not 0.0 <= t.base_target_ema <= 1.0:
        fail(f"training.base_target_ema={t.base_target_ema} must be in [0, 1].")


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
