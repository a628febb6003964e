"""LARS: layer-wise adaptive rate scaling (You et al. 2017), as used by SimCLR / BYOL / ReLICv2.

For each variable w with gradient g:
    if w is decayed:  g <- g + weight_decay * w
    if w is adapted:  trust = eeta * ||w|| / ||g|| when both norms are positive, else 1
                      g <- trust * g
    v <- momentum * v + lr * g
    w <- w - (momentum * v + lr * g)   if nesterov   else   w - v
The norms are overflow-safe (`l2_norm`): a gradient too large to square in float32 (~1e19)
still gets its finite norm, so the trust ratio scales it down instead of turning it into inf/NaN.
Biases and batch-norm parameters are excluded from both decay and adaptation by default
(BYOL appendix C). Exclusions are regular expressions searched in the variable path
(e.g. "encoder/initial_batchnorm/gamma"); they are resolved once, in `build()`, because the TF
backend hands `update_step` the raw tf.Variable, which no longer carries the Keras path.
"""

from __future__ import annotations

import re

import keras
from keras import ops

DEFAULT_EXCLUDE = ("bias", "beta", "gamma", "batchnorm")


def l2_norm(x):
    """||x||_2 without overflow: max|x| * ||x / max|x|||, 0 for x == 0 (squares of values
    above ~1.8e19 overflow float32; the scaled squares are at most 1)."""
    scale = ops.max(ops.abs(x))
    safe_scale = ops.where(scale > 0, scale, ops.ones_like(scale))
    return scale * ops.sqrt(ops.sum(ops.square(x / safe_scale)))


class LARS(keras.optimizers.Optimizer):
    def __init__(self, learning_rate=0.001, momentum=0.9, weight_decay=0.0, eeta=0.001,
                 nesterov=False, exclude_from_weight_decay=None,
                 exclude_from_layer_adaptation=None, name="lars", **kwargs):
        # Keras' own decoupled `weight_decay` stays off: LARS adds the decay to the gradient.
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LARS momentum must be in [0, 1), got {momentum}.")
        self.momentum = momentum
        self.lars_weight_decay = weight_decay
        self.eeta = eeta
        self.nesterov = nesterov
        self.exclude_from_weight_decay = tuple(
            DEFAULT_EXCLUDE if exclude_from_weight_decay is None else exclude_from_weight_decay)
        self.exclude_from_layer_adaptation = tuple(
            DEFAULT_EXCLUDE if exclude_from_layer_adaptation is None
            else exclude_from_layer_adaptation)

    @staticmethod
    def _excluded(path: str, patterns) -> bool:
        return any(re.search(p, path) for p in patterns)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momenta = [self.add_variable_from_reference(v, "momentum") for v in var_list]
        self._decayed = [self.lars_weight_decay > 0 and
                         not self._excluded(v.path, self.exclude_from_weight_decay)
                         for v in var_list]
        self._adapted = [not self._excluded(v.path, self.exclude_from_layer_adaptation)
                         for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        velocity = self._momenta[index]
        lr = ops.cast(learning_rate, variable.dtype)
        grad = ops.cast(gradient, variable.dtype)
        if self._decayed[index]:
            grad = grad + self.lars_weight_decay * variable
        if self._adapted[index]:
            w_norm = l2_norm(variable)
            g_norm = l2_norm(grad)
            trust = ops.where(
                ops.logical_and(w_norm > 0, g_norm > 0),
                self.eeta * w_norm / ops.maximum(g_norm, 1e-30),  # guarded: never divides by 0
                ops.ones_like(w_norm))
            grad = grad * trust
        self.assign(velocity, self.momentum * velocity + lr * grad)
        if self.nesterov:
            self.assign_sub(variable, self.momentum * velocity + lr * grad)
        else:
            self.assign_sub(variable, velocity)

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "weight_decay": self.lars_weight_decay,
            "eeta": self.eeta,
            "nesterov": self.nesterov,
            "exclude_from_weight_decay": list(self.exclude_from_weight_decay),
            "exclude_from_layer_adaptation": list(self.exclude_from_layer_adaptation),
        })
        return config
