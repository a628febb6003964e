"""Linear evaluation of a frozen encoder (ReLICv2 section 3 and appendix B.1).

Protocol: the encoder's weights and batch-norm statistics are frozen (inference mode); a linear
layer is trained on its pooled features with cross-entropy and SGD with Nesterov momentum 0.9 and
no weight decay. Training images: random resized crop + horizontal flip
(`eval_preprocess.preprocess_for_linear_train`); test images: resize 256 bicubic + centre crop 224
(`eval_preprocess.preprocess_for_eval`). Reports top-1 / top-5.

With `augment=False` the features of the (centre-cropped) training images are computed once and the
head is trained on them: the encoder runs once instead of once per epoch.

This module also holds what the other protocols share: feature extraction, the exact linear-head
format, learning-rate schedules and the resumable training loop.
"""

from __future__ import annotations

import math
import os
import weakref

import keras
import numpy as np
import tensorflow as tf

from relicv2_tf.data import eval_preprocess
from relicv2_tf.evaluation import results

HEAD_FILE = "linear_head.keras"


# --------------------------------------------------------------------------- building blocks
def make_linear_head(feature_dim: int, num_classes: int, seed: int | None = None
                     ) -> keras.Sequential:
    """The one linear-head format, saved as `<output_dir>/linear_head.keras` (serving loads it).

    `seed` makes the (Glorot-uniform) initial weights reproducible, so an interrupted and resumed
    run and an uninterrupted one start from the same head.
    """
    dense = keras.layers.Dense(num_classes, name="linear_head",
                               kernel_initializer=keras.initializers.GlorotUniform(seed))
    return keras.Sequential([keras.Input((feature_dim,)), dense])


def save_head(head: keras.Model, output_dir: str) -> str:
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, HEAD_FILE)
    tmp = os.path.join(output_dir, "tmp-" + HEAD_FILE)
    head.save(tmp)
    os.replace(tmp, path)
    return path


def learning_rate_schedule(learning_rate: float, total_steps: int, schedule: str = "cosine",
                           decay_boundaries=(), decay_factor: float = 0.1):
    """cosine (to 0 over `total_steps`) | step (x decay_factor at each boundary step) | constant."""
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, max(int(total_steps), 1))
    if schedule == "step":
        boundaries = [int(b) for b in decay_boundaries]
        if not boundaries:
            return learning_rate
        values = [learning_rate * decay_factor ** i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if schedule == "constant":
        return learning_rate
    raise ValueError(f"schedule must be cosine | step | constant, got {schedule!r}.")


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


_INFERENCE_FUNCTIONS = weakref.WeakKeyDictionary()


def inference_function(encoder):
    """A cached tf.function of encoder(images, training=False) (one trace per encoder)."""
    if encoder not in _INFERENCE_FUNCTIONS:
        _INFERENCE_FUNCTIONS[encoder] = tf.function(
            lambda images: encoder(images, training=False), reduce_retracing=True)
    return _INFERENCE_FUNCTIONS[encoder]


def extract_features(encoder, batches, *, num_batches: int | None = None, progress: bool = True,
                     description: str = "features"):
    """Runs the frozen encoder (inference-mode batch norm) over (images, labels) batches.

    Returns (features float32 [N, D], labels int32 [N]).
    """
    forward = inference_function(encoder)
    bar = keras.utils.Progbar(num_batches, unit_name=description) if progress else None
    features, labels = [], []
    for i, (images, batch_labels) in enumerate(batches):
        features.append(forward(images).numpy())
        labels.append(batch_labels.numpy())
        if bar is not None:
            bar.update(i + 1)
    if not features:
        raise ValueError(f"No examples to extract {description} from: the dataset is empty.")
    return (np.concatenate(features).astype(np.float32),
            np.concatenate(labels).astype(np.int32))


def predict_top_k(head, features, k: int = 5, class_subset=None, batch_size: int = 4096):
    """Top-k class indices [N, k] of head(features).

    `class_subset` (indices into the head's classes) restricts the scores to those classes before
    ranking (zero-shot evaluation on 200-class subsets); returned indices stay in the head's space.
    """
    tops = []
    subset = None if class_subset is None else np.asarray(class_subset)
    for start in range(0, len(features), batch_size):
        logits = head(features[start:start + batch_size], training=False)
        logits = np.asarray(logits)
        if subset is not None:
            tops.append(subset[results.top_k_predictions(logits[:, subset], k)])
        else:
            tops.append(results.top_k_predictions(logits, k))
    return np.concatenate(tops) if tops else np.zeros((0, k), np.int64)


# --------------------------------------------------------------------------- resumable loop
def augmented_epochs(train_examples, batch_size: int, *, seed: int, image_size: int,
                     shuffle_buffer: int):
    """`batches_for_epoch(epoch, skip)` of linear-eval training crops, for `train_loop` (linear
    probe with augmentation, fine-tuning, the supervised baseline)."""
    def batches_for_epoch(epoch, skip):
        return augmented_batches(train_examples, batch_size, epoch=epoch, seed=seed,
                                 image_size=image_size, shuffle_buffer=shuffle_buffer,
                                 skip_batches=skip)
    return batches_for_epoch


def train_loop(step_fn, batches_for_epoch, *, num_epochs: int, steps_per_epoch: int,
               checkpoint: tf.train.Checkpoint, step: tf.Variable,
               checkpoint_dir: str | None = None, checkpoint_every_steps: int = 0, keep_checkpoints: int = 2,
               stop_after_steps: int | None = None, progress: bool = True,
               description: str = "train") -> dict:
    """Runs `step_fn(*batch) -> loss` over `batches_for_epoch(epoch, skip_batches)`, resumably.

    `checkpoint` holds every piece of state (model, optimizer, `step`); it is restored from the
    latest checkpoint in `checkpoint_dir` first, and the remaining steps of the interrupted epoch
    are replayed in the same order (the batch stream is a pure function of the epoch). Checkpoints
    are written by `tf.train.CheckpointManager`, whose index file is replaced atomically.
    `stop_after_steps` simulates an interruption (tests) by saving and returning early.
    """
    manager = None
    if checkpoint_dir:
        manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, keep_checkpoints)
        if manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    start = int(step.numpy())
    total = num_epochs * steps_per_epoch
    losses = []
    for epoch in range(start // max(steps_per_epoch, 1), num_epochs):
        skip = max(0, int(step.numpy()) - epoch * steps_per_epoch)
        bar = keras.utils.Progbar(steps_per_epoch, unit_name="step") if progress else None
        if bar is not None:
            print(f"{description} epoch {epoch + 1}/{num_epochs}", flush=True)
        epoch_losses = []
        for i, batch in enumerate(batches_for_epoch(epoch, skip)):
            loss = float(step_fn(*batch))
            epoch_losses.append(loss)
            step.assign_add(1)
            current = int(step.numpy())
            if bar is not None:
                bar.update(skip + i + 1, values=[("loss", loss)])
            if manager and checkpoint_every_steps and current % checkpoint_every_steps == 0:
                manager.save(checkpoint_number=current)
            if stop_after_steps is not None and current >= stop_after_steps:
                if manager:
                    manager.save(checkpoint_number=current)
                return {"stopped_at_step": current, "losses": losses}
        if epoch_losses:
            losses.append(float(np.mean(epoch_losses)))
    if manager and int(step.numpy()) != start:
        manager.save(checkpoint_number=int(step.numpy()))
    return {"stopped_at_step": None, "losses": losses, "total_steps": total}


def classifier_step(model, optimizer, *, training: bool = False, l2_weight_decay: float = 0.0,
                    variables=None, optimizers=None):
    """A tf.function step: images/features -> cross-entropy -> SGD update.

    `optimizers` optionally maps a list of (optimizer, variables) pairs for separate learning
    rates (fine-tuning: one for the encoder, one for the head). L2 weight decay (coupled, as in
    SGD with weight decay) is added on kernels only, never on biases or batch-norm parameters.
    """
    pairs = optimizers or [(optimizer, variables if variables is not None
                            else model.trainable_variables)]
    all_vars = [v for _, vs in pairs for v in vs]
    decayed = [v for v in all_vars if v.name.endswith("kernel")]

    @tf.function(reduce_retracing=True)
    def step(inputs, labels):
        with tf.GradientTape() as tape:
            logits = model(inputs, training=training)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
            total = loss
            if l2_weight_decay and decayed:
                total += 0.5 * l2_weight_decay * tf.add_n([tf.reduce_sum(v ** 2) for v in decayed])
        grads = tape.gradient(total, all_vars)
        offset = 0
        for opt, vs in pairs:
            opt.apply_gradients(zip(grads[offset:offset + len(vs)], vs))
            offset += len(vs)
        return loss
    return step


def sgd(schedule, momentum: float = 0.9, nesterov: bool = True):
    return keras.optimizers.SGD(learning_rate=schedule, momentum=momentum, nesterov=nesterov)


# --------------------------------------------------------------------------- the protocol
def _head_and_optimizer(feature_dim, num_classes, steps_per_epoch, *, num_epochs, learning_rate,
                        momentum, nesterov, schedule, decay_epochs, decay_factor, seed):
    lr = learning_rate_schedule(learning_rate, steps_per_epoch * num_epochs, schedule,
                                [int(e * steps_per_epoch) for e in decay_epochs], decay_factor)
    head = make_linear_head(feature_dim, num_classes, seed)
    optimizer = sgd(lr, momentum, nesterov)
    optimizer.build(head.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(head=head, optimizer=optimizer, step=step)
    return head, optimizer, step, checkpoint


def train_linear_head(encoder, train_examples, *, num_classes: int, batch_size: int = 256,
                      num_epochs: int = 100, learning_rate: float = 0.5, momentum: float = 0.9,
                      nesterov: bool = True, schedule: str = "cosine", decay_epochs=(),
                      decay_factor: float = 0.1, weight_decay: float = 0.0, augment: bool = True,
                      image_size: int = 224, resize_size: int = 256, shuffle_buffer: int = 10_000,
                      seed: int = 0, checkpoint_dir: str | None = None,
                      checkpoint_every_steps: int = 0, stop_after_steps: int | None = None,
                      train_features=None, progress: bool = True):
    """Trains a linear head on a frozen encoder; returns (head, info).

    `train_examples` is an unbatched dataset of (uint8 image [H, W, 3], label). With
    `augment=False` the centre-crop features are computed once (or taken from `train_features`,
    a (features, labels) pair; `encoder` and `train_examples` may then be None) and every epoch
    runs on them.
    """
    if not augment:
        if train_features is None:
            encoder.trainable = False
            train_features = extract_features(
                encoder, eval_batches(train_examples, batch_size, image_size, resize_size),
                progress=progress, description="train features")
        features, labels = train_features
        num_train, feature_dim = len(labels), int(features.shape[-1])
    else:
        encoder.trainable = False
        num_train, feature_dim = num_examples_of(train_examples), int(encoder.output_shape[-1])
    steps_per_epoch = math.ceil(num_train / batch_size)
    head, optimizer, step, checkpoint = _head_and_optimizer(
        feature_dim, num_classes, steps_per_epoch, num_epochs=num_epochs,
        learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, schedule=schedule,
        decay_epochs=decay_epochs, decay_factor=decay_factor, seed=seed)
    head_step = classifier_step(head, optimizer, l2_weight_decay=weight_decay)

    if augment:
        forward = inference_function(encoder)

        def step_fn(images, batch_labels):
            return head_step(forward(images), batch_labels)

        batches_for_epoch = augmented_epochs(train_examples, batch_size, seed=seed,
                                             image_size=image_size, shuffle_buffer=shuffle_buffer)
    else:
        step_fn = head_step

        def batches_for_epoch(epoch, skip):
            return feature_batches(features, labels, batch_size, epoch=epoch, seed=seed,
                                   skip_batches=skip)

    info = train_loop(step_fn, batches_for_epoch, num_epochs=num_epochs,
                      steps_per_epoch=steps_per_epoch, checkpoint=checkpoint, step=step,
                      checkpoint_dir=checkpoint_dir, checkpoint_every_steps=checkpoint_every_steps,
                      stop_after_steps=stop_after_steps, progress=progress,
                      description="linear")
    info.update(num_train_examples=num_train, steps_per_epoch=steps_per_epoch)
    return head, info


def evaluate_head(encoder, head, test_examples, *, num_classes: int, batch_size: int = 256,
                  image_size: int = 224, resize_size: int = 256, test_features=None,
                  progress: bool = True) -> dict:
    """top1 / top5 / mean per-class accuracy of encoder + head on centre-cropped test images."""
    if test_features is None:
        test_features = extract_features(
            encoder, eval_batches(test_examples, batch_size, image_size, resize_size),
            progress=progress, description="test features")
    features, labels = test_features
    return results.classification_metrics(predict_top_k(head, features, 5), labels, num_classes)


def linear_eval(encoder, train_examples, test_examples, *, num_classes: int, batch_size: int = 256,
                eval_batch_size: int | None = None, image_size: int = 224,
                resize_size: int = 256, progress: bool = True, **train_kwargs):
    """The full protocol: train the head, then evaluate it. Returns (head, metrics, info)."""
    head, info = train_linear_head(encoder, train_examples, num_classes=num_classes,
                                   batch_size=batch_size, image_size=image_size,
                                   resize_size=resize_size, progress=progress, **train_kwargs)
    if info["stopped_at_step"] is not None:
        return head, None, info
    metrics = evaluate_head(encoder, head, test_examples, num_classes=num_classes,
                            batch_size=eval_batch_size or batch_size, image_size=image_size,
                            resize_size=resize_size, progress=progress)
    return head, metrics, info


# --------------------------------------------------------------------------- data from configs
def labelled_examples(data_config, split: str, *, with_masks: bool = False, seed: int = 0):
    """(image, label) or (image, mask, label) examples of a split, in a fixed order (evaluation
    never relies on file shuffling; training shuffles per epoch under its own seed)."""
    from relicv2_tf.data import sources
    dataset = sources.make_source(data_config, split, seed=seed, shuffle_files=False)
    if with_masks:
        if not sources.has_masks(dataset):
            raise ValueError(f"data.source={data_config.source!r} split {split!r} has no masks; "
                             "use a TFRecord with masks or set data.mask_dir (ImageFolder).")
        return dataset.map(lambda ex: (ex["image"], ex["mask"], ex["label"]))
    return dataset.map(lambda ex: (ex["image"], ex["label"]))


def infer_num_classes(data_config, split: str) -> int:
    """Number of classes of a source: class folders, TFDS metadata, or 10 for digits."""
    source = data_config.source
    if source == "digits":
        return 10
    if source == "synthetic":
        return 2
    if source == "image_folder":
        root = data_config.data_dir
        if split and os.path.isdir(os.path.join(root, split)):
            root = os.path.join(root, split)
        return len([d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))])
    if source == "tfds":
        import tensorflow_datasets as tfds
        builder = tfds.builder(data_config.tfds_name, data_dir=data_config.data_dir or None)
        return int(builder.info.features["label"].num_classes)
    raise ValueError(f"cannot infer the number of classes of data.source={source!r}; set "
                     "--config.num_classes.")


def encoder_from_config(config):
    """The encoder to evaluate: `config.encoder_dir` (encoder_io format), or a random-init encoder
    of `config.model` (seeded by `config.seed`) when `config.random_init` is set."""
    from relicv2_tf.models import encoder_io
    if config.get("random_init", False):
        keras.utils.set_random_seed(config.seed)
        return encoder_io.build_encoder(encoder_io.encoder_config(config.model))
    if not config.encoder_dir:
        raise ValueError("--config.encoder_dir is empty; pass the encoder directory written by "
                         "relicv2-pretrain (<workdir>/encoder), or --config.random_init=True.")
    return encoder_io.load_encoder(config.encoder_dir)


def resolve_num_classes(num_classes: int, data_config, split: str) -> int:
    return int(num_classes) if num_classes > 0 else infer_num_classes(data_config, split)
