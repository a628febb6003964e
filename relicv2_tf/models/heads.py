"""Projector and predictor MLPs (BYOL, Grill et al. 2020, section 3.3).

Linear(hidden) -> BatchNorm -> ReLU -> Linear(output); BYOL and ReLICv2 use hidden 4096 and
output 256 for both the projector g and the predictor q. Without batch norm
(`use_batch_norm=False`) it is MoCo-v2's head, Linear(2048) -> ReLU -> Linear(128) (Chen et al.
2020b, "MLP head" and Table 1; the `mlp` option of facebookresearch/moco's moco/builder.py).
"""

from __future__ import annotations

import keras

from relicv2_tf.models import batch_norm


def mlp(
    input_dim: int,
    hidden_dim: int = 4096,
    output_dim: int = 256,
    *,
    num_hidden_layers: int = 1,
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    synchronized_bn: bool = False,
    use_batch_norm: bool = True,
    name: str = "mlp",
) -> keras.Model:
    """A BYOL-shaped MLP: [N, input_dim] -> [N, output_dim]; `use_batch_norm=False` drops the
    hidden layers' batch norm (MoCo-v2), leaving Linear -> ReLU."""
    inputs = keras.Input(shape=(input_dim,), name=f"{name}_inputs")
    x = inputs
    for i in range(num_hidden_layers):
        x = keras.layers.Dense(hidden_dim, name=f"{name}_linear_{i}")(x)
        if use_batch_norm:
            x = batch_norm.BatchNormalization(
                momentum=bn_momentum, epsilon=bn_epsilon, synchronized=synchronized_bn,
                name=f"{name}_batchnorm_{i}")(x)
        x = keras.layers.ReLU()(x)
    outputs = keras.layers.Dense(output_dim, name=f"{name}_output")(x)
    return keras.Model(inputs, outputs, name=name)
