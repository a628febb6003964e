"""Semi-supervised fine-tuning on 1 % / 10 % of the ImageNet labels (ReLICv2 appendix B.2).

The pretrained encoder plus a randomly initialised linear layer are trained end to end on a label
subset (the SimCLR splits: TFDS `imagenet2012_subset/1pct|10pct`, or a list file of example ids /
file names) with cross-entropy and SGD with Nesterov momentum 0.9, one learning rate for the
encoder and another for the head (as in SwAV), decayed by a step schedule. Training crops and test
preprocessing are those of linear evaluation. Batch norm runs in training mode while fine-tuning.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from relicv2_tf.evaluation import linear


def read_id_list(path: str) -> list[str]:
    """One example id or file name per line (SimCLR's `1percent.txt` format); blanks ignored."""
    with tf.io.gfile.GFile(path) as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise ValueError(f"{path} lists no example ids; expected one id or file name per line.")
    return ids


def filter_by_ids(examples, ids):
    """Keeps the examples (dicts with an `id` string) whose id, or id's last path component,
    is listed in `ids` (so `n01440764/n01440764_10026.JPEG` matches `n01440764_10026.JPEG`)."""
    keys = tf.constant(list(ids), tf.string)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, tf.int32)), default_value=0)

    def keep(example):
        example_id = example["id"]
        basename = tf.strings.split(example_id, "/")[-1]
        return tf.logical_or(table.lookup(example_id) > 0, table.lookup(basename) > 0)
    return examples.filter(keep)


def finetune(encoder, train_examples, *, num_classes: int, batch_size: int = 256,
             num_epochs: int = 20, encoder_learning_rate: float = 0.02,
             head_learning_rate: float = 5.0, decay_epochs=(12, 16), decay_factor: float = 0.2,
             weight_decay: float = 0.0, momentum: float = 0.9, nesterov: bool = True,
             bn_training: bool = True, image_size: int = 224, shuffle_buffer: int = 10_000,
             seed: int = 0, checkpoint_dir: str | None = None, checkpoint_every_steps: int = 0,
             stop_after_steps: int | None = None, progress: bool = True):
    """Fine-tunes `encoder` (in place) and a new linear head; returns (head, info).

    `train_examples` is an unbatched dataset of (uint8 image, label), already restricted to the
    label subset. The learning rates are multiplied by `decay_factor` at each of `decay_epochs`.
    """
    encoder.trainable = True
    num_train = linear.num_examples_of(train_examples)
    steps_per_epoch = math.ceil(num_train / batch_size)
    boundaries = [int(e * steps_per_epoch) for e in decay_epochs]
    head = linear.make_linear_head(int(encoder.output_shape[-1]), num_classes, seed)
    images = keras.Input((None, None, 3))
    model = keras.Model(images, head(encoder(images)))
    encoder_optimizer = linear.sgd(
        linear.learning_rate_schedule(encoder_learning_rate, 0, "step", boundaries, decay_factor),
        momentum, nesterov)
    head_optimizer = linear.sgd(
        linear.learning_rate_schedule(head_learning_rate, 0, "step", boundaries, decay_factor),
        momentum, nesterov)
    encoder_optimizer.build(encoder.trainable_variables)
    head_optimizer.build(head.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(encoder=encoder, head=head, step=step,
                                     encoder_optimizer=encoder_optimizer,
                                     head_optimizer=head_optimizer)
    step_fn = linear.classifier_step(
        model, None, training=bn_training, l2_weight_decay=weight_decay,
        optimizers=[(encoder_optimizer, encoder.trainable_variables),
                    (head_optimizer, head.trainable_variables)])

    batches_for_epoch = linear.augmented_epochs(train_examples, batch_size, seed=seed,
                                                image_size=image_size,
                                                shuffle_buffer=shuffle_buffer)

    info = linear.train_loop(step_fn, batches_for_epoch, num_epochs=num_epochs,
                             steps_per_epoch=steps_per_epoch, checkpoint=checkpoint, step=step,
                             checkpoint_dir=checkpoint_dir,
                             checkpoint_every_steps=checkpoint_every_steps,
                             stop_after_steps=stop_after_steps, progress=progress,
                             description="finetune")
    info.update(num_train_examples=num_train, steps_per_epoch=steps_per_epoch)
    encoder.trainable = False
    return head, info


def finetune_eval(encoder, train_examples, test_examples, *, num_classes: int,
                  batch_size: int = 256, eval_batch_size: int | None = None,
                  image_size: int = 224, resize_size: int = 256, progress: bool = True,
                  **finetune_kwargs):
    """Fine-tune then evaluate (top-1 / top-5 on centre crops). Returns (head, metrics, info);
    metrics is None when training stopped early (`stop_after_steps`)."""
    head, info = finetune(encoder, train_examples, num_classes=num_classes, batch_size=batch_size,
                          image_size=image_size, progress=progress, **finetune_kwargs)
    if info["stopped_at_step"] is not None:
        return head, None, info
    metrics = linear.evaluate_head(encoder, head, test_examples, num_classes=num_classes,
                                   batch_size=eval_batch_size or batch_size,
                                   image_size=image_size, resize_size=resize_size,
                                   progress=progress)
    return head, metrics, info

