"""Resume = uninterrupted: the input pipeline from position p0 equals the uninterrupted one from
p0 on, and a pretraining run killed at two points and rerun ends bit-identical."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf import config as config_lib
from relicv2_tf.data import sources, tfrecord_format, views
from tests.conftest import REPO

BATCH = 4
NUM_EXAMPLES = 9  # epochs of 9 examples: batches of 4 straddle the epoch boundaries


def _png(array):
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _image(i):
    return np.random.RandomState(i).randint(0, 256, [20, 24, 3]).astype(np.uint8)


def _mask(i):
    mask = np.zeros([20, 24], np.uint8)
    mask[2 + i % 5:16, 3:20] = 255
    return mask


def _image_folder(root):
    for i in range(NUM_EXAMPLES):
        folder = root / "images" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(_png(_image(i)))
    return {"data_dir": str(root / "images")}


def _tfrecord(root):
    for shard in range(3):  # 3 files: the per-epoch file order matters
        with tf.io.TFRecordWriter(str(root / f"train-{shard}.tfrecord")) as writer:
            for i in range(shard, NUM_EXAMPLES, 3):
                writer.write(tfrecord_format.encode_example(
                    _png(_image(i)), f"ex{i}", i % 2, tfrecord_format.encode_mask_png(_mask(i))))
    return {"data_dir": str(root / "train-*.tfrecord"), "shuffle_buffer": 4}


SOURCES = {"digits": lambda root: {"num_examples": NUM_EXAMPLES},
           "image_folder": _image_folder, "tfrecord": _tfrecord}


def data_config(source, root, **overrides):
    config = config_lib.get_default_config().data
    config.source = source
    config.image_size, config.small_image_size = 16, 8
    config.num_large_views, config.num_small_views = 1, 0  # one view: a fast trace
    config.mask_apply_prob = 0.5 if source != "image_folder" else 0.0
    for key, value in {**SOURCES[source](root), **overrides}.items():
        config[key] = value
    return config


def batches(config, count, start_position=0, input_context=None):
    dataset = views.pretrain_dataset(config, batch_size=BATCH, seed=7,
                                     start_position=start_position, input_context=input_context)
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset.take(count)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize("cache", [False, True])  # digits: in memory, cache changes nothing
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_pipeline_from_position_equals_uninterrupted_pipeline(tmp_path, source, cache):
    config = data_config(source, tmp_path, cache=cache)
    tf.random.set_seed(0)  # train.pretrain's global seed; the pipeline must not depend on it
    uninterrupted = batches(config, 7)  # positions 0-27: epochs 0, 1, 2 and the start of 3
    tf.random.set_seed(1)
    ids = np.concatenate([b["id"] for b in uninterrupted])
    epochs = [ids[i:i + NUM_EXAMPLES] for i in range(0, 27, NUM_EXAMPLES)]
    for epoch in epochs:  # every example once per epoch, in a new order each epoch
        assert len(set(epoch)) == NUM_EXAMPLES
    assert list(epochs[0]) != list(epochs[1]) != list(epochs[2])
    # A restart at position 12 (epoch 1, its 4th example): batches 3-6, two of which straddle
    # the epoch boundaries at 18 and 27.
    assert_same_batches(batches(config, 4, start_position=3 * BATCH), uninterrupted[3:])


def test_other_image_stream_and_input_pipelines_resume_too(tmp_path):
    # BG_Random's "other image" stream (zipped with the examples) and pipeline 1 of 2.
    config = data_config("digits", tmp_path, bg_random_prob=1.0, mask_min_fraction=0.0,
                         num_examples=2 * NUM_EXAMPLES)
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    uninterrupted = batches(config, 4, input_context=context)
    assert_same_batches(batches(config, 2, start_position=2 * BATCH, input_context=context),
                        uninterrupted[2:])
    # BG_Random did change the views: without it the same positions differ.
    config.bg_random_prob = 0.0
    plain = batches(config, 1, input_context=context)[0]
    assert not np.array_equal(plain["large"], uninterrupted[0]["large"])
    np.testing.assert_array_equal(plain["id"], uninterrupted[0]["id"])


def test_make_source_epoch_is_epoch_zero_of_the_stream(tmp_path):
    config = data_config("tfrecord", tmp_path)
    epoch = [e["id"] for e in sources.make_source(config, seed=3).as_numpy_iterator()]
    stream = [e["id"] for e in sources.example_stream(config, seed=3).take(2 * NUM_EXAMPLES)
              .as_numpy_iterator()]
    assert epoch == stream[:NUM_EXAMPLES] and sorted(epoch) == sorted(stream[NUM_EXAMPLES:])
    with pytest.raises(ValueError, match="start_position=-1"):
        sources.example_stream(config, seed=3, start_position=-1)


# ------------------------------------------------------------------------------ end to end

RUN_SCRIPT = """
import os, signal, sys
import keras
from relicv2_tf import train
from tests.test_resume import tiny_demo_config

class Stopped(Exception):
    pass

class Interrupt(keras.callbacks.Callback):
    # When `after` steps are done: SIGKILL this process ("kill") or raise out of fit ("stop");
    # the checkpoints written so far are on disk, the steps after the last one are lost.
    def __init__(self, how, after):
        super().__init__()
        self.how, self.after = how, after
    def on_train_batch_begin(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.after:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise Stopped()

for job in sys.argv[1:]:  # <workdir> (to the end), <workdir>@kill=<steps>, <workdir>@stop=<steps>
    workdir, _, interrupt = job.partition("@")
    how, _, after = interrupt.partition("=")
    callbacks = [Interrupt(how, int(after))] if interrupt else []
    try:
        train.pretrain(tiny_demo_config(), workdir, extra_callbacks=callbacks, verbose=0)
    except Stopped:
        pass
"""


def tiny_demo_config():
    """experiments/configs/demo.py shrunk like test_pretrain_cli.TINY (2 large views, no small
    ones), deterministic, 6 steps with a checkpoint every 2, 40 examples (epochs end inside
    steps 3 and 5)."""
    from experiments.configs import demo
    config = demo.get_config()
    config.model.width_multiplier = 0.25
    config.model.projector_hidden_dim, config.model.projector_output_dim = 32, 16
    config.model.predictor_hidden_dim = 32
    config.data.num_large_views, config.data.num_small_views = 2, 0  # a faster trace
    config.data.num_examples = 40
    config.loss.num_negatives = 5
    config.training.batch_size = 16
    config.training.deterministic = True
    config.training.max_steps = 6
    config.training.checkpoint_every_steps = 2
    return config


def _start(*jobs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, *map(str, jobs)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(process):
    _, stderr = process.communicate(timeout=900)
    return process.returncode, stderr[-3000:]


def test_killed_runs_resume_bit_identical_to_an_uninterrupted_run(tmp_path):
    # The uninterrupted run, in parallel with: a run SIGKILLed after 3 steps (mid-interval:
    # step 2 is checkpointed); then, in a new process, its rerun stopped after 5 steps (from the
    # checkpoint of step 4) and its rerun to the end.
    reference, run = tmp_path / "reference", tmp_path / "run"
    uninterrupted = _start(reference)
    code, stderr = _finish(_start(f"{run}@kill=3"))
    assert code == -9, stderr
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-2.index"]
    code, stderr = _finish(_start(f"{run}@stop=5", run))
    assert code == 0, stderr
    code, stderr = _finish(uninterrupted)
    assert code == 0, stderr
    from relicv2_tf.models import encoder_io
    expected, weights = [encoder_io.load_encoder(str(path / "encoder")).get_weights()
                         for path in (reference, run)]
    assert len(expected) == len(weights)
    assert all(np.array_equal(x, y) for x, y in zip(expected, weights))
    assert json.loads((run / "pretrain_summary.json").read_text())["steps"] == 6


def test_a_continued_run_extends_the_summary_history(tmp_path):
    from relicv2_tf import train

    path = tmp_path / "pretrain_summary.json"
    new = {"loss": [0.5], "knn_top1": [0.4]}
    assert train._with_earlier_history(str(path), 4, [6], new) == ([6], new)  # no summary
    path.write_text(json.dumps({"history_steps": [2, 4, 6],
                                "history": {"loss": [3.0, 2.0, 1.0], "lr": [1, 1, 1]}}))
    # Continued from step 4 (say, with more max_steps): the earlier entries up to step 4 first;
    # a name that only one of the two runs logged is dropped (its list would not line up).
    assert train._with_earlier_history(str(path), 4, [6, 8], {"loss": [0.5, 0.4]}) == (
        [2, 4, 6, 8], {"loss": [3.0, 2.0, 0.5, 0.4]})
    # A rerun after completion trains nothing and keeps everything.
    assert train._with_earlier_history(str(path), 6, [], {}) == (
        [2, 4, 6], {"loss": [3.0, 2.0, 1.0], "lr": [1, 1, 1]})
    path.write_text("{not json")
    assert train._with_earlier_history(str(path), 6, [], {}) == ([], {})
