"""ResNet v1 encoders (He et al. 2016) as used by BYOL / ReLIC / ReLICv2.

The default architecture is exactly the Haiku `hk.nets.ResNet` v1 torso that the ReLICv2 and
BYOL checkpoints were trained with:
  * 7x7/2 stem convolution without bias, batch norm, ReLU, 3x3/2 max-pool, all with TF "SAME"
    padding (Keras `padding="same"` has the same asymmetric padding as `lax` / TF "SAME");
  * four block groups with strides 1, 2, 2, 2; in bottleneck blocks the stride sits on the 3x3
    convolution (the "v1.5" placement); projection shortcuts where the shape changes;
  * batch norm with decay 0.9 and epsilon 1e-5; the last batch norm of each residual branch has its
    scale initialised to zero (Goyal et al. 2017), so each block starts as the identity;
  * the width multiplier scales every channel count, the stem included (ResNet-50 x2 has a
    128-channel stem), and the output is the global average pool of the last block group.

Layer names follow the Haiku module paths with "/~/" replaced by "__" (for example
`block_group_0__block_0__conv_0`), so converted checkpoints map one to one (models/convert.py).

`padding="torch"` builds the same network with PyTorch's padding, for encoders imported from
torchvision-layout checkpoints (SwAV, models/convert_swav.py). PyTorch pads every convolution
symmetrically by (kernel - 1) // 2 and the max-pool by 1, while TF "SAME" puts the odd pixel of a
stride-2 layer at the bottom/right (on an even input, the 7x7/2 stem pads 2 above and 3 below,
the 3x3/2 convolution and max-pool 0 above and 1 below), so the sampling grid moves by one pixel.
Stride-1 layers and 1x1 convolutions pad the same in both, so only the stride-2 layers with a
kernel > 1 change (`TorchPaddedConv2D`, and zero padding + "valid" for the max-pool). Layer names
and weights are identical in both variants, but a weights file of one does not load into the other
(Keras names its groups after the layer classes), so `model_config.json` must carry the padding.
"""

from __future__ import annotations

import keras

from relicv2_tf.models import batch_norm

PADDINGS = ("same", "torch")  # TF/Haiku "SAME" (default) | PyTorch's symmetric padding

# depth -> (blocks per group, bottleneck?)
RESNET_BLOCKS = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
    200: ((3, 24, 36, 3), True),
}
GROUP_STRIDES = (1, 2, 2, 2)


def check_config(config, fail):
    """`config.model.depth` is a ResNet this module builds."""
    if config.model.depth not in RESNET_BLOCKS:
        fail(f"model.depth={config.model.depth}; choose one of {sorted(RESNET_BLOCKS)}.")


def group_channels(depth: int, width_multiplier: int) -> tuple[int, ...]:
    """Output channels of the four block groups (Haiku `channels_per_group`)."""
    _, bottleneck = RESNET_BLOCKS[depth]
    base = (256, 512, 1024, 2048) if bottleneck else (64, 128, 256, 512)
    return tuple(_scaled(c, width_multiplier) for c in base)


def _scaled(channels: int, width_multiplier: float) -> int:
    scaled = channels * width_multiplier
    if scaled < 1 or scaled != int(scaled):
        raise ValueError(
            f"width_multiplier={width_multiplier} gives {scaled} channels for a {channels}-channel "
            "layer; use 1, 2, 4 (paper) or a fraction such as 0.25 that keeps channels integral.")
    return int(scaled)


def feature_dim(depth: int, width_multiplier: float = 1) -> int:
    """Dimension of the pooled representation (2048 for ResNet-50 x1)."""
    return group_channels(depth, width_multiplier)[-1]


def _batch_norm(name, *, momentum, epsilon, synchronized, zero_init=False):
    return batch_norm.BatchNormalization(
        momentum=momentum,
        epsilon=epsilon,
        synchronized=synchronized,
        gamma_initializer="zeros" if zero_init else "ones",
        name=name,
    )


@keras.saving.register_keras_serializable(package="relicv2_tf")
class TorchPaddedConv2D(keras.layers.Conv2D):
    """Conv2D with PyTorch's padding: zeros, (kernel - 1) // 2 on every side, then "valid"
    (channels_last, as everywhere in this package).

    A subclass rather than ZeroPadding2D + Conv2D, so the layer keeps its name and its `input` is
    the unpadded feature map (the saliency decoder taps block inputs by layer name).
    """

    def __init__(self, *args, **kwargs):
        kwargs["padding"] = "valid"
        super().__init__(*args, **kwargs)

    def _torch_padding(self):
        return [(k - 1) // 2 for k in self.kernel_size]

    def convolution_op(self, inputs, kernel):
        pad_h, pad_w = self._torch_padding()
        padded = keras.ops.pad(inputs, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
        return super().convolution_op(padded, kernel)

    def compute_output_shape(self, input_shape):
        padded = list(input_shape)
        for axis, pad in zip((1, 2), self._torch_padding()):
            padded[axis] = None if padded[axis] is None else padded[axis] + 2 * pad
        return super().compute_output_shape(tuple(padded))


def _conv(filters, kernel_size, stride, name, padding="same"):
    # Stride 1 or a 1x1 kernel: TF "SAME" already equals PyTorch's padding (see module docstring).
    torch_padded = padding == "torch" and stride > 1 and kernel_size > 1
    layer_class = TorchPaddedConv2D if torch_padded else keras.layers.Conv2D
    return layer_class(
        filters,
        kernel_size,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_in", "truncated_normal"),
        name=name,
    )


def _max_pool(x, padding):
    if padding == "torch":
        # PyTorch pads the max-pool with -inf; its input is a ReLU output (>= 0) and every window
        # holds at least one real pixel, so zero padding gives the same maxima.
        x = keras.layers.ZeroPadding2D(1, name="initial_max_pool_padding")(x)
        return keras.layers.MaxPooling2D(3, 2, padding="valid")(x)
    return keras.layers.MaxPooling2D(3, 2, padding="same")(x)


def _block(x, channels, stride, use_projection, bottleneck, prefix, bn, padding="same"):
    shortcut = x
    if use_projection:
        shortcut = _conv(channels, 1, stride, f"{prefix}__shortcut_conv", padding)(x)
        shortcut = bn(f"{prefix}__shortcut_batchnorm")(shortcut)
    if bottleneck:
        specs = [(channels // 4, 1, 1), (channels // 4, 3, stride), (channels, 1, 1)]
    else:
        specs = [(channels, 3, stride), (channels, 3, 1)]
    for i, (filters, kernel, conv_stride) in enumerate(specs):
        x = _conv(filters, kernel, conv_stride, f"{prefix}__conv_{i}", padding)(x)
        last = i == len(specs) - 1
        x = bn(f"{prefix}__batchnorm_{i}", zero_init=last)(x)
        if not last:
            x = keras.layers.ReLU()(x)
    x = keras.layers.Add()([x, shortcut])
    return keras.layers.ReLU()(x)


def resnet(
    depth: int = 50,
    width_multiplier: float = 1,
    *,
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    synchronized_bn: bool = False,
    zero_init_last_bn: bool = True,
    padding: str = "same",
    input_shape: tuple = (None, None, 3),
    name: str | None = None,
) -> keras.Model:
    """Builds a ResNet v1 encoder: normalised images [N, H, W, 3] -> features [N, C].

    Args:
      depth: 18, 34, 50, 101, 152 or 200.
      width_multiplier: 1, 2 or 4 in the paper; fractions (0.25) give tiny test encoders.
      bn_momentum / bn_epsilon: batch-norm decay and epsilon (Haiku defaults 0.9 / 1e-5).
      synchronized_bn: batch statistics over all replicas (`batch_norm.BatchNormalization`, one
        packed all-reduce per layer).
      zero_init_last_bn: zero-initialise the scale of each residual branch's last batch norm.
      padding: "same" (TF / Haiku, the pretraining default) or "torch" (PyTorch's symmetric
        padding, for encoders imported from PyTorch checkpoints; see the module docstring).
      input_shape: per-example input shape; spatial dims may be None.
    """
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_BLOCKS)}, got {depth}.")
    if padding not in PADDINGS:
        raise ValueError(f"ResNet padding must be one of {PADDINGS}, got {padding!r}.")
    channels = group_channels(depth, width_multiplier)  # validates the multiplier
    blocks, bottleneck = RESNET_BLOCKS[depth]

    def bn(layer_name, zero_init=False):
        return _batch_norm(
            layer_name,
            momentum=bn_momentum,
            epsilon=bn_epsilon,
            synchronized=synchronized_bn,
            zero_init=zero_init and zero_init_last_bn,
        )

    images = keras.Input(shape=input_shape, name="images")
    x = _conv(_scaled(64, width_multiplier), 7, 2, "initial_conv", padding)(images)
    x = bn("initial_batchnorm")(x)
    x = keras.layers.ReLU()(x)
    x = _max_pool(x, padding)
    for g, (num_blocks, ch, stride) in enumerate(zip(blocks, channels, GROUP_STRIDES)):
        for b in range(num_blocks):
            x = _block(
                x,
                ch,
                stride if b == 0 else 1,
                use_projection=(b == 0) and (bottleneck or g > 0),
                bottleneck=bottleneck,
                prefix=f"block_group_{g}__block_{b}",
                bn=bn,
                padding=padding,
            )
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, features, name=name or f"resnet{depth}x{width_multiplier:g}")
