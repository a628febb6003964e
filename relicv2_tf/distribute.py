"""tf.distribute strategy from a name: the only place that knows about hardware topology, and
about which process of a run this is (`worker_role`: the chief writes the run's files, other
workers only their own temporary directories).

TensorFlow is imported inside the functions so that the CLIs can define their flags from
`STRATEGIES` without paying for the TensorFlow import on `--help` or a flag error.
"""

from __future__ import annotations

import contextlib
import os
import typing

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# --collective_timeout_seconds: long enough for the slowest gap between two collectives of a
# healthy job (start-up, the first batch, a checkpoint save on the chief).
COLLECTIVE_TIMEOUT_SECONDS = 600
# A non-chief worker's temporary directory inside the one the chief writes (`WorkerRole`).
WORKER_TEMP_PREFIX = "workertemp_"


def get_strategy(name: str = "default", tpu_address: str = "", num_cpu_replicas: int = 0,
                 collective_timeout_seconds: float = COLLECTIVE_TIMEOUT_SECONDS):
    """Returns a tf.distribute.Strategy.

    Args:
      name: "default" (one device), "mirrored" (all local GPUs, or `num_cpu_replicas` logical
        CPU devices when there is no GPU), "multi_worker" (MultiWorkerMirroredStrategy from
        TF_CONFIG), "tpu" (TPUStrategy; `tpu_address` is the TPU name or grpc:// address,
        "" or "local" on a TPU VM).
      num_cpu_replicas: split the host CPU into this many logical devices (tests, CPU
        scaling checks); must be called before TensorFlow initialises its devices.
      collective_timeout_seconds: "multi_worker" only: a collective (gradient all-reduce,
        all-gather) that has not completed after this long fails the step on every worker
        still alive, so a job whose worker hangs stops instead of waiting forever (a worker
        that dies is noticed sooner, by the coordination service's heartbeats;
        docs/SCALING.md). 0: no limit.
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
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy=multi_worker reads the cluster from the TF_CONFIG "
                             "environment variable, which is not set; set it on every worker "
                             "(docs/SCALING.md, 'Multi-worker').")
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout_seconds or None)
        return _reduce_nested(tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=options))
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "local")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _reduce_nested(strategy):
    """Makes `strategy.reduce` take a nest of values, as MirroredStrategy's does.

    Keras 3's `fit` reduces a whole input batch (a dict) with one `strategy.reduce` call to
    learn its shapes, and reduces scalar logs with `axis=0`; MultiWorkerMirroredStrategy's
    `reduce` takes one value, and no axis on a scalar, so `fit` failed before the first step
    (keras-team/keras#20585). Each value is reduced on its own; a scalar over the replicas.
    """
    import tensorflow as tf

    reduce_one = strategy.reduce

    def reduce(reduce_op, value, axis=None):
        def one(v):
            scalar = strategy.experimental_local_results(v)[0].shape.rank == 0
            return reduce_one(reduce_op, v, axis=None if scalar else axis)
        return tf.nest.map_structure(one, value)
    strategy.reduce = reduce
    return strategy


class WorkerRole(typing.NamedTuple):
    """Which process of a run this is: task `task_id` of `num_workers`; the chief (task 0, or
    the task of type "chief") writes the run's files, the others only their own temporary
    directories."""
    task_type: str | None
    task_id: int
    num_workers: int

    @property
    def is_chief(self) -> bool:
        return self.task_type in (None, "chief") or (self.task_type == "worker"
                                                      and self.task_id == 0)

    def write_dir(self, directory: str) -> str:
        """Where this process writes what belongs in `directory`: `directory` itself on the
        chief; on another worker its own `directory/workertemp_<task_id>`, which
        `remove_worker_dir` deletes after the save (TF's multi-worker saving pattern: every
        worker saves, since a save may read distributed variables, but only the chief keeps
        its files)."""
        if self.is_chief:
            return directory
        return os.path.join(directory, f"{WORKER_TEMP_PREFIX}{self.task_id}")

    def remove_worker_dir(self, directory: str):
        """Deletes this worker's `write_dir(directory)` (nothing on the chief)."""
        import tensorflow as tf

        path = self.write_dir(directory)
        if not self.is_chief and tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)


class WorkerLostError(RuntimeError):
    """A multi-worker job lost a worker (or a collective timed out); restart every worker."""


@contextlib.contextmanager
def stop_on_lost_worker(role: WorkerRole):
    """Turns what a dead or hung peer makes TensorFlow raise on the workers still alive (an
    aborted or timed-out collective) into a WorkerLostError that says how to resume."""
    import tensorflow as tf

    lost = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError, tf.errors.AbortedError)
    try:
        yield
    except lost as error:
        if role.num_workers < 2:
            raise
        reason = str(error.message).strip().splitlines()[0][:300]
        raise WorkerLostError(
            f"worker {role.task_id} of {role.num_workers}: the job lost a worker or a collective "
            f"timed out ({type(error).__name__}: {reason}); nothing after the last checkpoint "
            "was saved. Restart every worker with the same command to resume from it "
            "(docs/SCALING.md, 'When a worker dies').") from error


def wait_for_workers(strategy, timeout_seconds: float = 24 * 3600):
    """Returns once every worker of `strategy` has called it (one all-reduce with its own time
    limit); at once in a single process. For chief-only work after training (the end-of-run
    kNN check): the other workers wait instead of exiting, which TensorFlow's coordination
    service would otherwise report on the chief as a crashed task."""
    import tensorflow as tf

    role = worker_role(strategy)
    if role.num_workers < 2:
        return
    ones = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(1.0))
    with stop_on_lost_worker(role):
        strategy.extended.reduce_to(
            tf.distribute.ReduceOp.SUM, ones, ones,
            options=tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=timeout_seconds))


def worker_role(strategy=None) -> WorkerRole:
    """This process's role under `strategy` (default: the current one): from the cluster
    resolver of MultiWorkerMirroredStrategy (TF_CONFIG) or TPUStrategy; a single-process
    strategy (default, mirrored) is always the chief of one."""
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return WorkerRole(None, 0, 1)
    spec = resolver.cluster_spec()
    num_workers = sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs)
    return WorkerRole(resolver.task_type, int(resolver.task_id or 0), max(num_workers, 1))


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
            f"replicas; use a multiple of {replicas} (e.g. --config.training.batch_size="
            f"{max(replicas, global_batch_size // replicas * replicas)}).")
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
    AVX512-BF16): sets TF_ENABLE_ONEDNN_OPTS=0; call before TensorFlow is imported. Returns
    whether it did.

    Why: on such CPUs oneDNN's bfloat16 kernels are not deterministic (so no bit-identical
    resume), and on AMX they have turned training NaN; Eigen's are deterministic and finite
    (the measurements: docs/SCALING.md, "bfloat16 on CPUs"; `benchmarks/bf16_stability.py`).
    The variable is set only where the user has not set it (their value wins), and only on
    CPUs that report one of BFLOAT16_CPU_FLAGS; other CPUs keep oneDNN (float32 kernels there
    are deterministic).
    """
    flags = cpu_flags() if flags is None else flags
    if not flags & set(BFLOAT16_CPU_FLAGS) or "TF_ENABLE_ONEDNN_OPTS" in environ:
        return False
    environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    return True
