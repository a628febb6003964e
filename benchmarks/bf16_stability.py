"""mixed_bfloat16 training stability: N fresh processes each run the bfloat16 training of
tests/test_performance.py (tiny ReLICv2, seed 0, 4 steps) and report whether any loss, weight or
LARS momentum turned non-finite, and how far the losses of identical runs spread.

  python benchmarks/bf16_stability.py --runs 20
  python benchmarks/bf16_stability.py --runs 20 --onednn on    # force oneDNN on bfloat16 CPUs

`--onednn auto` (default) is what the tests and `relicv2-pretrain` do: TF_ENABLE_ONEDNN_OPTS=0 on
CPUs with AMX-BF16 or AVX512-BF16 (relicv2_tf.distribute.avoid_onednn_bfloat16), oneDNN
elsewhere. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONE_RUN = """
import json, sys
sys.path.insert(0, {repo!r})
import numpy as np
from tests.test_performance import _train
model, logs = _train(policy="mixed_bfloat16")
values = [np.asarray(v) for v in model.weights] + [np.asarray(m) for m in model.optimizer._momenta]
print(json.dumps({{"loss": [float(x) for x in logs["loss"]],
                  "finite": bool(all(np.isfinite(v).all() for v in values)
                                 and np.isfinite(logs["loss"]).all())}}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--onednn", choices=("auto", "on", "off"), default="auto")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from relicv2_tf import distribute

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if args.onednn == "auto":
        distribute.avoid_onednn_bfloat16(env)
    else:
        env["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    flags = distribute.cpu_flags()
    results, started = [], time.time()
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-c", ONE_RUN.format(repo=str(REPO))], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=900)
        if out.returncode:
            results.append({"error": out.stderr.strip().splitlines()[-1:]})
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finite = [r for r in results if r.get("finite")]
    losses = [r["loss"][0] for r in finite]
    print(json.dumps({
        "cpu": {flag: flag in flags for flag in ("avx512_bf16", "amx_bf16", "amx_tile")},
        "TF_ENABLE_ONEDNN_OPTS": env.get("TF_ENABLE_ONEDNN_OPTS", "(unset: oneDNN on)"),
        "runs": len(results), "finite_runs": len(finite),
        "failed_runs": sum("error" in r for r in results),
        "first_loss_min": min(losses) if losses else None,
        "first_loss_max": max(losses) if losses else None,
        "identical_losses": len({tuple(r["loss"]) for r in finite}) <= 1,
        "seconds": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()
