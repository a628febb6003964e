"""The batch streams of the evaluation protocols, from unbatched (uint8 image, label) examples.

Test and feature batches are centre crops in a fixed order (`eval_preprocess.preprocess_for_eval`).
Training streams are one epoch each and a pure function of (seed, epoch), so a resumed run sees
the batches an uninterrupted one would (`engine.train_loop` skips those already seen).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from relicv2_tf.data import eval_preprocess


def num_examples_of(dataset) -> int:
    """Cardinality of an unbatched dataset, counting it once when TF does not know it."""
    cardinality = int(dataset.cardinality())
    if cardinality >= 0:
        return cardinality
    return int(dataset.map(lambda *x: 0).reduce(np.int64(0), lambda count, _: count + 1))


def eval_batches(examples, batch_size: int, image_size: int = 224, resize_size: int = 256):
    """(image, label) examples -> batches of (normalised centre crops, labels), in order."""
    def preprocess(image, label):
        return (eval_preprocess.preprocess_for_eval(image, image_size, resize_size),
                tf.cast(label, tf.int32))
    return (examples.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def augmented_batches(examples, batch_size: int, *, epoch: int, seed: int, image_size: int = 224,
                      shuffle_buffer: int = 10_000, skip_batches: int = 0):
    """One epoch of shuffled (random resized crop + flip, labels) batches, reproducible per
    (seed, epoch): resuming in the middle of an epoch skips the batches already seen."""
    def preprocess(index, example):
        image, label = example
        crop_seed = tf.stack([tf.cast(seed * 100_003 + epoch, tf.int64), index])
        return (eval_preprocess.preprocess_for_linear_train(image, crop_seed, image_size),
                tf.cast(label, tf.int32))
    dataset = examples.shuffle(shuffle_buffer, seed=seed * 1009 + epoch,
                               reshuffle_each_iteration=False).enumerate()
    dataset = dataset.skip(skip_batches * batch_size)
    return (dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def augmented_epochs(train_examples, batch_size: int, *, seed: int, image_size: int,
                     shuffle_buffer: int):
    """`batches_for_epoch(epoch, skip)` of training crops, for `engine.train_loop` (linear probe
    with augmentation, fine-tuning, the supervised baseline)."""
    def batches_for_epoch(epoch, skip):
        return augmented_batches(train_examples, batch_size, epoch=epoch, seed=seed,
                                 image_size=image_size, shuffle_buffer=shuffle_buffer,
                                 skip_batches=skip)
    return batches_for_epoch


def feature_batches(features, labels, batch_size: int, *, epoch: int, seed: int,
                    skip_batches: int = 0):
    """One shuffled epoch over precomputed features, reproducible per (seed, epoch).

    Plain numpy indexing: building a tf.data pipeline per epoch costs more than the epoch itself
    when the head is the only thing trained.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(labels))
    labels = np.asarray(labels, np.int32)
    for start in range(skip_batches * batch_size, len(order), batch_size):
        index = order[start:start + batch_size]
        yield features[index], labels[index]


def feature_epochs(features, labels, batch_size: int, *, seed: int):
    """`batches_for_epoch(epoch, skip)` over precomputed features, for `engine.train_loop`."""
    def batches_for_epoch(epoch, skip):
        return feature_batches(features, labels, batch_size, epoch=epoch, seed=seed,
                               skip_batches=skip)
    return batches_for_epoch
