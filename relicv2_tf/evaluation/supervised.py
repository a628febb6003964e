"""Supervised baseline: the same ResNet trained with labels and cross-entropy (ReLICv2 section 3).

The paper compares against the standard supervised ResNet of the self-supervised literature
(SimCLR / BYOL): cross-entropy, cosine learning-rate schedule, full labels. The recipe here is the
standard ImageNet one (SGD with Nesterov momentum 0.9, learning rate 0.1 x batch / 256, weight
decay 1e-4 on kernels, cosine decay, random resized crop + flip); the encoder is saved in the
encoder-directory format so every protocol evaluates it exactly like a pretrained one.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from relicv2_tf.evaluation import linear


def train_supervised(encoder, train_examples, *, num_classes: int, batch_size: int = 256,
                     num_epochs: int = 90, base_learning_rate: float = 0.1,
                     weight_decay: float = 1e-4, momentum: float = 0.9, nesterov: bool = True,
                     schedule: str = "cosine", decay_epochs=(), decay_factor: float = 0.1,
                     image_size: int = 224, shuffle_buffer: int = 10_000, seed: int = 0,
                     checkpoint_dir: str | None = None, checkpoint_every_steps: int = 0,
                     stop_after_steps: int | None = None, progress: bool = True):
    """Trains `encoder` (in place) and a linear classifier from labels; returns (head, info).

    The learning rate is `base_learning_rate * batch_size / 256` (Goyal et al. 2017).
    """
    encoder.trainable = True
    num_train = linear.num_examples_of(train_examples)
    steps_per_epoch = math.ceil(num_train / batch_size)
    total_steps = steps_per_epoch * num_epochs
    learning_rate = base_learning_rate * batch_size / 256
    head = linear.make_linear_head(int(encoder.output_shape[-1]), num_classes, seed)
    images = keras.Input((None, None, 3))
    model = keras.Model(images, head(encoder(images)))
    optimizer = linear.sgd(
        linear.learning_rate_schedule(learning_rate, total_steps, schedule,
                                      [int(e * steps_per_epoch) for e in decay_epochs],
                                      decay_factor),
        momentum, nesterov)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(encoder=encoder, head=head, optimizer=optimizer, step=step)
    step_fn = linear.classifier_step(model, optimizer, training=True,
                                     l2_weight_decay=weight_decay)

    batches_for_epoch = linear.augmented_epochs(train_examples, batch_size, seed=seed,
                                                image_size=image_size,
                                                shuffle_buffer=shuffle_buffer)

    info = linear.train_loop(step_fn, batches_for_epoch, num_epochs=num_epochs,
                             steps_per_epoch=steps_per_epoch, checkpoint=checkpoint, step=step,
                             checkpoint_dir=checkpoint_dir,
                             checkpoint_every_steps=checkpoint_every_steps,
                             stop_after_steps=stop_after_steps, progress=progress,
                             description="supervised")
    info.update(num_train_examples=num_train, steps_per_epoch=steps_per_epoch,
                learning_rate=learning_rate)
    encoder.trainable = False
    return head, info
