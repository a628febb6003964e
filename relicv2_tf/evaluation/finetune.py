"""Semi-supervised fine-tuning on 1 % / 10 % of the ImageNet labels (ReLICv2 appendix B.2).

The pretrained encoder plus a randomly initialised linear layer are trained end to end on a label
subset (the SimCLR splits: TFDS `imagenet2012_subset/1pct|10pct`, or a list file of example ids /
file names) with cross-entropy and SGD with Nesterov momentum 0.9, one learning rate for the
encoder and another for the head (as in SwAV), decayed by a step schedule. Training crops and test
preprocessing are those of linear evaluation. Batch norm runs in training mode while fine-tuning.
"""

from __future__ import annotations

import math
import os

import keras
import tensorflow as tf

from relicv2_tf.evaluation import batches, engine, inputs, linear_head, results
from relicv2_tf.models import encoder_io


def finetune(encoder, train_examples, *, num_classes: int, batch_size: int = 256,
             num_epochs: int = 20, encoder_learning_rate: float = 0.02,
             head_learning_rate: float = 5.0, decay_epochs=(12, 16), decay_factor: float = 0.2,
             weight_decay: float = 0.0, momentum: float = 0.9, nesterov: bool = True,
             bn_training: bool = True, image_size: int = 224, shuffle_buffer: int = 10_000,
             seed: int = 0, checkpoint_dir: str | None = None, checkpoint_every_steps: int = 0,
             stop_after_steps: int | None = None, progress: bool = True, strategy=None,
             on_nonfinite: str = "stop", max_consecutive_nonfinite: int = 5):
    """Fine-tunes `encoder` (in place) and a new linear head; returns (head, info).

    `train_examples` is an unbatched dataset of (uint8 image, label), already restricted to the
    label subset. The learning rates are multiplied by `decay_factor` at each of `decay_epochs`.
    Under `strategy` (the encoder built in its scope) every batch is split over its replicas.
    """
    strategy = strategy or tf.distribute.get_strategy()
    encoder.trainable = True
    num_train = batches.num_examples_of(train_examples)
    steps_per_epoch = math.ceil(num_train / batch_size)
    boundaries = [int(e * steps_per_epoch) for e in decay_epochs]

    def optimizer(learning_rate, variables):
        sgd = engine.sgd(engine.learning_rate_schedule(learning_rate, 0, "step", boundaries,
                                                       decay_factor), momentum, nesterov)
        sgd.build(variables)
        return sgd

    with strategy.scope():
        head = linear_head.make_linear_head(int(encoder.output_shape[-1]), num_classes, seed)
        images = keras.Input((None, None, 3))
        model = keras.Model(images, head(encoder(images)))
        encoder_optimizer = optimizer(encoder_learning_rate, encoder.trainable_variables)
        head_optimizer = optimizer(head_learning_rate, head.trainable_variables)
        step = engine.step_counter()
    step_fn = engine.classifier_step(
        model, None, training=bn_training, l2_weight_decay=weight_decay,
        optimizers=[(encoder_optimizer, encoder.trainable_variables),
                    (head_optimizer, head.trainable_variables)], strategy=strategy)
    info = engine.train_loop(
        step_fn, batches.augmented_epochs(train_examples, batch_size, seed=seed,
                                          image_size=image_size, shuffle_buffer=shuffle_buffer),
        num_epochs=num_epochs, steps_per_epoch=steps_per_epoch,
        state={"encoder": encoder, "head": head, "step": step,
               "encoder_optimizer": encoder_optimizer, "head_optimizer": head_optimizer},
        step=step, checkpoint_dir=checkpoint_dir, checkpoint_every_steps=checkpoint_every_steps,
        stop_after_steps=stop_after_steps, progress=progress, description="finetune",
        on_nonfinite=on_nonfinite, max_consecutive_nonfinite=max_consecutive_nonfinite,
        strategy=strategy)
    info.update(num_train_examples=num_train, steps_per_epoch=steps_per_epoch)
    encoder.trainable = False
    return head, info


def finetune_eval(encoder, train_examples, test_examples, *, num_classes: int,
                  batch_size: int = 256, eval_batch_size: int | None = None,
                  image_size: int = 224, resize_size: int = 256, progress: bool = True,
                  strategy=None, **finetune_kwargs):
    """Fine-tune then evaluate (top-1 / top-5 on centre crops). Returns (head, metrics, info);
    metrics is None when training stopped early (`stop_after_steps`)."""
    head, info = finetune(encoder, train_examples, num_classes=num_classes, batch_size=batch_size,
                          image_size=image_size, progress=progress, strategy=strategy,
                          **finetune_kwargs)
    if info["stopped_at_step"] is not None:
        return head, None, info
    metrics = linear_head.evaluate_head(encoder, head, test_examples, num_classes=num_classes,
                                        batch_size=eval_batch_size or batch_size,
                                        image_size=image_size, resize_size=resize_size,
                                        progress=progress, strategy=strategy)
    return head, metrics, info


def run(config, output_dir: str, *, strategy=None, progress: bool = True) -> dict:
    """`relicv2-finetune`: fine-tunes the config's encoder on its label subset (`data`, filtered
    by `subset_file` when set), scores it on `test_data`, writes the fine-tuned `encoder/`,
    `linear_head.keras` and `finetune.json` to `output_dir` (resuming from its checkpoints;
    only the chief of a multi-worker `strategy` writes)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        encoder = inputs.encoder_from_config(config)
    model_config = inputs.encoder_model_config(config)
    num_classes = inputs.resolve_num_classes(config.num_classes, config.test_data,
                                             config.test_split)
    ids = inputs.read_id_list(config.subset_file) if config.subset_file else None
    train_examples = inputs.labelled_examples(config.data, config.train_split, seed=config.seed,
                                              ids=ids)
    test_examples = inputs.labelled_examples(config.test_data, config.test_split)
    head, metrics, info = finetune_eval(
        encoder, train_examples, test_examples, num_classes=num_classes, seed=config.seed,
        eval_batch_size=config.eval_batch_size, resize_size=config.resize_size,
        progress=progress, checkpoint_dir=os.path.join(output_dir, "checkpoints"),
        strategy=strategy, **config.finetune.to_dict())
    with results.written_by_chief(output_dir, strategy) as out:
        encoder_dir = encoder_io.save_encoder(encoder, model_config, os.path.join(out, "encoder"))
        linear_head.save_head(head, out)
        details = {"encoder": encoder_dir, "num_train_examples": info["num_train_examples"],
                   "subset": config.subset_file or config.data.tfds_name}
        results.write_result(out, "finetune", metrics, config=config, details=details)
    return metrics
