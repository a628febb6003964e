"""The saliency pipeline's entry points: the Imagenette config, the CLI's encoder check, the
dev-set quality benchmark."""

import json
import os
import subprocess
import sys

import pytest

from experiments.configs import saliency_imagenette
from relicv2_tf.saliency import generate
from tests.conftest import REPO

# The benchmark script runs from this checkout, installed or not (like the other script tests).
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
       "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


def test_imagenette_config_covers_both_splits_and_needs_an_encoder():
    config = saliency_imagenette.get_config()
    assert config.network.encoder_dir == "" and not config.network.allow_random_init
    assert config.data.image_size % 32 == 0  # the decoder merges stride 4..32 features
    assert tuple(config.generate.splits) == ("train", "val")
    assert config.generate.num_examples == 0  # every image
    assert config.data.data_dir.endswith(os.path.join("imagenette", "train"))


def test_evenly_spaced_subset_spans_the_sorted_list():
    entries = list(range(10))
    assert generate.evenly_spaced(entries, 3) == [0, 4, 9]  # np.round: 4.5 -> 4
    assert generate.evenly_spaced(entries, 0) == entries
    assert generate.evenly_spaced(entries, 50) == entries


def test_refine_without_an_encoder_stops_with_the_flag_to_set(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "relicv2_tf.cli.saliency",
         "--config=experiments/configs/saliency_imagenette.py", "--stage=refine",
         f"--config.workdir={tmp_path}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--config.network.encoder_dir=<pretrain workdir>/encoder" in result.stderr
    assert "allow_random_init=True" in result.stderr


@pytest.mark.shared_data("saliency_dev")
def test_quality_benchmark_prints_every_method_and_metric(data_root):
    result = subprocess.run(
        [sys.executable, "benchmarks/saliency_quality.py", "--folders=salbenchmark_set1",
         "--limit=2", "--image_size=96",
         f"--dev_dir={data_root / 'saliency_dev'}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    folder = report["folders"]["salbenchmark_set1"]
    assert folder["num_images"] == 2
    assert set(folder["methods"]) == {"rbd", "mr", "dsr", "mc", "fused", "centre"}
    for scores in folder["methods"].values():
        assert set(scores) == {"mae", "adaptive_f", "max_f", "mean_f", "s_measure",
                               "adaptive_e", "mean_e", "max_e"}
        assert all(0 <= v <= 1 for v in scores.values())
    assert "criterion_passed" in report


def test_16_bit_png_is_scaled_like_tensorflow_decodes_it():
    """PIL's convert("RGB") clips 16-bit greyscale to white; TF scales it to 8 bits."""
    import io

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from relicv2_tf.saliency import generate

    values = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    ours = generate.decode_rgb(buffer.getvalue())
    reference = tf.io.decode_png(buffer.getvalue(), channels=3, dtype=tf.uint8).numpy()
    np.testing.assert_array_equal(ours, reference)


def test_generate_from_fused_priors_writes_the_network_shard_format(tmp_path):
    """generate.source = "fused_priors": the same shards (ids, original bytes, labels, PNG masks
    at image size) as the network source, each mask the mean of the four priors' uint8 maps
    computed independently here, prior by prior, at data.image_size and resized back."""
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from relicv2_tf.data import tfrecord_format
    from relicv2_tf.saliency import handcrafted, pipeline

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:40] / 48
    root = tmp_path / "data" / "train"
    for c, name in enumerate(["n001", "n002"]):
        (root / name).mkdir(parents=True)
        for i in range(2):
            disc = (yy - 0.5) ** 2 + (xx - 0.4 - 0.1 * i) ** 2 < 0.05
            image = np.where(disc[..., None], [200, 40, 30], [40, 120, 60 + 40 * c])
            image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / name / f"img{i}.png")
    config = saliency_imagenette.get_config()
    config.workdir = str(tmp_path / "work")  # no saliency_network/ there: none is needed
    config.data.image_size = 32
    config.generate.source = "fused_priors"
    config.generate.data_root = str(tmp_path / "data")
    config.generate.splits = ("train",)
    config.generate.output_dir = str(tmp_path / "masks")
    config.generate.num_shards = 2
    config.generate.batch_size = 3
    summary = pipeline.run_stage(config, "generate")
    assert summary["source"] == "fused_priors"
    files = sorted(os.listdir(tmp_path / "masks"))
    assert files == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    examples = [tfrecord_format.parse_example(r) for f in files
                for r in tf.data.TFRecordDataset(str(tmp_path / "masks" / f))]
    entries = {e[2]: e for e in generate.list_image_folder(str(root))}
    assert sorted(e["id"].numpy().decode() for e in examples) == sorted(entries)
    for example in examples:
        path, label, _ = entries[example["id"].numpy().decode()]
        with open(path, "rb") as f:
            assert example["image"].numpy() == f.read()
        assert int(example["label"]) == label
        image = np.asarray(Image.open(path).convert("RGB"))
        small = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))
        maps = handcrafted.all_priors(small)  # float maps of the four priors, one SLIC
        expected = np.mean([np.round(maps[n] * 255) / 255 for n in handcrafted.PRIOR_NAMES],
                           axis=0)
        expected = np.asarray(Image.fromarray(expected.astype(np.float32), mode="F").resize(
            (image.shape[1], image.shape[0]), Image.BILINEAR))
        mask = tf.io.decode_png(example["mask"]).numpy()[..., 0] / 255.0
        assert mask.shape == image.shape[:2]
        assert np.abs(mask - np.clip(expected, 0, 1)).max() <= 1 / 255 + 1e-6
        assert mask.std() > 0.05  # a real map, not a constant
    config.generate.source = "priors"
    with pytest.raises(ValueError, match="fused_priors"):
        pipeline.run_stage(config, "generate")


def test_refine_saves_every_stage_network_for_the_dev_set_benchmark(tmp_path):
    """refine.save_stage_networks: one loadable network per prior and round under
    <workdir>/stages, which the quality benchmark's --stages_dir scores in prior / round order."""
    import importlib.util

    import numpy as np

    from relicv2_tf.saliency import network, pipeline

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 32, 32, 3), np.uint8)
    maps = {f"prior_{n}": rng.integers(0, 255, (4, 32, 32), np.uint8)
            for n in ("rbd", "mr", "dsr", "mc")}
    np.savez_compressed(tmp_path / "priors.npz", images=images, ids=np.arange(4), **maps)
    config = saliency_imagenette.get_config()
    config.workdir = str(tmp_path)
    config.network.allow_random_init = True
    config.network.decoder_channels = 8
    config.priors.names = ("mc", "rbd")  # the benchmark orders stages as PRIOR_NAMES does
    config.refine.rounds = 2
    config.refine.epochs_per_round = 1
    config.refine.batch_size = 4
    config.refine.save_stage_networks = True
    config.final.epochs = 1
    config.final.loss = "f_measure"
    pipeline.run_stage(config, "refine")
    expected = [f"{n}_round{r}" for n in ("rbd", "mc") for r in (1, 2)]
    assert sorted(os.listdir(tmp_path / "stages")) == sorted(expected)
    model, arch = network.load_saliency_network(str(tmp_path / "stages" / "mc_round2"))
    assert arch["image_size"] == 32 and model(images[:1].astype("float32")).shape == (1, 32, 32, 1)
    spec = importlib.util.spec_from_file_location(
        "saliency_quality", REPO / "benchmarks" / "saliency_quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    named = quality.networks_to_score([str(tmp_path / "saliency_network")],
                                      str(tmp_path / "stages"))
    assert list(named) == ["network"] + [f"stage:{s}" for s in expected]


def test_saliency_log_has_no_progress_bar_bytes(tmp_path):
    """--noprogress (the default when stdout is a file): no tqdm bars, so no \\r in the log."""
    import numpy as np
    from PIL import Image

    for i in range(3):
        folder = tmp_path / "images" / "a"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 255, (48, 48, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    result = subprocess.run(
        [sys.executable, "-m", "relicv2_tf.cli.saliency",
         "--config=experiments/configs/saliency_demo.py", "--stage=priors", "--noprogress",
         f"--config.data.data_dir={tmp_path / 'images'}", "--config.data.subset_size=3",
         "--config.data.image_size=32", "--config.priors.num_workers=1",
         f"--config.workdir={tmp_path / 'work'}"],
        cwd=REPO, env=ENV, capture_output=True, timeout=300)  # bytes: text mode hides \r
    assert result.returncode == 0, result.stderr[-2000:]
    assert b"\r" not in result.stdout + result.stderr and b"\x1b[" not in result.stderr
    assert json.loads(result.stdout.decode().strip().splitlines()[-1])["num_images"] == 3


def test_generate_reads_and_writes_urls_like_local_folders(tmp_path):
    """The paths of a Beam run on a cluster are URLs (gs://...): the listing, the image reads
    and the shard writes go through tf.io.gfile for them, here its in-memory ram:// file
    system, and give the local run's shards byte for byte; hidden files are skipped in both."""
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    rng = np.random.default_rng(0)
    remote = "ram://test_generate_urls/train"
    for name in ("a/0.png", "a/1.jpg", "a/.hidden.png", "b/2.png", "3.png", "notes.txt"):
        path = tmp_path / "train" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (20 + len(name), 24, 3)).astype(np.uint8)
        if name.endswith("txt"):
            path.write_text("not an image")
        else:
            Image.fromarray(pixels).save(path, format="PNG" if "png" in name else "JPEG")
        tf.io.gfile.makedirs(os.path.dirname(f"{remote}/{name}"))
        tf.io.gfile.copy(str(path), f"{remote}/{name}")
    local = generate.list_image_folder(str(tmp_path / "train"))
    assert [(label, example_id) for _, label, example_id in local] == [
        (0, "a/0.png"), (0, "a/1.jpg"), (1, "b/2.png"), (-1, "3.png")]
    assert [e[1:] for e in generate.list_image_folder(remote)] == [e[1:] for e in local]

    def predict_fn(batch):
        return batch.mean(axis=-1) / 255.0
    for root, output_dir in ((str(tmp_path / "train"), str(tmp_path / "out")),
                             (remote, "ram://test_generate_urls/out")):
        summary = generate.generate_masks(root, output_dir, predict_fn, 16, num_shards=2,
                                          batch_size=3, prefix="train", progress=False)
        assert summary["examples_written"] == 4
    for shard in ("train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"):
        local_records = list(tf.data.TFRecordDataset(str(tmp_path / "out" / shard)))
        remote_records = list(tf.data.TFRecordDataset(f"ram://test_generate_urls/out/{shard}"))
        assert [r.numpy() for r in remote_records] == [r.numpy() for r in local_records]
    assert tf.io.gfile.glob("ram://test_generate_urls/out/*.tmp-*") == []
