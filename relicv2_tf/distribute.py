"""tf.distribute strategy from a name: the only place that knows about hardware topology.

TensorFlow is imported inside the functions so that the CLIs can define their flags from
`STRATEGIES` without paying for the TensorFlow import on `--help` or a flag error.
"""

from __future__ import annotations

import os

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def get_strategy(name: str = "default", tpu_address: str = "", num_cpu_replicas: int = 0):
    """Returns a tf.distribute.Strategy.

    Args:
      name: "default" (one device), "mirrored" (all local GPUs, or `num_cpu_replicas` logical
        CPU devices when there is no GPU), "multi_worker" (MultiWorkerMirroredStrategy from
        TF_CONFIG), "tpu" (TPUStrategy; `tpu_address` is the TPU name or grpc:// address,
        "" or "local" on a TPU VM).
      num_cpu_replicas: split the host CPU into this many logical devices (tests, CPU
        scaling checks); must be called before TensorFlow initialises its devices.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"--strategy={name!r} is not one of {STRATEGIES}.")
    if num_cpu_replicas > 1:
        split_cpu(num_cpu_replicas)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "local")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def split_cpu(num_devices: int):
    """Splits the first physical CPU into `num_devices` logical devices (idempotent)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current and len(current) == num_devices:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as error:
        raise RuntimeError(
            f"Cannot split the CPU into {num_devices} devices after TensorFlow has started; "
            "request the split before any other TensorFlow call.") from error


def per_replica_batch_size(global_batch_size: int, strategy) -> int:
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"training.batch_size={global_batch_size} is not divisible by the {replicas} "
            f"replicas; use a multiple of {replicas} (e.g. "
            f"--config.training.batch_size={max(replicas, global_batch_size // replicas * replicas)}).")
    return global_batch_size // replicas


def read_int(variable) -> int:
    """The Python int of a scalar variable that may be distributed (`optimizer.iterations`).

    `int(v)` fails for a MirroredVariable / TPUMirroredVariable (Keras forwards it to the
    distributed value, which has no `__int__`); `numpy()` reads the local copy on every
    strategy, eagerly and in cross-replica context.
    """
    return int(variable.numpy())


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags of the host CPU (empty where /proc/cpuinfo is absent)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def avoid_onednn_amx_bfloat16(environ=os.environ, flags=None) -> bool:
    """Runs bfloat16 on CPUs with AMX-BF16 through Eigen instead of oneDNN; call before
    TensorFlow is imported. Returns whether it did.

    On a Xeon with AMX-BF16 / AVX512-BF16, mixed_bfloat16 training with TensorFlow's oneDNN
    kernels turned NaN in 3 of 6 runs of tests/test_performance.py (a gradient ~1e19 reached
    LARS) and was not deterministic; with TF_ENABLE_ONEDNN_OPTS=0 it passed 6 of 6 (measured on
    such a machine, see docs/SCALING.md). This matches oneDNN's report of AMX bf16 brgemm
    kernels leaking garbage into outputs when the reduction dimension is not a multiple of 32
    (uxlfoundation/oneDNN#5717). The variable is only set when the user has not set it, and
    only on CPUs that report `amx_bf16`; other CPUs keep oneDNN.
    """
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" not in flags or "TF_ENABLE_ONEDNN_OPTS" in environ:
        return False
    environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    return True
