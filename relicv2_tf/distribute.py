"""tf.distribute strategy from a name: the only place that knows about hardware topology."""

from __future__ import annotations

import tensorflow as tf

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
