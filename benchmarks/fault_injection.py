"""Fault injection: SIGKILLed pretraining and export, and a corpus of bad input.

    python benchmarks/fault_injection.py [--kills 20] [--export_kills 10] [--seed 0]
        [--parts pretrain,export,bad_inputs] [--max_steps 160] [--workdir DIR]

Prints one JSON object (docs/RELIABILITY.md quotes a full run):
  pretrain    the demo config shrunk (tests/test_resume.py's tiny_demo_config: ResNet-18/4, batch
              16, 2 large views, deterministic) for `--max_steps` steps with a checkpoint every 2,
              SIGKILLed `--kills` times at random moments and rerun after each: a quarter of the
              kills (lives drawn at random) land at a uniform time of the start-up (imports,
              graph building, restore), the rest at a uniform time within 8 steps of training
              after the life's first step (checkpoint writes included). After each
              kill every checkpoint the CheckpointManager lists is read tensor by tensor and
              restored into the model; the encoder directory is loaded. The final encoder is
              compared with an uninterrupted run's.
  export      `relicv2-export` SIGKILLed at a uniform moment of its write (from its temporary
              directory appearing, within the uninterrupted export's write time) until
              `--export_kills` kills have landed before the rename; after each kill every
              integer-named version directory (what TF Serving's version scan loads) must hold
              saved_model.pb + variables/ and load.
  bad_inputs  a corpus of 100 bad inputs (docs/RELIABILITY.md lists the kinds) through the
              ImageFolder source (with and without data.mask_dir; on_bad_image skip and error),
              the TFRecord source (skip and error) and `relicv2-saliency --stage=priors`: each
              input must be used (valid images: converted to RGB, pixels equal to TF's decode)
              or reported (an error naming it, or a logged skip naming it); no silent loss, no
              error from inside TensorFlow that does not name the input, every good image used.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHECKPOINT_EVERY = 2
STARTUP_KILL_FRACTION = 0.25  # kills anywhere in the start-up; the rest while training
TRAINING_KILL_WINDOW_STEPS = 8
MAX_EXPORT_ATTEMPTS_PER_KILL = 4


def _kill_at(proc, deadline: float, poll: float) -> bool:
    """SIGKILLs `proc` at `deadline` unless it ended before; returns whether it had ended."""
    while proc.poll() is None and time.time() < deadline:
        time.sleep(poll)
    finished = proc.poll() is not None
    if not finished:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return finished


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


# ------------------------------------------------------------------------------ pretraining


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
        finished = _kill_at(proc, deadline, poll=0.01)
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


# ------------------------------------------------------------------------------ export


def _version_problems(model_dir, checked):
    """[(version dir, problem)] of integer-named directories that are not complete SavedModels."""
    import tensorflow as tf

    from relicv2_tf.serving import export
    problems = []
    for version, name in sorted(export.existing_versions(model_dir).items()):
        path = os.path.join(model_dir, name)
        if path in checked:
            continue
        missing = [f for f in ("saved_model.pb", "variables/variables.index")
                   if not os.path.exists(os.path.join(path, f))]
        if missing:
            problems.append((name, f"missing {missing}"))
            continue
        try:
            tf.saved_model.load(path)
            checked.add(path)
        except Exception as error:  # noqa: BLE001
            problems.append((name, f"{type(error).__name__}: {error}"[:300]))
    return problems


def run_export(root, kills, rng):
    from relicv2_tf.models import encoder_io

    started = time.time()
    encoder_dir = os.path.join(root, "encoder")
    encoder_io.save_encoder(encoder_io.build_encoder({"depth": 18, "width_multiplier": 0.25}),
                            {"depth": 18, "width_multiplier": 0.25}, encoder_dir)
    base = os.path.join(root, "models")
    model_dir = os.path.join(base, "relicv2")
    command = ["-m", "relicv2_tf.cli.export", f"--encoder_dir={encoder_dir}",
               f"--base_path={base}", "--model_name=relicv2", "--image_size=32"]

    def launch():
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        return subprocess.Popen([sys.executable, *command], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def temporary_dirs():
        if not os.path.isdir(model_dir):
            return []
        return [n for n in os.listdir(model_dir) if n.startswith(".tmp-")]

    # Reference export: how long the write takes (temporary directory -> version directory).
    proc = launch()
    while proc.poll() is None and not temporary_dirs():
        time.sleep(0.005)
    write_start = time.time()
    while proc.poll() is None and temporary_dirs():
        time.sleep(0.005)
    write_seconds = time.time() - write_start
    if proc.wait() != 0:
        raise RuntimeError(f"reference export failed:\n{proc.stderr.read()[-3000:]}")
    checked, problems, outcomes = set(), [], []
    # Until `kills` kills have landed while the export was writing (a kill that lands after the
    # rename finds the version complete: it counts as an attempt only).
    while (sum(o["killed_while_writing"] for o in outcomes) < kills
           and len(outcomes) < MAX_EXPORT_ATTEMPTS_PER_KILL * kills):
        before = set(os.listdir(model_dir))
        proc = launch()
        while proc.poll() is None and not (set(temporary_dirs()) - before):
            time.sleep(0.001)
        delay = rng.uniform(0.0, write_seconds)
        deadline = time.time() + delay
        finished = _kill_at(proc, deadline, poll=0.002)
        new = sorted(set(os.listdir(model_dir)) - before)
        problems += _version_problems(model_dir, checked)
        outcomes.append({"killed_after_write_start_s": round(delay, 2),
                         "finished_before_kill": finished, "new_entries": new,
                         "killed_while_writing": not finished and not any(
                             name.isdigit() for name in new)})
    # An export after the kills still works and takes the next version.
    proc = launch()
    final_ok = proc.wait() == 0
    problems += _version_problems(model_dir, checked)
    from relicv2_tf.serving import export
    versions = sorted(export.existing_versions(model_dir))
    return {
        "reference_write_seconds": round(write_seconds, 2),
        "attempts": len(outcomes),
        "kills": sum(not o["finished_before_kill"] for o in outcomes),
        "killed_while_writing": sum(o["killed_while_writing"] for o in outcomes),
        "visible_versions": versions,
        "incomplete_visible_versions": len(problems),
        "incomplete_version_errors": problems[:5],
        "temporary_dirs_left_after_the_last_export": len(temporary_dirs()),
        "export_after_kills_ok": final_ok,
        "outcomes_columns": ["killed_after_write_start_s", "finished_before_kill",
                             "new_entries"],
        "outcomes": [[o["killed_after_write_start_s"], o["finished_before_kill"],
                      o["new_entries"]] for o in outcomes],
        "seconds": round(time.time() - started, 1),
    }


# ------------------------------------------------------------------------------ bad inputs


def _encode(array, fmt="PNG", mode=None, **kwargs):
    from PIL import Image
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _picture(seed, height=24, width=32):
    import numpy as np
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    return np.clip(base + rng.randint(-20, 20, [height, width, 3]), 0, 255).astype(np.uint8)


def _png16(seed, channels):
    import numpy as np
    import tensorflow as tf
    pixels = _picture(seed).astype(np.uint16) * 257
    return tf.io.encode_png(tf.constant(pixels[..., :channels])).numpy()


def _mask_png(height=24, width=32):
    import numpy as np
    mask = np.zeros([height, width], np.uint8)
    mask[4:20, 6:26] = 255
    return _encode(mask)


def _jpeg_segments_removed(data, marker):
    """The JPEG without its segments of type `marker` (e.g. 0xDB: quantisation tables)."""
    out, offset = bytearray(data[:2]), 2
    while offset < len(data) and data[offset + 1] != 0xDA:
        length = int.from_bytes(data[offset + 2:offset + 4], "big")
        if data[offset + 1] != marker:
            out += data[offset:offset + 2 + length]
        offset += 2 + length
    return bytes(out + data[offset:])


def _corrupt(data, start, count, seed):
    import numpy as np
    noise = np.random.RandomState(seed).randint(0, 256, count).astype(np.uint8).tobytes()
    return data[:start] + noise + data[start + count:]


def bad_corpus():
    """[(name, kind, expected, bytes, mask)]: expected "invalid" (reported), "valid" (used),
    "recoverable" (used or reported: damage only the full decoder finds) or "mask" (the image is
    fine, its mask is not: used without masks, reported with them); mask = PNG bytes, None
    (missing) or a wrong-size PNG."""
    import numpy as np
    good_mask = _mask_png()
    corpus = []

    def add(name, kind, expected, data, mask=good_mask):
        corpus.append((name, kind, expected, data, mask))

    for i, fraction in enumerate(np.linspace(0.05, 0.95, 10)):
        jpeg = _encode(_picture(100 + i), "JPEG")
        add(f"truncated_jpeg_{i}.jpg", "truncated JPEG", "invalid",
            jpeg[:int(len(jpeg) * fraction)])
    add("truncated_jpeg_soi_only.jpg", "truncated JPEG", "invalid", b"\xff\xd8\xff")
    jpeg = _encode(_picture(200), "JPEG")
    sof = jpeg.index(b"\xff\xc0")
    headers = [
        ("app0_length_zero", jpeg[:4] + b"\x00\x00" + jpeg[6:]),
        ("no_quantisation_table", _jpeg_segments_removed(jpeg, 0xDB)),
        ("frame_size_zero", jpeg[:sof + 5] + b"\x00\x00\x00\x00" + jpeg[sof + 9:]),
        ("garbage_after_soi", jpeg[:2] + b"\x00" * 64 + jpeg[66:]),
        ("segment_past_eof", jpeg[:4] + b"\xff\xff" + jpeg[6:]),
        ("no_scan", jpeg[:jpeg.index(b"\xff\xda")] + b"\xff\xd9"),
        ("header_zeroed", jpeg[:4] + b"\x00" * 100 + jpeg[104:]),
        ("no_frame_header", _jpeg_segments_removed(jpeg, 0xC0)),
    ]
    for name, data in headers:
        add(f"corrupt_jpeg_{name}.jpg", "corrupt JPEG header", "invalid", data)
    for i in range(2):  # 8 random bytes in the middle of the compressed data, headers intact
        jpeg = _encode(_picture(300 + i), "JPEG")
        scan = jpeg.index(b"\xff\xda") + 14
        add(f"corrupt_jpeg_scan_{i}.jpg", "corrupt JPEG data (scan)", "recoverable",
            _corrupt(jpeg, scan + (len(jpeg) - scan) // 2, 8, i))
    for i, cut in enumerate((12, 30, 100, 200, 400, 800, 1500, 2000)):
        png = _encode(_picture(400 + i))
        add(f"truncated_png_{i}.png", "truncated PNG", "invalid", png[:min(cut, len(png) - 13)])
    add("truncated_png_signature_only.png", "truncated PNG", "invalid", b"\x89PNG\r\n\x1a\n")
    png = _encode(_picture(500))
    idat = png.index(b"IDAT")
    corrupt_pngs = [
        ("idat_bytes", _corrupt(png, idat + 20, 40, 1)),
        ("idat_one_byte", png[:idat + 30] + bytes([png[idat + 30] ^ 0xFF]) + png[idat + 31:]),
        ("ihdr_bytes", _corrupt(png, 18, 4, 2)),
        ("signature", b"\x89PNX" + png[4:]),
        ("chunk_length", png[:idat - 4] + b"\x7f\xff\xff\xff" + png[idat:]),
        ("no_idat", png[:idat - 4] + png[png.index(b"IEND") - 4:]),
        ("crc_only", png[:idat + 4 + int.from_bytes(png[idat - 4:idat], "big")] + b"\0\0\0\0"
         + png[idat + 8 + int.from_bytes(png[idat - 4:idat], "big"):]),
        ("zeroed_middle", png[:len(png) // 3] + b"\x00" * 64 + png[len(png) // 3 + 64:]),
    ]
    for name, data in corrupt_pngs:
        add(f"corrupt_png_{name}.png", "corrupt PNG", "invalid", data)
    for i, suffix in enumerate((".jpg", ".jpeg", ".png", ".JPEG", ".PNG", ".gif", ".bmp", ".jpg")):
        add(f"zero_bytes_{i}{suffix}", "zero-byte file", "invalid", b"")
    others = [
        ("text.jpg", b"hello, I am not an image\n"),
        ("html.jpg", b"<html><body>404 Not Found</body></html>"),
        ("pdf.png", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n%%EOF"),
        ("zip.jpg", b"PK\x03\x04" + bytes(60)),
        ("random.png", np.random.RandomState(7).randint(0, 256, 3000).astype(np.uint8).tobytes()),
        ("json.jpeg", b'{"image": "elsewhere.jpg"}'),
        ("svg.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'),
        ("tiff.png", _encode(_picture(600), "TIFF")),
        ("mp4.jpg", b"\x00\x00\x00\x18ftypmp42" + bytes(100)),
        ("script.jpg", b"#!/bin/sh\necho hi\n"),
    ]
    for name, data in others:
        add(f"not_an_image_{name}", "not an image (image name)", "invalid", data)
    valid = [
        ("cmyk_{}.jpg", "CMYK JPEG", lambda s: _encode(_picture(s), "JPEG", "CMYK"), 6),
        ("grey_jpeg_{}.jpg", "greyscale JPEG", lambda s: _encode(_picture(s)[..., 0], "JPEG"),
         3),
        ("grey_png_{}.png", "greyscale PNG", lambda s: _encode(_picture(s)[..., 0]), 3),
        ("rgba_{}.png", "RGBA PNG", lambda s: _encode(_picture(s), mode="RGBA"), 4),
        ("grey_alpha_{}.png", "greyscale+alpha PNG", lambda s: _encode(_picture(s), mode="LA"), 2),
        ("png16_grey_{}.png", "16-bit greyscale PNG", lambda s: _png16(s, 1), 3),
        ("png16_rgb_{}.png", "16-bit RGB PNG", lambda s: _png16(s, 3), 3),
        ("palette_{}.png", "palette PNG", lambda s: _encode(_picture(s), mode="P"), 2),
        ("gif_named_{}.jpg", "GIF with a .jpg name", lambda s: _encode(_picture(s), "GIF"), 2),
        ("webp_named_{}.jpg", "WebP with a .jpg name", lambda s: _encode(_picture(s), "WEBP",
                                                                          lossless=True), 1),
        ("bmp_named_{}.png", "BMP with a .png name", lambda s: _encode(_picture(s), "BMP"), 1),
    ]
    for pattern, kind, make, count in valid:
        for i in range(count):
            add(pattern.format(i), kind, "valid", make(700 + len(corpus)))
    # Damage TF's decoder reads through (e.g. an APP0 segment of length 0) leaves an image:
    # either outcome, used or reported, is right.
    return [(name, kind, "recoverable" if expected == "invalid" and _expected_pixels(data)
             is not None else expected, data, mask)
            for name, kind, expected, data, mask in corpus + _mask_corpus()]


def _mask_corpus():
    corpus = []

    def add(name, kind, expected, data, mask):
        corpus.append((name, kind, expected, data, mask))

    for i in range(8):
        height, width = [(24, 31), (23, 32), (32, 24), (12, 16), (48, 64), (1, 1), (24, 33),
                         (25, 32)][i]
        add(f"mask_wrong_size_{i}.png", "mask of the wrong size", "mask",
            _encode(_picture(800 + i)), _mask_png(height, width))
    for i in range(6):
        add(f"mask_missing_{i}.{'png' if i % 2 else 'jpg'}", "missing mask", "mask",
            _encode(_picture(900 + i), "PNG" if i % 2 else "JPEG"), None)
    return corpus


NUM_GOOD = 20


def write_image_folder(root, corpus):
    """<root>/images/{good,bad}/<name>, masks <root>/masks/<class>/<stem>.png."""
    for i in range(NUM_GOOD):
        path = root / "images" / "good" / f"good_{i:02d}.{'jpg' if i % 2 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_encode(_picture(i), "JPEG" if i % 2 else "PNG"))
        mask = root / "masks" / "good" / f"good_{i:02d}.png"
        mask.parent.mkdir(parents=True, exist_ok=True)
        mask.write_bytes(_mask_png())
    (root / "images" / "bad").mkdir(parents=True, exist_ok=True)
    (root / "masks" / "bad").mkdir(parents=True, exist_ok=True)
    for name, _, _, data, mask in corpus:
        (root / "images" / "bad" / name).write_bytes(data)
        if mask is not None:
            (root / "masks" / "bad" / f"{os.path.splitext(name)[0]}.png").write_bytes(mask)


def write_tfrecords(root, corpus, skip_names=()):
    import tensorflow as tf

    from relicv2_tf.data import tfrecord_format
    root.mkdir(parents=True, exist_ok=True)
    records = [(f"good/good_{i:02d}", _encode(_picture(i), "JPEG" if i % 2 else "PNG"),
                _mask_png()) for i in range(NUM_GOOD)]
    records += [(f"bad/{name}", data, mask or b"") for name, _, _, data, mask in corpus
                if name not in skip_names]
    for shard in range(2):
        with tf.io.TFRecordWriter(str(root / f"data-{shard}.tfrecord")) as writer:
            for example_id, image, mask in records[shard::2]:
                writer.write(tfrecord_format.encode_example(image, example_id, 0, mask))
    return str(root / "data-*.tfrecord")


@contextlib.contextmanager
def captured_stderr():
    """Everything written to file descriptor 2 (absl/Python logging, TF's C++ log, tf.print)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        text = []
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text.append(capture.read().decode("utf-8", "replace"))


def _read_source(config):
    """(examples by id, error text or None, log text) of one epoch of make_source."""
    from relicv2_tf.data import sources
    examples, error = {}, None
    with captured_stderr() as log:
        try:
            for example in sources.make_source(config, shuffle_files=False).as_numpy_iterator():
                examples[example["id"].decode()] = example
        except Exception as exception:  # noqa: BLE001 -- classified by the caller
            error = f"{type(exception).__name__}: {exception}"
    return examples, error, log[0]


def _expected_pixels(data):
    """TF's decode of the bytes (the reference for "converted correctly"); None if it fails."""
    import tensorflow as tf
    try:
        return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except tf.errors.InvalidArgumentError:
        return None


def _classify(corpus, run):
    """Runs the source until it goes through, removing each input it reports; returns the
    per-input outcomes {name: outcome}, the good images lost and the number of runs.
    `run(excluded) -> (examples, error, log)`."""
    import numpy as np
    outcome, excluded, runs = {}, set(), 0
    while True:
        examples, error, log = run(excluded)
        runs += 1
        if error is None:
            break
        # An error lists the first inputs it found; the log lists them all.
        named = [name for name, *_ in corpus
                 if name not in excluded and (f"/{name}" in error or f"/{name}" in log)]
        if not named:
            outcome["<run>"] = f"unnamed error: {error[:300]}"
            break
        for name in named:
            outcome[name] = "error"
            excluded.add(name)
    for name, kind, expected, data, mask in corpus:
        if name in outcome:
            continue
        stem = os.path.splitext(name)[0]
        example = examples.get(f"bad/{stem}") or examples.get(f"bad/{name}")
        if example is not None:
            reference = _expected_pixels(data)
            same = (expected in ("valid", "mask") and reference is not None
                    and np.array_equal(example["image"], reference))
            outcome[name] = "used" if same or expected == "recoverable" else "used (pixels differ)"
        elif f"/{name}" in log or f"/{stem}" in log:
            outcome[name] = "skipped (logged)"
        else:
            outcome[name] = "lost silently"
    good_ids = {f"good/good_{i:02d}" for i in range(NUM_GOOD)}
    lost = sorted(good_ids - set(examples)) if "<run>" not in outcome else sorted(good_ids)
    return outcome, lost, runs


def _as_expected(expected, outcome, with_masks):
    reported = outcome in ("error", "skipped (logged)")
    if outcome in ("used (TF cannot decode it)",  # the saliency stage's PIL reads more than TF
                   "not read (the stage lists no such extension)"):
        return expected != "valid"
    if expected == "invalid" or (expected == "mask" and with_masks):
        return reported
    if expected == "recoverable":
        return reported or outcome == "used"
    return outcome == "used"


def run_bad_inputs(root):
    from relicv2_tf import config as config_lib

    started = time.time()
    root = pathlib.Path(root)
    corpus = bad_corpus()
    write_image_folder(root, corpus)
    paths = {}

    def data_config(**overrides):
        config = config_lib.get_default_config().data
        for key, value in overrides.items():
            config[key] = value
        return config

    for with_masks in (False, True):
        for mode in ("skip", "error"):
            def run(excluded, with_masks=with_masks, mode=mode):
                for name in excluded:  # what an error named: the user fixes it and reruns
                    path = root / "images" / "bad" / name
                    if path.exists():
                        path.rename(root / f"removed-{name}")
                config = data_config(source="image_folder", data_dir=str(root / "images"),
                                     on_bad_image=mode,
                                     mask_dir=str(root / "masks") if with_masks else "")
                return _read_source(config)
            outcome, lost, runs = _classify(corpus, run)
            for removed in root.glob("removed-*"):  # restore the corpus
                removed.rename(root / "images" / "bad" / removed.name[len("removed-"):])
            paths[f"image_folder/{mode}/{'masks' if with_masks else 'no_masks'}"] = (
                outcome, lost, runs, with_masks)
    for mode in ("skip", "error"):
        def run(excluded, mode=mode):
            directory = root / f"tfrecord-{mode}-{len(excluded)}"
            pattern = write_tfrecords(directory, corpus, excluded)
            return _read_source(data_config(source="tfrecord", data_dir=pattern,
                                            on_bad_image=mode))
        outcome, lost, runs = _classify(corpus, run)
        paths[f"tfrecord/{mode}/masks"] = (outcome, lost, runs, True)
    paths["saliency_priors"] = _saliency_priors(root, corpus)
    views_pass = _views_pass(data_config(source="image_folder", data_dir=str(root / "images"),
                                         on_bad_image="skip", mask_dir=str(root / "masks")))

    per_path = {}
    for path_name, (outcome, lost, runs, with_masks) in paths.items():
        unexpected, counts = {}, {}
        for name, kind, expected, _, _ in corpus:
            value = outcome.get(name, "missing")
            if not _as_expected(expected, value, with_masks):
                unexpected[name] = value
            key = value.split(" (mean")[0] if value.startswith("used") else value
            counts[key] = counts.get(key, 0) + 1
        per_path[path_name] = {
            "outcomes": counts, "handled_as_documented": len(corpus) - len(unexpected),
            "good_images_lost": len(lost), "runs": runs, "unexpected": unexpected,
            "unnamed_errors": [v for v in outcome.values() if v.startswith("unnamed error")]}
        if "<command>" in outcome:
            per_path[path_name]["command"] = outcome["<command>"]
    data_paths = [p for p in per_path if p != "saliency_priors"]
    handled = {name: all(name not in per_path[p]["unexpected"] for p in data_paths)
               for name, *_ in corpus}
    kinds = {}  # per kind: expectations, and outcomes summed over the six data source paths
    for name, kind, expected, _, _ in corpus:
        entry = kinds.setdefault(kind, {"count": 0, "expected": {}, "used": 0, "reported": 0})
        entry["count"] += 1
        entry["expected"][expected] = entry["expected"].get(expected, 0) + 1
        for path_name in data_paths:
            outcome = paths[path_name][0].get(name, "missing")
            key = ("used" if outcome.startswith("used") else
                   "reported" if outcome in ("error", "skipped (logged)") else outcome)
            entry[key] = entry.get(key, 0) + 1
    return {
        "corpus": len(corpus), "good_images": NUM_GOOD, "kinds": kinds,
        "handled_as_documented_by_every_data_source_path": sum(handled.values()),
        "not_handled": sorted(name for name, ok in handled.items() if not ok),
        "crashes_without_naming_the_input": sum(
            len(p["unnamed_errors"]) for p in per_path.values()),
        "good_images_lost": sum(p["good_images_lost"] for p in per_path.values()),
        "paths": per_path,
        "augmented_views_of_what_the_masked_skip_path_keeps": views_pass,
        "seconds": round(time.time() - started, 1),
    }


def _views_pass(config):
    """Everything the skip path keeps, through `views.pretrain_dataset` (crops, colour, masks):
    the converted images must augment like any other."""
    from relicv2_tf.data import views
    config.image_size, config.small_image_size = 32, 16
    config.mask_apply_prob, config.bg_rm_prob = 0.5, 0.5
    with captured_stderr():
        try:
            count = sum(int(batch["label"].shape[0]) for batch in views.pretrain_dataset(
                config, batch_size=5, seed=0, repeat=False))
            return {"examples": count, "error": None}
        except Exception as error:  # noqa: BLE001
            return {"examples": 0, "error": f"{type(error).__name__}: {error}"[:300]}


def _saliency_priors(root, corpus):
    """`relicv2-saliency --stage=priors` on the corpus folder (the command once, then its stage
    function in this process): the stage stops at the first input it cannot read; that input is
    removed (as a user would) and the stage rerun until it goes through."""
    import importlib

    import numpy as np
    folder = root / "saliency"
    shutil.copytree(root / "images", folder)
    demo = importlib.import_module("experiments.configs.saliency_demo").get_config()
    demo.data.data_dir, demo.data.subset_size, demo.data.image_size = str(folder), 0, 32
    demo.workdir = str(root / "saliency_work")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = subprocess.run(
        [sys.executable, "-m", "relicv2_tf.cli.saliency",
         "--config=experiments/configs/saliency_demo.py", "--stage=priors",
         f"--config.data.data_dir={folder}", "--config.data.subset_size=0",
         "--config.data.image_size=32", f"--config.workdir={demo.workdir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    # The command's one-line error (it may follow a progress bar on the same line).
    messages = re.findall(r"(?:relicv2-saliency: |\w+Error: )[^\r\n]*", command.stderr)
    first_error = messages[-1] if messages else command.stderr.strip()[-300:]
    from relicv2_tf.saliency import pipeline
    outcome, runs, names = {}, 0, {name for name, *_ in corpus}
    while True:
        runs += 1
        try:
            pipeline.run_stage(demo, "priors")
            break
        except Exception as error:  # noqa: BLE001 -- classified below
            text = f"{type(error).__name__}: {error}"
        named = [name for name in names - set(outcome) if f"/{name}" in text]
        if not named:
            outcome["<run>"] = f"unnamed error: {text[:300]}"
            break
        for name in named:
            outcome[name] = "error"
            (folder / "bad" / name).unlink()
    used = {}
    if "<run>" not in outcome:
        data = np.load(root / "saliency_work" / "priors.npz")
        used = dict(zip([str(i) for i in data["ids"]], data["images"]))
    from relicv2_tf.saliency import generate
    for name, kind, expected, data, _ in corpus:
        if name in outcome:
            continue
        if not name.lower().endswith(generate.IMAGE_EXTENSIONS):
            outcome[name] = "not read (the stage lists no such extension)"
            continue
        image = used.get(f"bad/{name}")
        if image is None:
            outcome[name] = "lost silently"
            continue
        reference = _expected_pixels(data)
        if reference is None:
            outcome[name] = "used (TF cannot decode it)"
            continue
        reference = float(reference.astype(np.float32).mean())
        outcome[name] = ("used" if abs(float(image.mean()) - reference) < 8 or
                         expected == "recoverable" else
                         f"used (mean intensity {image.mean():.0f}, TF's decode {reference:.0f})")
    outcome["<command>"] = f"exit {command.returncode}: {first_error[:300]}"
    lost = [] if "<run>" not in outcome else list(range(NUM_GOOD))
    return outcome, lost, runs, False  # the priors stage reads no masks


# ------------------------------------------------------------------------------ main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="pretrain,export,bad_inputs")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--export_kills", type=int, default=10)
    parser.add_argument("--max_steps", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--child_pretrain", help=argparse.SUPPRESS)
    parser.add_argument("--step_log", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_pretrain:
        child_pretrain(args.child_pretrain, args.step_log, args.max_steps)
        return
    import tensorflow as tf

    rngs = {part: random.Random(f"{args.seed}-{part}") for part in ("pretrain", "export")}
    root = args.workdir or tempfile.mkdtemp(prefix="fault_injection-")
    os.makedirs(root, exist_ok=True)
    result = {"benchmark": "fault_injection",
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": "python benchmarks/fault_injection.py " + " ".join(sys.argv[1:]),
              "cpu_count": os.cpu_count(), "tensorflow": tf.__version__}
    parts = args.parts.split(",")
    if "pretrain" in parts:
        result["pretrain"] = run_pretrain(os.path.join(root, "pretrain"), args.kills,
                                          args.max_steps, rngs["pretrain"])
    if "export" in parts:
        result["export"] = run_export(os.path.join(root, "export"), args.export_kills,
                                      rngs["export"])
    if "bad_inputs" in parts:
        result["bad_inputs"] = run_bad_inputs(os.path.join(root, "bad_inputs"))
    print(json.dumps(result, indent=1))
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
