"""Per-image predictions of a run (experiments/imagenette64_predictions.py): on a generated
ImageFolder, a tiny random encoder and a linear head trained for one epoch, the top-1 recomputed
from the predictions equals what the library's own protocols report (the end-of-run kNN of
relicv2-pretrain, relicv2-linear-eval's linear_eval.json), and a mismatch writes nothing."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from experiments import imagenette64_predictions as predictions
from experiments import imagenette64_stats as st
from experiments.configs import common as configs_common
from experiments.configs import linear_eval_imagenette

CLASSES = ("n01440764", "n02102040", "n02979186")
IMAGES = {"train": 5, "val": 4}  # per class


def write_image_folder(root):
    """Imagenette's layout: <split>/<class>/<class>_<i>.JPEG, each class its own colour plus
    noise (so features, kNN votes and the head's predictions differ between images)."""
    rng = np.random.default_rng(0)
    for split, count in IMAGES.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.zeros((36, 40, 3)) + 90 + 25 * np.eye(3)[label] * rng.uniform(0, 2)
                pixels += rng.normal(0, 60, pixels.shape)
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                    folder / f"{name}_{i}.JPEG")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run directory as the benchmark leaves it: encoder/, knn_eval.json written by the
    library's end-of-run kNN, linear/ written by the library's linear evaluation."""
    from relicv2_tf.evaluation import inputs, knn_report, linear
    from relicv2_tf.models import encoder_io

    root = tmp_path_factory.mktemp("imagenette64")
    write_image_folder(root / "imagenette")
    run_dir = root / "runs" / "byol" / "seed1"
    with pytest.MonkeyPatch.context() as patch:  # the protocol reads the data root
        patch.setenv(configs_common.DATA_ROOT_ENV, str(root))
        config = predictions.knn_config(str(run_dir))
    assert config.data.data_dir == str(root / "imagenette") and config.seed == 1
    config.data.image_size = 32
    encoder_dir = str(run_dir / "encoder")
    encoder_io.save_encoder(inputs.random_init_encoder(config.model, seed=7), config.model,
                            encoder_dir)
    e = config.evaluation
    knn_record = knn_report.compare_with_random_init(
        config, encoder_dir, k=e.knn_k, temperature=e.knn_temperature,
        max_examples=e.knn_max_examples)
    (run_dir / "knn_eval.json").write_text(json.dumps(knn_record))
    linear_config = linear_eval_imagenette.get_config()
    linear_config.encoder_dir = encoder_dir
    linear_config.data.data_dir = str(root / "imagenette")
    linear_config.num_classes = len(CLASSES)
    linear_config.eval_batch_size = 5  # not the kNN's batch: the protocol's own is used
    linear_config.linear.update(batch_size=4, num_epochs=1, image_size=32, resize_size=37)
    linear_metrics = linear.run(linear_config, str(run_dir / "linear"), progress=False)
    return run_dir, config, linear_config, knn_record, linear_metrics


@pytest.mark.slow
def test_predictions_reproduce_the_recorded_accuracies(finished_run):
    run_dir, config, linear_config, knn_record, linear_metrics = finished_run
    result = predictions.run_predictions(str(run_dir), config, linear_config)
    assert 0 < knn_record["pretrained_top1"] < 1 and 0 < linear_metrics["top1"] < 1  # telling
    assert result["knn_top1"] == knn_record["pretrained_top1"]
    assert result["linear_top1"] == linear_metrics["top1"]
    assert json.loads((run_dir / "predictions.json").read_text()) == result
    labels = st.decode_predictions(result["labels"])
    np.testing.assert_array_equal(labels, np.repeat(np.arange(3), IMAGES["val"]))
    for metric in ("knn", "linear"):
        guesses = st.decode_predictions(result[metric])
        assert guesses.shape == labels.shape and float(np.mean(guesses == labels)) == result[
            f"{metric}_top1"]
    ids = [f"{name}/{name}_{i}" for name in CLASSES for i in range(IMAGES["val"])]
    assert result["ids_digest"] == st.ids_digest(ids) and result["num_images"] == len(ids)


@pytest.mark.slow
def test_random_init_predictions_reproduce_the_recorded_baseline(finished_run):
    run_dir, config, linear_config, knn_record, _ = finished_run
    result = predictions.run_predictions(str(run_dir), config, linear_config, random_init=True)
    assert result["knn_top1"] == knn_record["random_init_top1"] != knn_record["pretrained_top1"]
    assert "linear" not in result
    assert json.loads((run_dir / "predictions_random_init.json").read_text()) == result


@pytest.mark.slow
def test_a_mismatch_names_both_numbers_and_writes_nothing(finished_run, tmp_path):
    run_dir, config, linear_config, knn_record, _ = finished_run
    tampered = dict(knn_record, pretrained_top1=0.123)
    (tmp_path / "knn_eval.json").write_text(json.dumps(tampered))
    os.symlink(run_dir / "encoder", tmp_path / "encoder")
    expected = repr(knn_record["pretrained_top1"])
    with pytest.raises(RuntimeError, match=rf"is {expected}, the run recorded 0.123"):
        predictions.run_predictions(str(tmp_path), config, linear_config,
                                    linear_dir=str(run_dir / "linear"))
    assert not (tmp_path / "predictions.json").exists()


@pytest.mark.parametrize("directory, spec, seed", [
    ("relicv2/seed2", "relicv2", 2), ("relicv2_nomask/seed0", "relicv2", 0),
    ("byol_bg_rm/seed1", "byol", 1), ("moco_v2_bg_swaps/seed0", "moco_v2", 0),
    ("moco_v2/seed3", "moco_v2", 3)])
def test_knn_config_is_the_cells_protocol(directory, spec, seed):
    config = predictions.knn_config(os.path.join("runs", "imagenette64", directory))
    assert (config.method, config.seed) == (spec, seed)
    assert config.data.image_size == 64 and config.evaluation.knn_max_examples == -1
    assert (config.data.mask_apply_prob == 0) == ("nomask" in directory or spec != "relicv2")
    assert (config.data.bg_swaps_prob > 0) == ("bg_swaps" in directory)
    assert predictions.knn_config("runs/imagenette64/supervised/seed0").method == "byol"
    with pytest.raises(ValueError, match="seed<k>"):
        predictions.knn_config("runs/imagenette64/byol")


