"""Fault injection, bad input: every input of the corpus is used or reported by name.

    python benchmarks/fault_bad_inputs.py [--workdir DIR]

Prints one JSON object (its "bad_inputs" entry is the part of `fault_injection.py` of the same
name; docs/RELIABILITY.md quotes a full run). The corpus of `bad_input_corpus.py` (100 bad
inputs next to 20 good images) goes through the ImageFolder source (with and without
data.mask_dir; on_bad_image skip and error), the TFRecord source (skip and error) and
`relicv2-saliency --stage=priors`: each input must be used (valid images: converted to RGB,
pixels equal to TF's decode) or reported (an error naming it, or a logged skip naming it); no
silent loss, no error from inside TensorFlow that does not name the input, every good image
used. What the masked skip path keeps then goes through `views.pretrain_dataset`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import bad_input_corpus  # noqa: E402
from benchmarks.fault_common import result_header, work_root  # noqa: E402


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
            reference = bad_input_corpus.expected_pixels(data)
            same = (expected in ("valid", "mask") and reference is not None
                    and np.array_equal(example["image"], reference))
            outcome[name] = "used" if same or expected == "recoverable" else "used (pixels differ)"
        elif f"/{name}" in log or f"/{stem}" in log:
            outcome[name] = "skipped (logged)"
        else:
            outcome[name] = "lost silently"
    good_ids = {f"good/good_{i:02d}" for i in range(bad_input_corpus.NUM_GOOD)}
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
    corpus = bad_input_corpus.bad_corpus()
    bad_input_corpus.write_image_folder(root, corpus)
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
            pattern = bad_input_corpus.write_tfrecords(directory, corpus, excluded)
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
        "corpus": len(corpus), "good_images": bad_input_corpus.NUM_GOOD, "kinds": kinds,
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
        reference = bad_input_corpus.expected_pixels(data)
        if reference is None:
            outcome[name] = "used (TF cannot decode it)"
            continue
        reference = float(reference.astype(np.float32).mean())
        outcome[name] = ("used" if abs(float(image.mean()) - reference) < 8 or
                         expected == "recoverable" else
                         f"used (mean intensity {image.mean():.0f}, TF's decode {reference:.0f})")
    outcome["<command>"] = f"exit {command.returncode}: {first_error[:300]}"
    lost = [] if "<run>" not in outcome else list(range(bad_input_corpus.NUM_GOOD))
    return outcome, lost, runs, False  # the priors stage reads no masks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = parser.parse_args()
    result = result_header("fault_bad_inputs", "fault_bad_inputs.py")
    with work_root(args.workdir, "fault_bad_inputs") as root:
        result["bad_inputs"] = run_bad_inputs(os.path.join(root, "bad_inputs"))
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
