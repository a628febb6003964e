"""What a pretraining run reports: console lines, `train.log`, and TensorBoard on one step axis.

`TrainingLog` is the Keras callback `train.pretrain` runs instead of Keras' progress bar and
TensorBoard callback. Every `log_every_steps` steps it writes one plain line

    step 40/280 | epoch 3.6/24.9 | loss 2.5190 contrastive 2.4341 invariance 0.0849 |
    lr 0.0000 target_ema 0.9900 | 243 img/s | ETA 0:01:25

(loss terms: the mean over the steps since the previous line; lr and target_ema: the schedules'
values at the current step, not means) to `<workdir>/train.log` and, unless quiet, to stdout, or
redraws a one-line bar when stdout is a terminal. The same values go to TensorBoard
(`<workdir>/tensorboard/train`) at their step, with what the monitors add at the end of a
checkpoint interval (`knn_top1`, `nonfinite_steps`), a grid of the views the run trains on
(`views`, `view_grid`) and the run's hyperparameters (the hparams plugin).
"""

from __future__ import annotations

import datetime
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from relicv2_tf.data import normalize, sources

# Values that are the schedules' state at a step, read from the model; Keras' logs hold their
# running means instead.
SCHEDULE_KEYS = ("learning_rate", "target_ema")
# Per-interval values the monitors add to Keras' epoch logs (NaN on intervals without a value).
MONITOR_KEYS = ("knn_top1", "nonfinite_steps")


def _format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _number(value: float) -> str:
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def write_scalars(logdir: str, step: int, values: dict):
    """Scalars at `step` into the event files of `logdir` (e.g. the end-of-run kNN)."""
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        for name, value in values.items():
            tf.summary.scalar(name, float(value), step=step)
    writer.close()


def hparams_of(flat_config: dict) -> dict:
    """The config's fields as hparams values (numbers, bools and strings; the rest as text)."""
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value)
            for key, value in flat_config.items()}


def write_hparams(writer, flat_config: dict, trial_id: str):
    from tensorboard.plugins.hparams import api as hparams_api

    with writer.as_default():
        hparams_api.hparams(hparams_of(flat_config), trial_id=trial_id)


def view_grid(originals, masks, large, small=None):
    """One uint8 image [1, H', W', 3]: a row per example with its image, its foreground mask
    (grey when the source has none) and its large and small views (in [0, 1], small views
    upsampled to the large size), so augmentation and masking can be checked by eye."""
    size = large.shape[2]
    columns = [tf.image.resize(originals, [size, size]), tf.image.resize(masks, [size, size])]
    columns += [large[:, v] for v in range(large.shape[1])]
    if small is not None:
        columns += [tf.image.resize(small[:, v], [size, size], "nearest")
                    for v in range(small.shape[1])]
    padded = [tf.pad(tf.clip_by_value(c, 0.0, 1.0), [[0, 0], [1, 1], [1, 1], [0, 0]],
                     constant_values=1.0) for c in columns]
    rows = tf.concat(padded, axis=2)  # [n, size + 2, columns * (size + 2), 3]
    grid = tf.reshape(rows, [1, -1, rows.shape[2], 3])
    return tf.cast(tf.round(grid * 255.0), tf.uint8)


def captured_views(config, model, per_replica_batch: int, input_contexts):
    """step -> (images, masks, large views, small views) in [0, 1] of the examples whose views
    `model.capture_views` kept at that step (the first of the first replica's batch), for
    `train_logging.view_grid`. Which examples those are is a pure function of (seed, position)
    (`data/views.py`), so the source's stream from the step's position gives their images and
    masks; `input_contexts[0]` is this worker's input pipeline, set when tf.distribute builds
    the dataset."""
    size = config.data.image_size

    def image_and_mask(example):
        image = tf.image.resize(normalize.to_unit_float(example["image"]), [size, size])
        if "mask" not in example:
            return image, tf.fill([size, size, 3], 0.5)
        mask = tf.cast(example["mask"], tf.float32)
        mask = tf.image.resize(mask / tf.maximum(tf.reduce_max(mask), 1.0), [size, size])
        return image, tf.tile(mask, [1, 1, 3])

    def views_at(step):
        captured = {k: normalize.denormalize_images(v.read_value())
                    for k, v in model.captured_views.items()}
        n = int(captured["large"].shape[0])
        input_context = input_contexts[0] if input_contexts else None
        replicas_per_pipeline = (input_context.num_replicas_in_sync
                                 // input_context.num_input_pipelines) if input_context else 1
        position = (step - 1) * per_replica_batch * replicas_per_pipeline  # step `step`'s batch
        examples = sources.example_stream(config.data, seed=config.seed,
                                          input_context=input_context, start_position=position)
        images, masks = next(iter(examples.map(image_and_mask).batch(n)))
        return images, masks, captured["large"], captured.get("small")
    return views_at


class TrainingLog(keras.callbacks.Callback):
    """Console / train.log lines and TensorBoard summaries of a pretraining run (module doc).

    Args:
      workdir: the run's directory (train.log, tensorboard/train).
      total_steps: the run's length; steps_per_epoch: examples / global batch (for the epoch).
      global_batch_size: images per step (images/s).
      log_every_steps: steps between lines and scalar summaries.
      console: "log" (plain lines on stdout), "bar" (a redrawn line; stdout is a terminal), or
        None (train.log and TensorBoard only).
      views_fn: step -> (originals, masks, large, small) in [0, 1] for the image summary, or None.
      image_every_steps: steps between image summaries (also at the first step); 0 = none.
      hparams: {dotted key: value} of the run's config, written once (hparams plugin).
    """

    def __init__(self, workdir, *, total_steps, steps_per_epoch, global_batch_size,
                 log_every_steps, console="log", views_fn=None, image_every_steps=0,
                 hparams=None):
        super().__init__()
        self.workdir = workdir
        self.total_steps = int(total_steps)
        self.steps_per_epoch = float(steps_per_epoch)
        self.global_batch_size = int(global_batch_size)
        self.log_every_steps = max(1, int(log_every_steps))
        self.console = console
        self.views_fn = views_fn
        self.image_every_steps = int(image_every_steps)
        self.hparams = hparams
        self.image_seconds = 0.0  # time spent on image summaries (measured, reported at the end)
        self.writer = self.log_file = None

    # ------------------------------------------------------------------ Keras hooks
    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(os.path.join(self.workdir, "tensorboard",
                                                                 "train"))
        self.log_file = open(os.path.join(self.workdir, "train.log"), "a", buffering=1)
        self.start_step = self.last_step = self.previous_step = self._step()
        self.start_time = self.last_time = time.time()
        self.interval_start = self.start_step
        self.previous = {}
        if self.hparams is not None:
            write_hparams(self.writer, self.hparams, trial_id=os.path.basename(
                os.path.abspath(self.workdir)))
        self._emit(f"Training steps {self.start_step + 1}-{self.total_steps} of "
                   f"{self.total_steps} ({self.total_steps / self.steps_per_epoch:.1f} epochs "
                   f"of {self.steps_per_epoch:.1f} steps, {self.global_batch_size} images per "
                   "step).")

    def on_epoch_begin(self, epoch, logs=None):
        # Keras resets the metric means at each epoch (one checkpoint interval).
        self.interval_start = self._step()
        self.previous = {}

    def on_train_batch_end(self, batch, logs=None):
        # One call per `training.steps_per_execution` steps: act on every multiple crossed.
        step, previous = self._step(), self.previous_step
        self.previous_step = step
        if self.views_fn is not None and self.image_every_steps:
            every = self.image_every_steps
            if previous == 0:
                self._write_views(1)
            elif step // every > previous // every:
                self._write_views(step // every * every)  # the step the model captured
        if step // self.log_every_steps > previous // self.log_every_steps or (
                step >= self.total_steps):
            self._log_interval(step, logs or {})
        elif self.console == "bar":
            self._draw_bar(step, logs or {})

    def on_epoch_end(self, epoch, logs=None):
        step = self._step()
        values = {k: float(logs[k]) for k in MONITOR_KEYS
                  if logs and k in logs and not math.isnan(float(logs[k]))}
        if "knn_top1" in values:  # the monitor ran at this step
            self._emit(f"step {step}/{self.total_steps} | kNN top-1 {values['knn_top1']:.4f}")
        with self.writer.as_default():
            for name, value in values.items():
                tf.summary.scalar(name, value, step=step)

    def on_train_end(self, logs=None):
        if self.image_seconds:
            self._emit(f"Image summaries took {self.image_seconds:.2f} s in all.", console=False)
        self.writer.flush()
        self.log_file.close()

    # ------------------------------------------------------------------ pieces
    def _step(self) -> int:
        from relicv2_tf import distribute

        return distribute.read_int(self.model.optimizer.iterations)

    def _interval_means(self, step, logs) -> dict:
        """Mean of each metric over the steps since the previous line, from Keras' running means
        since the start of the checkpoint interval."""
        done = step - self.interval_start
        means = {}
        for key, value in logs.items():
            if key in SCHEDULE_KEYS or key in MONITOR_KEYS:
                continue
            value = float(value)
            earlier_mean, earlier_done = self.previous.get(key, (0.0, 0))
            means[key] = ((value * done - earlier_mean * earlier_done) / (done - earlier_done)
                          if done > earlier_done else value)
            self.previous[key] = (value, done)
        return means

    def _schedules(self) -> dict:
        """The learning rate and EMA rate at the current step (not Keras' running means)."""
        values = {"learning_rate": float(np.asarray(self.model.optimizer.learning_rate))}
        if getattr(self.model, "target_encoder", None) is not None:
            values["target_ema"] = float(np.asarray(self.model.target_ema()))
        return values

    def _speed_and_eta(self, step):
        now = time.time()
        rate = (step - self.last_step) * self.global_batch_size / max(now - self.last_time, 1e-9)
        per_step = (now - self.start_time) / max(step - self.start_step, 1)
        self.last_step, self.last_time = step, now
        return rate, per_step * (self.total_steps - step)

    def _log_interval(self, step, logs):
        means = self._interval_means(step, logs)
        schedules = self._schedules()
        images_per_second, eta = self._speed_and_eta(step)
        terms = " ".join(f"{k} {_number(v)}" for k, v in means.items())
        rates = " ".join(f"{'lr' if k == 'learning_rate' else k} {_number(v)}"
                         for k, v in schedules.items())
        self._emit(f"step {step}/{self.total_steps} | epoch {step / self.steps_per_epoch:.1f}/"
                   f"{self.total_steps / self.steps_per_epoch:.1f} | {terms} | {rates} | "
                   f"{images_per_second:.0f} img/s | ETA {_format_duration(eta)}")
        with self.writer.as_default():
            for name, value in {**means, **schedules,
                                "images_per_second": images_per_second,
                                "epoch": step / self.steps_per_epoch}.items():
                tf.summary.scalar(name, value, step=step)

    def _draw_bar(self, step, logs):
        width = 30
        done = int(width * step / max(self.total_steps, 1))
        per_step = (time.time() - self.start_time) / max(step - self.start_step, 1)
        loss = f" loss {float(logs['loss']):.4f}" if "loss" in logs else ""
        sys.stdout.write(f"\r[{'=' * done}{'.' * (width - done)}] {step}/{self.total_steps}"
                         f"{loss} ETA {_format_duration(per_step * (self.total_steps - step))} ")
        sys.stdout.flush()

    def _emit(self, line: str, console: bool = True):
        self.log_file.write(line + "\n")
        if console and self.console == "bar":
            sys.stdout.write("\r\033[K" + line + "\n")
            sys.stdout.flush()
        elif console and self.console == "log":
            print(line, flush=True)

    def _write_views(self, step):
        started = time.time()
        originals, masks, large, small = self.views_fn(step)
        with self.writer.as_default():
            tf.summary.image("views", view_grid(originals, masks, large, small), step=step,
                             description="Per row: an image, its foreground mask, its large "
                             "views, its small views (augmented and masked as trained on).")
        self.image_seconds += time.time() - started
