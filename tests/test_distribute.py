"""Strategy selection and the per-replica batch check."""

import pytest
import tensorflow as tf

from relicv2_tf import distribute


def test_default_strategy_has_one_replica():
    strategy = distribute.get_strategy("default")
    assert strategy.num_replicas_in_sync == 1
    assert distribute.per_replica_batch_size(64, strategy) == 64


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="'gpu_pod' is not one of"):
        distribute.get_strategy("gpu_pod")


def test_batch_not_divisible_names_the_fix():
    class FourReplicas:
        num_replicas_in_sync = 4

    assert distribute.per_replica_batch_size(4096, FourReplicas()) == 1024
    with pytest.raises(ValueError, match=r"batch_size=4097 is not divisible by the 4 replicas"):
        distribute.per_replica_batch_size(4097, FourReplicas())


def test_cpu_split_after_start_explains_itself():
    tf.constant(1.0)  # TensorFlow has initialised its devices
    if len(tf.config.list_logical_devices("CPU")) == 3:
        pytest.skip("another test already split the CPU into 3 devices")
    with pytest.raises(RuntimeError, match="before any other TensorFlow call"):
        distribute.split_cpu(3)
