"""Fault injection, export: a SIGKILLed `relicv2-export` never leaves a half-written version.

    python benchmarks/fault_kill_export.py [--kills 10] [--seed 0] [--workdir DIR]

Prints one JSON object (its "export" entry is the part of `fault_injection.py` of the same name,
there run with `--export_kills`; docs/RELIABILITY.md quotes a full run). `relicv2-export` is
SIGKILLed at a uniform moment of its write (from its temporary directory appearing, within the
uninterrupted export's write time) until `--kills` kills have landed before the rename; after
each kill every integer-named version directory (what TF Serving's version scan loads) must hold
saved_model.pb + variables/ and load.
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

MAX_EXPORT_ATTEMPTS_PER_KILL = 4


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
        finished = kill_at(proc, deadline, poll=0.002)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = parser.parse_args()
    result = result_header("fault_kill_export", "fault_kill_export.py")
    with work_root(args.workdir, "fault_kill_export") as root:
        result["export"] = run_export(os.path.join(root, "export"), args.kills,
                                      random.Random(f"{args.seed}-export"))
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
