"""Linear evaluation of a frozen encoder (ReLICv2 section 3 and appendix B.1).

Protocol: the encoder's weights and batch-norm statistics are frozen (inference mode); a linear
layer is trained on its pooled features with cross-entropy and SGD with Nesterov momentum 0.9 and
no weight decay. Training images: random resized crop + horizontal flip
(`eval_preprocess.preprocess_for_linear_train`); test images: resize 256 bicubic + centre crop 224
(`eval_preprocess.preprocess_for_eval`). Reports top-1 / top-5.

With `augment=False` the features of the (centre-cropped) training images are computed once and the
head is trained on them: the encoder runs once instead of once per epoch.
"""

from __future__ import annotations

import math
import os

import keras
import tensorflow as tf

from relicv2_tf.evaluation import batches, engine, features, inputs, linear_head, results


def train_linear_head(encoder, train_examples, *, num_classes: int, batch_size: int = 256,
                      num_epochs: int = 100, learning_rate: float = 0.5, momentum: float = 0.9,
                      nesterov: bool = True, schedule: str = "cosine", decay_epochs=(),
                      decay_factor: float = 0.1, weight_decay: float = 0.0, augment: bool = True,
                      image_size: int = 224, resize_size: int = 256, shuffle_buffer: int = 10_000,
                      seed: int = 0, checkpoint_dir: str | None = None,
                      checkpoint_every_steps: int = 0, stop_after_steps: int | None = None,
                      train_features=None, progress: bool = True, strategy=None,
                      on_nonfinite: str = "stop", max_consecutive_nonfinite: int = 5):
    """Trains a linear head on a frozen encoder; returns (head, info).

    `train_examples` is an unbatched dataset of (uint8 image [H, W, 3], label). With
    `augment=False` the centre-crop features are computed once (or taken from `train_features`,
    a (features, labels) pair; `encoder` and `train_examples` may then be None) and every epoch
    runs on them. Under `strategy` (the encoder built in its scope) the head and optimizer are
    built in its scope and every batch is split over its replicas.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if not augment:
        if train_features is None:
            encoder.trainable = False
            train_features = features.centre_crop_features(
                encoder, train_examples, batch_size=batch_size, image_size=image_size,
                resize_size=resize_size, progress=progress, description="train features",
                strategy=strategy)
        train_x, train_y = train_features
        num_train, feature_dim = len(train_y), int(train_x.shape[-1])
        batches_for_epoch = batches.feature_epochs(train_x, train_y, batch_size, seed=seed)
    else:
        encoder.trainable = False
        num_train, feature_dim = (batches.num_examples_of(train_examples),
                                  int(encoder.output_shape[-1]))
        batches_for_epoch = batches.augmented_epochs(train_examples, batch_size, seed=seed,
                                                     image_size=image_size,
                                                     shuffle_buffer=shuffle_buffer)
    steps_per_epoch = math.ceil(num_train / batch_size)
    with strategy.scope():
        head = linear_head.make_linear_head(feature_dim, num_classes, seed)
        optimizer = engine.sgd(engine.learning_rate_schedule(
            learning_rate, steps_per_epoch * num_epochs, schedule,
            [int(e * steps_per_epoch) for e in decay_epochs], decay_factor), momentum, nesterov)
        optimizer.build(head.trainable_variables)
        step = engine.step_counter()
        model = head
        if augment:  # frozen encoder (inference-mode batch norm) + head, one step per batch
            images = keras.Input((None, None, 3))
            model = keras.Model(images, head(encoder(images, training=False)))
    step_fn = engine.classifier_step(model, optimizer, l2_weight_decay=weight_decay,
                                     variables=head.trainable_variables, strategy=strategy)
    info = engine.train_loop(
        step_fn, batches_for_epoch, num_epochs=num_epochs, steps_per_epoch=steps_per_epoch,
        state={"head": head, "optimizer": optimizer, "step": step}, step=step,
        checkpoint_dir=checkpoint_dir, checkpoint_every_steps=checkpoint_every_steps,
        stop_after_steps=stop_after_steps, progress=progress, description="linear",
        on_nonfinite=on_nonfinite, max_consecutive_nonfinite=max_consecutive_nonfinite,
        strategy=strategy)
    info.update(num_train_examples=num_train, steps_per_epoch=steps_per_epoch)
    return head, info


def linear_eval(encoder, train_examples, test_examples, *, num_classes: int, batch_size: int = 256,
                eval_batch_size: int | None = None, image_size: int = 224,
                resize_size: int = 256, progress: bool = True, strategy=None, **train_kwargs):
    """The full protocol: train the head, then evaluate it. Returns (head, metrics, info);
    metrics is None when training stopped early (`stop_after_steps`)."""
    head, info = train_linear_head(encoder, train_examples, num_classes=num_classes,
                                   batch_size=batch_size, image_size=image_size,
                                   resize_size=resize_size, progress=progress,
                                   strategy=strategy, **train_kwargs)
    if info["stopped_at_step"] is not None:
        return head, None, info
    metrics = linear_head.evaluate_head(
        encoder, head, test_examples, num_classes=num_classes,
        batch_size=eval_batch_size or batch_size, image_size=image_size,
        resize_size=resize_size, progress=progress, strategy=strategy)
    return head, metrics, info


def run(config, output_dir: str, *, strategy=None, progress: bool = True) -> dict:
    """`relicv2-linear-eval`: evaluates the config's encoder, writes `linear_head.keras` and
    `linear_eval.json` to `output_dir` (resuming from `<output_dir>/checkpoints`; only the
    chief of a multi-worker `strategy` writes)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        encoder = inputs.encoder_from_config(config)
    num_classes = inputs.resolve_num_classes(config.num_classes, config.data, config.train_split)
    train_examples = inputs.labelled_examples(config.data, config.train_split, seed=config.seed)
    test_examples = inputs.labelled_examples(config.data, config.test_split, seed=config.seed)
    head, metrics, info = linear_eval(
        encoder, train_examples, test_examples, num_classes=num_classes, seed=config.seed,
        eval_batch_size=config.eval_batch_size, progress=progress, strategy=strategy,
        checkpoint_dir=os.path.join(output_dir, "checkpoints"), **config.linear.to_dict())
    with results.written_by_chief(output_dir, strategy) as out:
        details = {"head": linear_head.save_head(head, out),
                   "encoder_dir": config.encoder_dir or "random_init",
                   "num_train_examples": info["num_train_examples"],
                   "epoch_losses": info["losses"]}
        results.write_result(out, "linear_eval", metrics, config=config, details=details)
    return metrics
