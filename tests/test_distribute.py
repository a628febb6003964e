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


def test_bfloat16_avoids_onednn_only_on_bfloat16_cpus_and_only_if_unset():
    for bf16_flags in ({"avx2", "amx_bf16", "amx_tile"}, {"avx2", "avx512f", "avx512_bf16"}):
        env = {}
        assert distribute.avoid_onednn_bfloat16(env, flags=bf16_flags)
        assert env == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    env = {"TF_ENABLE_ONEDNN_OPTS": "1"}  # the user's choice wins
    assert not distribute.avoid_onednn_bfloat16(env, flags={"amx_bf16"})
    assert env == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    env = {}
    assert not distribute.avoid_onednn_bfloat16(env, flags={"avx2", "avx512f", "avx512_vnni"})
    assert env == {}


def test_cpu_flags_reads_proc_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_bf16\n")
    assert distribute.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx2", "amx_bf16"}
    assert distribute.cpu_flags(str(tmp_path / "absent")) == set()
