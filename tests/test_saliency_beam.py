"""Mask generation on Apache Beam (saliency/beam_generate.py): the DirectRunner with two worker
processes writes the plain generator's shards, byte for byte; the Beam path's checks."""

import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.configs import saliency_imagenette
from tests.conftest import REPO

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
       "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
NUM_SHARDS = 4  # val has 3 images: one of its shards is empty


def _image_folder(root):
    """train: 2 classes x 5 images + 1 image at the root (label -1); val: 3 images; sizes vary."""
    from PIL import Image

    rng = np.random.default_rng(0)
    layout = {"train": ["n001"] * 5 + ["n002"] * 5 + [""], "val": ["n001", "n002", "n002"]}
    for split, folders in layout.items():
        for i, folder in enumerate(folders):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            height, width = 36 + 4 * (i % 3), 40 + 6 * (i % 2)
            yy, xx = np.mgrid[0:height, 0:width] / height
            disc = (yy - 0.5) ** 2 + (xx - 0.3 - 0.05 * i) ** 2 < 0.06
            image = np.where(disc[..., None], [210, 50, 40], [30, 110, 70 + 10 * i])
            image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
            suffix = "png" if i % 2 else "jpg"
            Image.fromarray(image).save(root / split / folder / f"{split}{i}.{suffix}")


def _config(tmp_path):
    """A tiny random-init saliency network (logits scaled so the masks vary) saved where the
    generate stage's network source reads it."""
    from relicv2_tf.saliency import network

    config = saliency_imagenette.get_config()
    config.workdir = str(tmp_path / "work")
    config.network.allow_random_init = True
    config.network.decoder_channels = 8
    model = network.build_saliency_network(config.network, 32)
    logits = model.get_layer("logits")
    logits.kernel.assign(logits.kernel * 40.0)
    network.save_saliency_network(model, network.architecture(config.network, 32),
                                  os.path.join(config.workdir, "saliency_network"))
    config.generate.source = "network"
    config.generate.data_root = str(tmp_path / "data")
    config.generate.num_shards = NUM_SHARDS
    config.generate.batch_size = 2
    return config


def _shards(directory):
    """{file name: [serialized tf.train.Example, ...] in file order}."""
    import tensorflow as tf

    return {name: [r.numpy() for r in tf.data.TFRecordDataset(os.path.join(directory, name))]
            for name in sorted(os.listdir(directory))}


def test_direct_runner_two_processes_writes_the_plain_generators_shards(tmp_path):
    import tensorflow as tf

    from relicv2_tf.data import tfrecord_format
    from relicv2_tf.saliency import generate, pipeline

    _image_folder(tmp_path / "data")
    config = _config(tmp_path)
    config.generate.output_dir = str(tmp_path / "plain")
    pipeline.run_stage(config, "generate", progress=False)
    beam_dir = tmp_path / "beam"
    result = subprocess.run(
        [sys.executable, "-m", "relicv2_tf.cli.saliency",
         "--config=experiments/configs/saliency_imagenette.py", "--stage=generate",
         "--beam_runner=DirectRunner",
         "--beam_options=--direct_num_workers=2 --direct_running_mode=multi_processing",
         f"--config.workdir={config.workdir}", "--config.generate.source=network",
         f"--config.generate.data_root={tmp_path / 'data'}", f"--config.generate.output_dir="
         f"{beam_dir}", f"--config.generate.num_shards={NUM_SHARDS}",
         "--config.generate.batch_size=2"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    plain, beam = _shards(tmp_path / "plain"), _shards(beam_dir)
    names = [f"{split}-{i:05d}-of-{NUM_SHARDS:05d}.tfrecord" for split in ("train", "val")
             for i in range(NUM_SHARDS)]
    assert sorted(plain) == sorted(beam) == sorted(names)  # no temporary files left either
    assert [len(plain[n]) for n in names] == [3, 3, 3, 2, 1, 1, 1, 0]

    def by_id(shards):
        examples = {}
        for records in shards.values():
            for record in records:
                example_id = tfrecord_format.parse_example(record)["id"].numpy().decode()
                examples[example_id] = record
        return examples

    plain_examples, beam_examples = by_id(plain), by_id(beam)
    assert len(plain_examples) == 14 and plain_examples.keys() == beam_examples.keys()
    for example_id, record in plain_examples.items():
        assert beam_examples[example_id] == record, example_id  # serialized bytes
    assert beam == plain  # and each shard holds the same examples in the same order
    masks = [tf.io.decode_png(tfrecord_format.parse_example(r)["mask"]).numpy()
             for r in plain_examples.values()]
    assert np.mean([m.std() for m in masks]) > 10  # real maps, not a constant grey
    # The mask folder exported from each (PNG files): byte for byte.
    for directory in ("plain", "beam"):
        generate.export_mask_folder(str(tmp_path / directory / "*.tfrecord"),
                                    str(tmp_path / f"{directory}_png"))
    pngs = sorted(p.relative_to(tmp_path / "plain_png")
                  for p in (tmp_path / "plain_png").rglob("*.png"))
    assert len(pngs) == 14
    for relative in pngs:
        assert ((tmp_path / "beam_png" / relative).read_bytes()
                == (tmp_path / "plain_png" / relative).read_bytes())
    # A rerun finds every shard written and starts no pipeline.
    config.generate.output_dir = str(beam_dir)
    summary = pipeline.run_stage(config, "generate", beam_runner="DirectRunner")
    assert [s["shards_skipped"] for s in summary["splits"]] == [NUM_SHARDS, NUM_SHARDS]
    assert [s["examples_written"] for s in summary["splits"]] == [0, 0]


def test_beam_mistakes_name_the_fix(tmp_path):
    from relicv2_tf.saliency import pipeline

    config = saliency_imagenette.get_config()
    config.generate.data_root = str(tmp_path)
    config.generate.output_dir = str(tmp_path / "out")
    with pytest.raises(ValueError, match="--direct_num_worker is not a Beam pipeline option"):
        pipeline.run_stage(config, "generate", beam_runner="DirectRunner",
                           beam_options=["--direct_num_worker=2"])
    with pytest.raises(ValueError, match="not inside --beam_options"):
        pipeline.run_stage(config, "generate", beam_runner="DirectRunner",
                           beam_options=["--runner=FlinkRunner"])
    with pytest.raises(ValueError, match="with --beam_runner the runner spreads the shards"):
        pipeline.run_stage(config, "generate", num_workers=2, worker_index=0,
                           beam_runner="DirectRunner")
    with pytest.raises(ValueError, match="--beam_options needs --beam_runner"):
        pipeline.run_stage(config, "generate", beam_options=["--direct_num_workers=2"])
    with pytest.raises(ValueError, match="generate stage only"):
        pipeline.run_stage(config, "priors", beam_runner="DirectRunner")


def test_missing_beam_is_one_error_naming_the_requirements_file(monkeypatch):
    from relicv2_tf.saliency import pipeline

    monkeypatch.setitem(sys.modules, "apache_beam", None)  # import apache_beam now fails
    monkeypatch.delitem(sys.modules, "relicv2_tf.saliency.beam_generate", raising=False)
    config = saliency_imagenette.get_config()
    with pytest.raises(ValueError, match=r"pip install -r requirements-beam\.txt"):
        pipeline.run_stage(config, "generate", beam_runner="DataflowRunner")


@pytest.mark.parametrize("beam_options,message", [
    ("--direct_num_workers=2 --direct_runing_mode=multi_processing",
     "--direct_runing_mode is not a Beam pipeline option"),
    ("--project='unclosed", "--beam_options: No closing quotation"),
])
def test_cli_beam_mistakes_are_one_line_and_exit_2(tmp_path, beam_options, message):
    result = subprocess.run(
        [sys.executable, "-m", "relicv2_tf.cli.saliency",
         "--config=experiments/configs/saliency_imagenette.py", "--stage=generate",
         "--beam_runner=DirectRunner", f"--beam_options={beam_options}",
         f"--config.generate.data_root={tmp_path}",
         f"--config.generate.output_dir={tmp_path / 'out'}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("relicv2-saliency: ") and message in last, result.stderr[-2000:]


def test_network_source_loads_from_a_url_workdir(tmp_path):
    """On a cluster the workdir is a URL (gs://...): the workers copy the saliency network to a
    local folder and predict what a local workdir predicts (here through ram://)."""
    import tensorflow as tf

    from relicv2_tf.saliency import pipeline

    config = _config(tmp_path)
    local_dir = os.path.join(config.workdir, "saliency_network")
    remote = "ram://test_network_source/work"
    tf.io.gfile.makedirs(f"{remote}/saliency_network")
    for name in os.listdir(local_dir):
        tf.io.gfile.copy(os.path.join(local_dir, name), f"{remote}/saliency_network/{name}")
    batch = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3)).astype(np.uint8)
    local_fn, local_size, _ = pipeline.mask_source(config)
    config.workdir = remote
    remote_fn, remote_size, _ = pipeline.mask_source(config)
    assert local_size == remote_size == 32
    np.testing.assert_array_equal(remote_fn(batch), local_fn(batch))
