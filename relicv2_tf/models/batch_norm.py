"""Batch normalisation whose cross-replica statistics cost one all-reduce per layer.

Keras 3's `BatchNormalization(synchronized=True)` (TensorFlow backend) all-reduces the per-channel
sum, the sum of squares and the element count as three separate collectives, and counts the
elements by summing a tensor of ones as large as the activations. ReLICv2 runs three batch-
normalised passes per step (online large views, online small views, target), so on the
MirroredStrategy benchmark synchronised BN cost it ~19 % of its op time. This layer packs
[sum, sum of squares, count] into one vector, all-reduces it once (its gradient is then one
all-reduce as well) and takes the count from the shape. The statistics are Keras's exactly:
mean = E[x], variance = max(E[x^2] - E[x]^2, 0) over every replica's batch.
Without `synchronized`, or with a mask, it is Keras's layer unchanged. It overrides Keras's
`_moments` hook; `tests/test_batch_norm.py` pins it to Keras's synchronised layer.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from relicv2_tf import cross_replica


def packed_moments(x, axes, all_reduce_sum):
    """Mean and variance over `axes` of `x` (float32; channels last) and of every replica's `x`.

    `all_reduce_sum(vector)` sums a 1-D tensor over replicas (identity on one device). Returns
    per-channel (mean, variance), each of shape x.shape[-1:] when `axes` are the other axes.
    """
    channels = x.shape[-1]
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), x.dtype)
    packed = tf.concat([tf.reduce_sum(x, axis=axes), tf.reduce_sum(tf.square(x), axis=axes),
                        count[None]], axis=0)
    sums, sums_of_squares, total_count = tf.split(all_reduce_sum(packed), [channels, channels, 1])
    mean = tf.math.divide_no_nan(sums, total_count)
    mean_of_squares = tf.math.divide_no_nan(sums_of_squares, total_count)
    return mean, tf.maximum(mean_of_squares - tf.square(mean), 0.0)


@keras.saving.register_keras_serializable(package="relicv2_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with one packed all-reduce when `synchronized=True`."""

    def _moments(self, inputs, mask):
        context = tf.distribute.get_replica_context()
        channels_last = list(self._reduction_axes) == list(range(len(inputs.shape) - 1))
        if not (self.synchronized and mask is None and context is not None and channels_last):
            return super()._moments(inputs, mask)
        return packed_moments(inputs, self._reduction_axes, cross_replica.all_reduce_sum)
