"""The checkpoint and non-finite policy of every training loop (`train.pretrain` and
`evaluation.engine.train_loop`): where a process saves, what it checks before saving, and when a
run of non-finite steps stops it.

* Where: the chief (`distribute.WorkerRole`) saves into the run's checkpoint directory with
  `tf.train.CheckpointManager` (TF writes a checkpoint under temporary names and replaces the
  `checkpoint` index last, so a kill leaves the previous checkpoint intact). Under
  MultiWorkerMirroredStrategy every other worker saves too, since a save may read distributed
  variables, but into its own `workertemp_<task_id>` directory, deleted after each save (TF's
  multi-worker saving pattern). Every worker restores from the chief's directory (a shared file
  system or GCS).
* Stale temporaries: a kill during a save leaves TF's `<prefix>_temp` directory (never listed or
  restored) or a worker's temporary directory; each process removes its own at start.
* Finite state: the state is checked finite before every save, so checkpoint retention only ever
  drops good checkpoints and a resume never starts from NaN.
* Non-finite steps: a step whose loss or gradients were not finite applied nothing
  (`optim/guard.py`); `NonFinitePolicy` decides whether the run goes on (`skip_step`, up to
  `max_consecutive` in a row) or stops (`stop`), and words the error.
"""

from __future__ import annotations

import os
import typing

import tensorflow as tf
from absl import logging

from relicv2_tf import distribute
from relicv2_tf.optim import guard


def remove_stale_temp(directory: str, role: distribute.WorkerRole):
    """Removes what a killed save of this process left: TF's `*_temp*` entries in `directory`
    (the chief) or this worker's temporary directory (another worker)."""
    if not role.is_chief:
        role.remove_worker_dir(directory)
        return
    for stale in tf.io.gfile.glob(os.path.join(directory, "*_temp*")):
        (tf.io.gfile.rmtree if tf.io.gfile.isdir(stale) else tf.io.gfile.remove)(stale)


def checkpoint_step(path: str | None) -> int | None:
    """The step of a checkpoint prefix `.../ckpt-<step>` (None for None)."""
    return None if path is None else int(path.rsplit("-", 1)[1])


class Checkpoints:
    """The checkpoints of one training loop in `directory`, saved by the policy above.

    `latest` is the chief's latest checkpoint (read by every worker); `restore()` restores it
    into `checkpoint`; `save(step)` checks the variables of `variables()` finite and saves at
    `step` (a step saved already, or restored, is not saved again)."""

    def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, max_to_keep: int,
                 variables: typing.Callable[[], list], *, role: distribute.WorkerRole,
                 what: str = "checkpoint"):
        self.checkpoint, self.directory, self.max_to_keep = checkpoint, directory, max_to_keep
        self.variables, self.role, self.what = variables, role, what
        remove_stale_temp(directory, role)
        self.manager = (tf.train.CheckpointManager(checkpoint, directory, max_to_keep)
                        if role.is_chief else None)
        self.saved_step = checkpoint_step(self.latest)

    @property
    def latest(self) -> str | None:
        return tf.train.latest_checkpoint(self.directory)

    def restore(self) -> str | None:
        """Restores the latest checkpoint, if any; returns its path."""
        latest = self.latest
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        return latest

    def save(self, step: int) -> bool:
        """Saves at `step` unless saved already; raises guard.NonFiniteError (naming the last
        good checkpoint) when the state is not finite. Returns whether it saved."""
        if step == self.saved_step:
            return False
        assert_finite_before_save(self.variables(), f"{self.what} at step {step}", self.latest)
        if self.role.is_chief:
            self.manager.save(checkpoint_number=step)
        else:
            temporary = tf.train.CheckpointManager(
                self.checkpoint, self.role.write_dir(self.directory), max_to_keep=1)
            temporary.save(checkpoint_number=step)
            self.role.remove_worker_dir(self.directory)
        self.saved_step = step
        return True


def assert_finite_before_save(variables, what: str, last_good: str | None):
    """Raises guard.NonFiniteError naming the non-finite variables and `last_good`."""
    try:
        guard.assert_finite_state(variables, what)
    except guard.NonFiniteError as error:
        raise guard.NonFiniteError(
            f"{error} Last good checkpoint: {last_good or 'none yet'}; rerun the same command "
            "to resume from it (docs/RELIABILITY.md).") from None


class NonFinitePolicy(typing.NamedTuple):
    """What a loop does after a step that applied nothing because its loss or gradients were
    not finite: "stop" at once, or "skip_step" until `max_consecutive` such steps in a row.
    `config_section` names where the settings live in the run's config ("training")."""
    on_nonfinite: str = "stop"
    max_consecutive: int = 5
    config_section: str = ""

    def check(self):
        if self.on_nonfinite not in guard.ON_NONFINITE:
            raise ValueError(f"{self._setting('on_nonfinite')}={self.on_nonfinite!r} is not one "
                             f"of {guard.ON_NONFINITE}.")

    def after_nonfinite_step(self, step: int, total: int, streak: int,
                             last_good: str | None, what: str = "",
                             loss: float | None = None) -> guard.NonFiniteError | None:
        """Logs the step (`total` such steps so far, `streak` in a row) and returns the error
        that stops the run, or None to go on."""
        where = f"{what} step {step}" if what else f"Step {step}"
        value = "" if loss is None else f" ({loss})"
        message = (f"{where}: non-finite loss{value} or gradients; the update was not applied "
                   f"({total} such steps in all, {streak} in a row).")
        logging.warning(message)
        if self.on_nonfinite != "stop" and streak < self.max_consecutive:
            return None
        fix = (f"--config.{self._setting('on_nonfinite')}=skip_step" if self.config_section
               else "on_nonfinite='skip_step'")
        return guard.NonFiniteError(
            f"{message} Training stopped ({self._setting('on_nonfinite')}="
            f"{self.on_nonfinite!r}, {self._setting('max_consecutive_nonfinite')}="
            f"{self.max_consecutive}); nothing after the last good checkpoint was saved: "
            f"{last_good or 'none yet'}. Rerun the same command to resume from it, or skip "
            f"such steps with {fix} (docs/RELIABILITY.md).")

    def _setting(self, name: str) -> str:
        return f"{self.config_section}.{name}" if self.config_section else name
