"""The tf.distribute flags shared by every entry point that trains: `--strategy`, `--tpu`,
`--num_cpu_replicas` and `--collective_timeout_seconds`.

Each such CLI imports this module (which defines the flags) and calls `strategy_from_flags()`
before any other TensorFlow call, since splitting the CPU into logical devices must happen
before TensorFlow initialises its devices.
"""

from __future__ import annotations

from absl import flags, logging

from relicv2_tf.distribute import COLLECTIVE_TIMEOUT_SECONDS, STRATEGIES

_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", list(STRATEGIES),
    "tf.distribute strategy: default (one device), mirrored (all local GPUs, or "
    "--num_cpu_replicas logical CPUs), multi_worker (one process per machine, the cluster in "
    "TF_CONFIG; docs/SCALING.md), tpu.")
_TPU = flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
_CPU_REPLICAS = flags.DEFINE_integer(
    "num_cpu_replicas", 0, "Split the CPU into N logical devices (with --strategy=mirrored).")
_COLLECTIVE_TIMEOUT = flags.DEFINE_float(
    "collective_timeout_seconds", COLLECTIVE_TIMEOUT_SECONDS,
    "--strategy=multi_worker: a cross-worker collective (all-reduce, all-gather) not done "
    "after this many seconds fails the step on every live worker, so a hung worker stops the "
    "job instead of stalling it; 0 = no limit (docs/SCALING.md, 'When a worker dies').",
    lower_bound=0)


def strategy_from_flags():
    """The tf.distribute strategy the flags ask for (raises ValueError / RuntimeError)."""
    from relicv2_tf import distribute

    strategy = distribute.get_strategy(_STRATEGY.value, _TPU.value, _CPU_REPLICAS.value,
                                       _COLLECTIVE_TIMEOUT.value)
    logging.debug("Strategy %s with %d replicas.", type(strategy).__name__,
                  strategy.num_replicas_in_sync)
    return strategy
