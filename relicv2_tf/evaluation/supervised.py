"""Supervised baseline: the same ResNet trained with labels and cross-entropy (ReLICv2 section 3).

The paper compares against the standard supervised ResNet of the self-supervised literature
(SimCLR / BYOL): cross-entropy, cosine learning-rate schedule, full labels. The recipe here is the
standard ImageNet one (SGD with Nesterov momentum 0.9, learning rate 0.1 x batch / 256, weight
decay 1e-4 on kernels, cosine decay, random resized crop + flip); the encoder is saved in the
encoder-directory format so every protocol evaluates it exactly like a pretrained one.
"""

from __future__ import annotations

import math
import os

import keras
import tensorflow as tf

from relicv2_tf.evaluation import batches, engine, inputs, linear_head, results
from relicv2_tf.models import encoder_io


def train_supervised(encoder, train_examples, *, num_classes: int, batch_size: int = 256,
                     num_epochs: int = 90, base_learning_rate: float = 0.1,
                     weight_decay: float = 1e-4, momentum: float = 0.9, nesterov: bool = True,
                     schedule: str = "cosine", decay_epochs=(), decay_factor: float = 0.1,
                     image_size: int = 224, shuffle_buffer: int = 10_000, seed: int = 0,
                     checkpoint_dir: str | None = None, checkpoint_every_steps: int = 0,
                     stop_after_steps: int | None = None, progress: bool = True,
                     strategy=None, on_nonfinite: str = "stop",
                     max_consecutive_nonfinite: int = 5):
    """Trains `encoder` (in place) and a linear classifier from labels; returns (head, info).

    The learning rate is `base_learning_rate * batch_size / 256` (Goyal et al. 2017). Under
    `strategy` (the encoder built in its scope) every batch is split over its replicas.
    """
    strategy = strategy or tf.distribute.get_strategy()
    encoder.trainable = True
    num_train = batches.num_examples_of(train_examples)
    steps_per_epoch = math.ceil(num_train / batch_size)
    learning_rate = base_learning_rate * batch_size / 256
    with strategy.scope():
        head = linear_head.make_linear_head(int(encoder.output_shape[-1]), num_classes, seed)
        images = keras.Input((None, None, 3))
        model = keras.Model(images, head(encoder(images)))
        optimizer = engine.sgd(engine.learning_rate_schedule(
            learning_rate, steps_per_epoch * num_epochs, schedule,
            [int(e * steps_per_epoch) for e in decay_epochs], decay_factor), momentum, nesterov)
        optimizer.build(model.trainable_variables)
        step = engine.step_counter()
    step_fn = engine.classifier_step(model, optimizer, training=True,
                                     l2_weight_decay=weight_decay, strategy=strategy)
    info = engine.train_loop(
        step_fn, batches.augmented_epochs(train_examples, batch_size, seed=seed,
                                          image_size=image_size, shuffle_buffer=shuffle_buffer),
        num_epochs=num_epochs, steps_per_epoch=steps_per_epoch,
        state={"encoder": encoder, "head": head, "optimizer": optimizer, "step": step},
        step=step, checkpoint_dir=checkpoint_dir, checkpoint_every_steps=checkpoint_every_steps,
        stop_after_steps=stop_after_steps, progress=progress, description="supervised",
        on_nonfinite=on_nonfinite, max_consecutive_nonfinite=max_consecutive_nonfinite,
        strategy=strategy)
    info.update(num_train_examples=num_train, steps_per_epoch=steps_per_epoch,
                learning_rate=learning_rate)
    encoder.trainable = False
    return head, info


def run(config, output_dir: str, *, strategy=None, progress: bool = True) -> dict:
    """`relicv2-supervised`: trains a random-init encoder of `config.model` with labels, writes
    `encoder/`, `linear_head.keras` and `supervised.json` (the classifier's test accuracy) to
    `output_dir` (resuming from `<output_dir>/checkpoints`; only the chief of a multi-worker
    `strategy` writes)."""
    strategy = strategy or tf.distribute.get_strategy()
    num_classes = inputs.resolve_num_classes(config.num_classes, config.data, config.train_split)
    train_examples = inputs.labelled_examples(config.data, config.train_split)
    test_examples = inputs.labelled_examples(config.data, config.test_split)
    with strategy.scope():
        encoder = inputs.random_init_encoder(config.model, config.seed)
    head, info = train_supervised(
        encoder, train_examples, num_classes=num_classes, seed=config.seed, progress=progress,
        checkpoint_dir=os.path.join(output_dir, "checkpoints"), strategy=strategy,
        **config.supervised.to_dict())
    with results.written_by_chief(output_dir, strategy) as out:
        encoder_dir = encoder_io.save_encoder(
            encoder, encoder_io.encoder_config(config.model), os.path.join(out, "encoder"))
        linear_head.save_head(head, out)
        metrics = linear_head.evaluate_head(
            encoder, head, test_examples, num_classes=num_classes,
            batch_size=config.eval_batch_size, image_size=config.supervised.image_size,
            resize_size=config.resize_size, progress=progress, strategy=strategy)
        details = {"encoder": encoder_dir, "num_train_examples": info["num_train_examples"],
                   "learning_rate": info["learning_rate"], "epoch_losses": info["losses"]}
        results.write_result(out, "supervised", metrics, config=config, details=details)
    return metrics
