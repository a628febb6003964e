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


BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # CPUs where oneDNN runs bfloat16 kernels


def avoid_onednn_bfloat16(environ=os.environ, flags=None) -> bool:
    """Runs bfloat16 through Eigen instead of oneDNN on CPUs with bfloat16 units (AMX-BF16 or
    AVX512-BF16); call before TensorFlow is imported. Returns whether it did.

    With oneDNN's bfloat16 kernels, mixed_bfloat16 training of tests/test_performance.py
    - on a Xeon with AMX-BF16: turned NaN in 3 of 6 runs (a gradient ~1e19 reached LARS) and
      was not deterministic; with TF_ENABLE_ONEDNN_OPTS=0, 6 of 6 passed (reported on such a
      machine; oneDNN describes AMX bf16 brgemm kernels leaking garbage into outputs when the
      reduction dimension is not a multiple of 32, uxlfoundation/oneDNN#5717);
    - on an AMD EPYC with AVX512-BF16 and no AMX: 20 of 20 finite, but the first loss of 20
      identical runs spread over 3.4693-3.4733 (not deterministic, so no bit-identical resume);
      with TF_ENABLE_ONEDNN_OPTS=0, 20 identical losses (benchmarks/bf16_stability.py).
    The variable is set only where the user has not set it (their value wins), and only on
    CPUs that report one of BFLOAT16_CPU_FLAGS; other CPUs keep oneDNN (float32 kernels there
    are deterministic). See docs/SCALING.md, "bfloat16 on CPUs".
    """
    flags = cpu_flags() if flags is None else flags
    if not flags & set(BFLOAT16_CPU_FLAGS) or "TF_ENABLE_ONEDNN_OPTS" in environ:
        return False
    environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    return True
