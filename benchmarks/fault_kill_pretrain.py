"""Fault injection, pretraining: SIGKILLed runs resume bit-identical, checkpoints stay whole.

    python benchmarks/fault_kill_pretrain.py [--kills 20] [--max_steps 160] [--seed 0]
        [--workdir DIR]

Prints one JSON object (its "pretrain" entry is the part of `fault_injection.py` of the same
name; docs/RELIABILITY.md quotes a full run). The demo config shrunk (tests/test_resume.py's
tiny_demo_config: ResNet-18/4, batch 16, 2 large views, deterministic) runs for `--max_steps`
steps with a checkpoint every 2, SIGKILLed `--kills` times at random moments and rerun after
each: a quarter of the kills (lives drawn at random) land at a uniform time of the start-up
(imports, graph building, restore), the rest at a uniform time within 8 steps of training after
the life's first step (checkpoint writes included). After each kill every checkpoint the
CheckpointManager lists is read tensor by tensor and restored into the model; the encoder
directory is loaded. The final encoder is compared with an uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.fault_common import kill_at, result_header, work_root  # noqa: E402

CHECKPOINT_EVERY = 2
STARTUP_KILL_FRACTION = 0.25  # kills anywhere in the start-up; the rest while training
TRAINING_KILL_WINDOW_STEPS = 8


def pretrain_config(max_steps: int):
    from tests.test_resume import tiny_demo_config
    config = tiny_demo_config()
    config.data.num_examples = 200  # epochs of 12 steps: the run crosses epoch boundaries
    config.training.max_steps = max_steps
    config.training.checkpoint_every_steps = CHECKPOINT_EVERY
    return config


def child_pretrain(workdir: str, step_log: str, max_steps: int):
    """One life of the pretraining run: `train.pretrain`, appending each finished step to
    `step_log` (flushed, so it survives a SIGKILL)."""
    import keras

    from relicv2_tf import train

    class StepLog(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.file = open(step_log, "a")

        def on_train_batch_end(self, batch, logs=None):
            self.file.write(f"{int(self.model.optimizer.iterations.numpy())} {time.time()}\n")
            self.file.flush()

    train.pretrain(pretrain_config(max_steps), workdir, extra_callbacks=[StepLog()], verbose=0)


def _child(args_list):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(pathlib.Path(__file__).resolve()), *args_list],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _steps(step_log):
    if not os.path.exists(step_log):
        return []
    with open(step_log) as f:
        return [(int(line.split()[0]), float(line.split()[1]))
                for line in f if len(line.split()) == 2]


class CheckpointVerifier:
    """Restores checkpoints into a model built once with the run's config."""

    def __init__(self, config):
        import tensorflow as tf

        from relicv2_tf import train
        from relicv2_tf.methods import build_method
        self.tf = tf
        self.model = build_method(config, total_steps=config.training.max_steps)
        self.model.compile(optimizer=train.make_optimizer(config, config.training.max_steps, 1))

    def listed(self, directory):
        state = self.tf.train.get_checkpoint_state(directory)
        return list(state.all_model_checkpoint_paths) if state else []

    def problems(self, directory):
        """[(checkpoint, error)] over every checkpoint the CheckpointManager lists."""
        bad = []
        for path in self.listed(directory):
            try:
                reader = self.tf.train.load_checkpoint(path)
                for name in reader.get_variable_to_shape_map():
                    reader.get_tensor(name)  # reads the bytes; TF checks each tensor's CRC32C
                checkpoint = self.tf.train.Checkpoint(model=self.model,
                                                      optimizer=self.model.optimizer)
                checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
            except Exception as error:  # noqa: BLE001 -- any failure is a corrupt checkpoint
                bad.append((path, f"{type(error).__name__}: {error}"[:300]))
        return bad


def _latest_step(paths):
    return max((int(p.rsplit("-", 1)[1]) for p in paths), default=0)


def _encoder_weights(directory):
    from relicv2_tf.models import encoder_io
    return encoder_io.load_encoder(directory).get_weights()


def run_pretrain(root, kills, max_steps, rng):
    import numpy as np

    os.makedirs(root, exist_ok=True)
    config = pretrain_config(max_steps)
    verifier = CheckpointVerifier(config)
    started = time.time()
    # The uninterrupted reference, also the timing model: start-up and seconds per step.
    reference = os.path.join(root, "reference")
    t0 = time.time()
    proc = _child(["--child_pretrain", reference, "--step_log", f"{reference}.steps",
                   "--max_steps", str(max_steps)])
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"reference run failed:\n{stderr[-3000:]}")
    steps = _steps(f"{reference}.steps")
    startup = steps[0][1] - t0
    seconds_per_step = (steps[-1][1] - steps[0][1]) / max(1, len(steps) - 1)

    workdir = os.path.join(root, "killed")
    checkpoints = os.path.join(workdir, "checkpoints")
    startup_kills = set(rng.sample(range(kills), round(STARTUP_KILL_FRACTION * kills)))
    lives, bad_checkpoints, unreadable_encoders = [], [], 0
    while len(lives) < kills:
        start_step = _latest_step(verifier.listed(checkpoints))
        log = os.path.join(root, f"life-{len(lives):02d}.steps")
        t0 = time.time()
        proc = _child(["--child_pretrain", workdir, "--step_log", log,
                       "--max_steps", str(max_steps)])
        if len(lives) in startup_kills:
            phase, deadline = "startup", t0 + rng.uniform(0.0, startup)
        else:
            phase, deadline = "training", None
            while proc.poll() is None and not _steps(log):
                time.sleep(0.02)
            deadline = time.time() + rng.uniform(
                0.0, TRAINING_KILL_WINDOW_STEPS * seconds_per_step)
        finished = kill_at(proc, deadline, poll=0.01)
        listed = verifier.listed(checkpoints)
        bad_checkpoints += verifier.problems(checkpoints)
        if os.path.exists(os.path.join(workdir, "encoder", "encoder.weights.h5")):
            try:
                _encoder_weights(os.path.join(workdir, "encoder"))
            except Exception:  # noqa: BLE001
                unreadable_encoders += 1
        life_steps = [s for s, _ in _steps(log)]
        reached = max(life_steps, default=start_step)
        lives.append({"phase": phase, "killed_after_s": round(time.time() - t0, 1),
                      "start_step": start_step, "steps_done": reached,
                      "checkpoint_after": _latest_step(listed),
                      "steps_lost": max(0, reached - _latest_step(listed)),
                      "finished_before_kill": finished})
        if finished:
            break
    # The last rerun, to the end.
    proc = _child(["--child_pretrain", workdir, "--step_log", os.path.join(root, "final.steps"),
                   "--max_steps", str(max_steps)])
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"final rerun failed:\n{stderr[-3000:]}")
    with open(os.path.join(workdir, "pretrain_summary.json")) as f:
        final_step = json.load(f)["steps"]
    expected = _encoder_weights(os.path.join(reference, "encoder"))
    weights = _encoder_weights(os.path.join(workdir, "encoder"))
    identical = len(expected) == len(weights) and all(
        np.array_equal(x, y) for x, y in zip(expected, weights))
    difference = max(float(np.abs(x - y).max()) for x, y in zip(expected, weights))
    leftovers = sorted(p.name for p in pathlib.Path(checkpoints).iterdir()
                       if "temp" in p.name or "tmp" in p.name)
    return {
        "config": {"max_steps": max_steps, "checkpoint_every_steps": CHECKPOINT_EVERY,
                   "batch_size": config.training.batch_size,
                   "num_examples": config.data.num_examples, "deterministic": True},
        "reference_startup_s": round(startup, 1),
        "reference_seconds_per_step": round(seconds_per_step, 3),
        "kills": sum(not life["finished_before_kill"] for life in lives),
        "reruns_after_kill": len(lives),
        "reruns_resumed_from_a_checkpoint": sum(
            life["start_step"] > 0 for life in lives[1:]) + int(lives[-1]["checkpoint_after"] > 0),
        "kills_during_startup": sum(life["phase"] == "startup" for life in lives),
        "final_step": final_step, "expected_final_step": max_steps,
        "bit_identical_to_uninterrupted": identical,
        "max_abs_weight_difference": difference,
        "max_steps_lost_to_one_kill": max(life["steps_lost"] for life in lives),
        "steps_lost_total": sum(life["steps_lost"] for life in lives),
        "checkpoints_verified": "every listed checkpoint after every kill",
        "corrupt_or_partial_checkpoints": len(bad_checkpoints),
        "corrupt_checkpoint_errors": bad_checkpoints[:5],
        "unreadable_encoder_dirs_after_kill": unreadable_encoders,
        "temporary_checkpoint_files_left": leftovers,
        "lives_columns": ["phase", "killed_after_s", "start_step", "steps_done",
                          "checkpoint_after", "steps_lost", "finished_before_kill"],
        "lives": [[life[k] for k in ("phase", "killed_after_s", "start_step", "steps_done",
                                     "checkpoint_after", "steps_lost", "finished_before_kill")]
                  for life in lives],
        "seconds": round(time.time() - started, 1),
    }



def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--max_steps", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--child_pretrain", help=argparse.SUPPRESS)
    parser.add_argument("--step_log", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_pretrain:
        child_pretrain(args.child_pretrain, args.step_log, args.max_steps)
        return
    result = result_header("fault_kill_pretrain", "fault_kill_pretrain.py")
    with work_root(args.workdir, "fault_kill_pretrain") as root:
        result["pretrain"] = run_pretrain(os.path.join(root, "pretrain"), args.kills,
                                          args.max_steps, random.Random(f"{args.seed}-pretrain"))
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
