"""What the fault-injection benchmarks share: the repository path, a SIGKILL at a deadline, the
header of their JSON and their working directory.

The benchmarks (each prints one JSON object; `fault_injection.py` runs them all):
  fault_kill_pretrain.py  SIGKILLed pretraining runs, resumed; checkpoints checked after each kill
  fault_kill_export.py    SIGKILLed `relicv2-export`; every visible version must load
  fault_bad_inputs.py     the corpus of `bad_input_corpus.py` through every data source path
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def kill_at(proc, deadline: float, poll: float) -> bool:
    """SIGKILLs `proc` at `deadline` unless it ended before; returns whether it had ended."""
    while proc.poll() is None and time.time() < deadline:
        time.sleep(poll)
    finished = proc.poll() is not None
    if not finished:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return finished


def result_header(benchmark: str, script: str) -> dict:
    """The first fields of a benchmark's JSON: what ran, when, where."""
    import tensorflow as tf

    return {"benchmark": benchmark,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:]),
            "cpu_count": os.cpu_count(), "tensorflow": tf.__version__}


@contextlib.contextmanager
def work_root(workdir: str | None, prefix: str):
    """`workdir` (created, kept) or a temporary directory, removed after a run that succeeded
    (kept for inspection after an error)."""
    root = workdir or tempfile.mkdtemp(prefix=f"{prefix}-")
    os.makedirs(root, exist_ok=True)
    yield root
    if not workdir:
        shutil.rmtree(root, ignore_errors=True)
