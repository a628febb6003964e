"""Fault injection, all parts: SIGKILLed pretraining and export, and a corpus of bad input.

    python benchmarks/fault_injection.py [--kills 20] [--export_kills 10] [--seed 0]
        [--parts pretrain,export,bad_inputs] [--max_steps 160] [--workdir DIR]

Prints one JSON object with one entry per part (docs/RELIABILITY.md quotes a full run); each
part is also a benchmark of its own, with the same entry and the same random draws for a seed:
  pretrain    benchmarks/fault_kill_pretrain.py (--kills, --max_steps)
  export      benchmarks/fault_kill_export.py (--export_kills here, --kills there)
  bad_inputs  benchmarks/fault_bad_inputs.py (the corpus: benchmarks/bad_input_corpus.py)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import fault_bad_inputs, fault_kill_export, fault_kill_pretrain  # noqa: E402
from benchmarks.fault_common import result_header, work_root  # noqa: E402

PARTS = ("pretrain", "export", "bad_inputs")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--export_kills", type=int, default=10)
    parser.add_argument("--max_steps", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = parser.parse_args()
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {','.join(PARTS)}")
    result = result_header("fault_injection", "fault_injection.py")
    with work_root(args.workdir, "fault_injection") as root:
        if "pretrain" in parts:
            result["pretrain"] = fault_kill_pretrain.run_pretrain(
                os.path.join(root, "pretrain"), args.kills, args.max_steps,
                random.Random(f"{args.seed}-pretrain"))
        if "export" in parts:
            result["export"] = fault_kill_export.run_export(
                os.path.join(root, "export"), args.export_kills,
                random.Random(f"{args.seed}-export"))
        if "bad_inputs" in parts:
            result["bad_inputs"] = fault_bad_inputs.run_bad_inputs(
                os.path.join(root, "bad_inputs"))
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
