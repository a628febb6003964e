"""The pretraining driver: config -> strategy, data, method, optimizer -> checkpoints + encoder.

Resumable by construction: Keras' "epochs" are checkpoint intervals of
`training.checkpoint_every_steps` steps; a checkpoint (model, target, optimizer state and step)
is written at the end of each interval with tf.train.CheckpointManager (TF writes checkpoint
files under temporary names and atomically replaces the `checkpoint` index, so a crash leaves the
previous checkpoint intact). A rerun with the same workdir restores the latest checkpoint and
continues from its step, and its input pipeline from the same example position (the data order
and every augmentation are pure functions of the seed and the position, `data/views.py`), so a
resumed run sees exactly the batches an uninterrupted run would have. Where checkpoints go, the
finite check before each save and the non-finite stop / skip decision are `checkpointing.py`'s,
shared with the evaluation loop; under several workers only the chief writes the workdir.
"""

from __future__ import annotations

import json
import os
import time

import keras
import tensorflow as tf
from absl import logging

from relicv2_tf import atomic, checkpointing, config_tools, distribute, train_logging
from relicv2_tf import config as config_lib
from relicv2_tf.data import sources, views
from relicv2_tf.evaluation import knn_report
from relicv2_tf.methods import build_method
from relicv2_tf.models import encoder_io
from relicv2_tf.optim import lars, schedules


def total_steps(config, num_examples: int) -> int:
    if config.training.max_steps > 0:
        return int(config.training.max_steps)
    return max(1, config.training.num_epochs * num_examples // config.training.batch_size)


def synthetic_views_dataset(data_config, batch_size: int, seed: int = 0) -> tf.data.Dataset:
    """One batch of random views with the shapes of `views.pretrain_dataset`, repeated forever
    (`training.synthetic_data`, benchmarks): times the train step without the input pipeline."""
    def views_of(num_views, size, salt):
        return tf.random.stateless_normal([batch_size, num_views, size, size, 3], [seed, salt])

    element = {"large": views_of(data_config.num_large_views, data_config.image_size, 0),
               "label": tf.zeros([batch_size], tf.int32)}
    if data_config.num_small_views > 0:
        element["small"] = views_of(data_config.num_small_views, data_config.small_image_size, 1)
    return tf.data.Dataset.from_tensors(element).repeat()


def probe_classes(config) -> int:
    """Classes of the online probe (`evaluation.online_probe`), 0 when off or without labels."""
    if not config.evaluation.get("online_probe", False) or config.training.synthetic_data:
        return 0
    source = sources.SOURCES[config.data.source]
    num_classes = source.num_classes(config.data, config.data.split) if source.num_classes else None
    if not num_classes:
        logging.warning("evaluation.online_probe: data.source=%r has no class count; no probe.",
                        config.data.source)
        return 0
    return int(num_classes)


def make_optimizer(config, steps: int, steps_per_epoch: int):
    o = config.optimizer
    base_lr = o.base_learning_rate * config.training.batch_size / 256
    warmup_steps = schedules.epochs_to_steps(o.warmup_epochs, steps_per_epoch)
    schedule = schedules.WarmupCosine(base_lr, steps, warmup_steps)
    optimizer = lars.LARS(
        schedule, momentum=o.momentum, weight_decay=o.weight_decay, eeta=o.eeta,
        nesterov=o.nesterov, exclude_from_weight_decay=o.exclude_from_weight_decay,
        exclude_from_layer_adaptation=o.exclude_from_layer_adaptation)
    if config.training.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


class CheckpointEveryInterval(keras.callbacks.Callback):
    """Saves model + optimizer at the end of each interval and the final encoder directory,
    and acts on non-finite steps (`training.on_nonfinite`), by the policy of `checkpointing`.

    The train step applies no update on a step whose loss or gradients are not finite and
    counts it (`methods.base`). After each batch this callback logs a new one and, under "stop"
    (or "skip_step" after `max_consecutive_nonfinite` in a row), stops training without saving
    (`failure` holds the error that `pretrain` raises). Before any save the model and optimizer
    state are checked to be finite, so checkpoint retention only ever drops good checkpoints.
    Every worker saves; only the chief keeps what it saved (`checkpointing.Checkpoints`).
    """

    def __init__(self, checkpoints, encoder_dir, model_config, steps,
                 policy: checkpointing.NonFinitePolicy):
        super().__init__()
        self.checkpoints = checkpoints
        self.encoder_dir = encoder_dir
        self.model_config = model_config
        self.steps = steps
        self.policy = policy
        self.failure = None
        self.nonfinite_seen = None

    def on_train_begin(self, logs=None):
        self.nonfinite_seen = distribute.read_int(self.model.nonfinite_steps)

    def on_train_batch_end(self, batch, logs=None):
        step = distribute.read_int(self.model.optimizer.iterations)
        total = distribute.read_int(self.model.nonfinite_steps)
        if total > self.nonfinite_seen:
            self.nonfinite_seen = total
            self.failure = self.policy.after_nonfinite_step(
                step, total, distribute.read_int(self.model.nonfinite_streak),
                self.checkpoints.latest)
            if self.failure is not None:
                self.model.stop_training = True
                return
        if step >= self.steps:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # to the console and TensorBoard (callbacks after this one)
            logs["nonfinite_steps"] = float(self.nonfinite_seen or 0)
        if self.failure is None:
            self.save()

    def save(self):
        step = distribute.read_int(self.model.optimizer.iterations)
        if self.checkpoints.save(step):
            role = self.checkpoints.role
            encoder_io.save_encoder(self.model.online_encoder, self.model_config,
                                    role.write_dir(self.encoder_dir))
            role.remove_worker_dir(self.encoder_dir)


def input_options_for(strategy, pipeline_per_replica: bool):
    """The tf.distribute.InputOptions of the training data: None (one input pipeline per
    worker), or one pipeline per replica (MirroredStrategy only: replica r then reads what
    worker r of a MultiWorkerMirroredStrategy run with one replica per worker reads)."""
    if not pipeline_per_replica:
        return None
    if not isinstance(strategy, tf.distribute.MirroredStrategy):
        raise ValueError("--input_pipeline_per_replica needs --strategy=mirrored, not "
                         f"{type(strategy).__name__}; drop the flag.")
    return tf.distribute.InputOptions(
        experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA)


def check_resume(config, workdir: str, allow_config_changes=()):
    """The resume guard: when `workdir` holds a checkpoint, its config.json must match `config`
    but for the keys `config_tools.guarded_changes` allows; raises ValueError naming the keys."""
    path = os.path.join(workdir, "config.json")
    if not (tf.io.gfile.exists(path)
            and tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))):
        return
    with tf.io.gfile.GFile(path) as f:
        saved = json.load(f)
    config_tools.check_resume(saved, config, workdir, allow_config_changes)


def pretrain(config, workdir: str, strategy=None, extra_callbacks=(), verbose: int = 1,
             progress_bar: bool = False, allow_config_changes=(),
             input_pipeline_per_replica: bool = False):
    """Pretrains `config.method` and returns (model, {"steps", "encoder_dir", "history",
    "seconds"}).

    verbose: 0 = nothing on stdout (train.log and TensorBoard still written), 1 = one line per
    `training.log_every_steps` (`train_logging.TrainingLog`), or a redrawn bar with
    `progress_bar` (stdout a terminal). `allow_config_changes`: keys that may differ from the
    workdir's saved config on resume (`config_tools.RESUME_ALLOWED_WITH_FLAG`).

    Under MultiWorkerMirroredStrategy (or a TPU pod) every worker runs this with the same
    `workdir` (a shared file system or GCS): all read it, only the chief writes it (config,
    checkpoints, encoder, train.log, TensorBoard, the summary; `distribute.WorkerRole`).
    `input_pipeline_per_replica` (MirroredStrategy only) gives each replica its own input
    pipeline, so one host reads exactly what as many single-replica workers would. A worker
    lost mid-run stops the others with `distribute.WorkerLostError`."""
    config_lib.validate(config)
    strategy = strategy or tf.distribute.get_strategy()
    role = distribute.worker_role(strategy)
    with distribute.stop_on_lost_worker(role):
        return _pretrain(config, workdir, strategy, role, extra_callbacks, verbose, progress_bar,
                         allow_config_changes, input_options_for(strategy,
                                                                 input_pipeline_per_replica))


def _pretrain(config, workdir, strategy, role, extra_callbacks, verbose, progress_bar,
              allow_config_changes, input_options):
    per_replica = distribute.per_replica_batch_size(config.training.batch_size, strategy)
    if config.training.mixed_precision:
        keras.mixed_precision.set_global_policy(config.training.mixed_precision)
    # Initial weights from `seed` (Python, NumPy and TF generators); the data pipeline has its
    # own stateless seeds. Op determinism is process-wide and cannot be turned off again.
    keras.utils.set_random_seed(config.seed)
    if config.training.deterministic:
        tf.config.experimental.enable_op_determinism()
    if tf.io.gfile.exists(workdir) and not tf.io.gfile.isdir(workdir):
        raise ValueError(f"--workdir={workdir} is a file; give a directory (new or a run's).")
    check_resume(config, workdir, allow_config_changes)
    os.makedirs(workdir, exist_ok=True)
    if role.is_chief:  # atomically: the other workers' resume guard may be reading it
        atomic.write_text(os.path.join(workdir, "config.json"),
                          config.to_json_best_effort(indent=2))

    num_examples = sources.num_examples(config.data)
    steps_per_epoch = max(1, num_examples // config.training.batch_size)
    steps = total_steps(config, num_examples)
    interval = max(1, min(config.training.checkpoint_every_steps, steps))

    with strategy.scope():
        model = build_method(config, total_steps=steps,
                             steps_per_epoch=num_examples / config.training.batch_size)
        model.compile(optimizer=make_optimizer(config, steps, steps_per_epoch),
                      steps_per_execution=config.training.steps_per_execution,
                      jit_compile=config.training.jit_compile)
        num_classes = probe_classes(config)
        if num_classes:
            model.attach_online_probe(num_classes, config.evaluation.online_probe_learning_rate)
        image_every = config.training.image_summary_every_steps
        if image_every and not config.training.synthetic_data:
            d = config.data
            model.capture_views(
                min(8, per_replica), image_every,
                [d.num_large_views, d.image_size, d.image_size, 3],
                [d.num_small_views, d.small_image_size, d.small_image_size, 3]
                if d.num_small_views else None)
        checkpoints = checkpointing.Checkpoints(
            tf.train.Checkpoint(model=model, optimizer=model.optimizer),
            os.path.join(workdir, "checkpoints"), config.training.keep_checkpoints,
            lambda: model.weights + list(model.optimizer.variables), role=role)
        restored = checkpoints.restore()
    start_step = distribute.read_int(model.optimizer.iterations)
    if start_step:
        logging.info("Resumed from %s at step %d / %d.", restored, start_step, steps)
        if verbose:
            print(f"Resumed from {restored} at step {start_step}/{steps}.")

    input_contexts = []  # this worker's, as tf.distribute gives it (for the image summaries)

    def dataset_fn(input_context):
        input_contexts.append(input_context)
        if config.training.synthetic_data:
            return synthetic_views_dataset(config.data, per_replica,
                                           seed=config.seed + input_context.input_pipeline_id)
        # A resumed run continues each pipeline's example stream where the checkpoint's step
        # left it: a step takes num_replicas_in_sync / num_input_pipelines per-replica batches
        # from every pipeline (global batch / pipelines examples), so under
        # training.deterministic it ends bit-identical to an uninterrupted run.
        replicas_per_pipeline = (input_context.num_replicas_in_sync
                                 // input_context.num_input_pipelines)
        dataset = views.pretrain_dataset(
            config.data, batch_size=per_replica, seed=config.seed, input_context=input_context,
            start_position=start_step * per_replica * replicas_per_pipeline)
        # The train step reads no example ids; Keras' fit under a distribution strategy averages
        # one batch over replicas to build the model, which fails on strings.
        return dataset.map(lambda batch: {k: v for k, v in batch.items() if k != "id"})

    encoder_dir = os.path.join(workdir, "encoder")
    saver = CheckpointEveryInterval(checkpoints, encoder_dir, config.model, steps,
                                    checkpointing.NonFinitePolicy(
                                        config.training.on_nonfinite,
                                        config.training.max_consecutive_nonfinite, "training"))
    started = time.time()
    history = {}
    if start_step < steps:
        dataset = strategy.distribute_datasets_from_function(dataset_fn, input_options)
        # Monitors first, so that what they add to the logs reaches TensorBoard and the console.
        monitors = list(extra_callbacks)
        if config.evaluation.knn_every_steps:
            monitors.append(knn_report.monitor(
                config, every_n_epochs=config.evaluation.knn_every_steps // interval))
        callbacks = [*monitors, saver]
        if role.is_chief:  # train.log, TensorBoard and the console lines
            views_fn = (train_logging.captured_views(config, model, per_replica, input_contexts)
                        if hasattr(model, "captured_views") else None)
            callbacks.append(train_logging.TrainingLog(
                workdir, total_steps=steps,
                steps_per_epoch=num_examples / config.training.batch_size,
                global_batch_size=config.training.batch_size,
                log_every_steps=config.training.log_every_steps,
                console=("bar" if progress_bar else "log") if verbose else None,
                views_fn=views_fn, image_every_steps=config.training.image_summary_every_steps,
                hparams=config_tools.flatten(config)))
        elif verbose:
            print(f"Worker {role.task_id} of {role.num_workers}: training steps "
                  f"{start_step + 1}-{steps}; the chief writes the logs and checkpoints of "
                  f"{workdir}.", flush=True)
        result = model.fit(dataset, epochs=-(-steps // interval),
                           initial_epoch=start_step // interval, steps_per_epoch=interval,
                           callbacks=callbacks, verbose=0, shuffle=False)
        history = result.history
        if saver.failure is not None:
            raise saver.failure
    saver.set_model(model)
    saver.save()
    summary_path = os.path.join(workdir, "pretrain_summary.json")
    trained_steps = ([min(steps, (e + 1) * interval)  # the step each Keras epoch ended at
                      for e in range(start_step // interval, -(-steps // interval))]
                     if start_step < steps else [])
    history_steps, history = _with_earlier_history(
        summary_path, start_step, trained_steps,
        {k: [float(v) for v in vals] for k, vals in history.items()})
    summary = {"steps": distribute.read_int(model.optimizer.iterations), "encoder_dir": encoder_dir,
               "history": history, "history_steps": history_steps,
               "seconds": time.time() - started}
    if role.is_chief:
        atomic.write_json(summary_path, summary, indent=2)
    return model, summary


def _with_earlier_history(summary_path, start_step, steps, history):
    """This run's per-interval history (`steps[i]` ends interval i) after the entries of an
    earlier summary in the workdir up to `start_step`: a rerun after completion keeps the
    history, and a run continued to more steps extends it. A run resumed after a kill has no
    earlier summary: its history starts at the resumed step, as `history_steps` says."""
    try:
        with open(summary_path) as f:
            earlier = json.load(f)
    except (OSError, ValueError):
        return steps, history
    keep = sum(step <= start_step for step in earlier.get("history_steps", []))
    if not keep:
        return steps, history
    names = set(earlier["history"]) & set(history) if steps else set(earlier["history"])
    return (earlier["history_steps"][:keep] + steps,
            {k: earlier["history"][k][:keep] + history.get(k, []) for k in sorted(names)})
