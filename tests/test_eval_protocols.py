"""Fine-tuning, supervised baseline, transfer, robustness, backgrounds and analysis on tiny data."""

import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from relicv2_tf import config as config_lib
from relicv2_tf.evaluation import (
    analysis,
    backgrounds,
    batches,
    features,
    finetune,
    inputs,
    linear,
    linear_head,
    results,
    robustness,
    supervised,
    transfer,
)
from relicv2_tf.models import resnet


def colour_examples(num_classes=3, per_class=6, size=36, seed=0):
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(num_classes):
        for _ in range(per_class):
            image = rng.integers(0, 60, size=(size, size, 3))
            image[..., c % 3] += 150 + 20 * (c // 3)
            images.append(image.astype(np.uint8))
            labels.append(c)
    return np.stack(images), np.array(labels, np.int32)


def mean_colour_encoder():
    images = keras.Input((None, None, 3))
    return keras.Model(images, keras.layers.GlobalAveragePooling2D()(images))


def write_image_folder(root: Path, class_names, per_class=3, size=40, seed=0):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(class_names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, size=(size, size + 8, 3))
            image[..., c % 3] += 180
            Image.fromarray(image.astype(np.uint8)).save(root / name / f"{name}_{i}.JPEG")


def folder_config(root):
    data = config_lib.get_default_config().data
    data.source, data.data_dir, data.split = "image_folder", str(root), ""
    return data


def test_finetune_trains_encoder_and_resumes(tmp_path):
    images, labels = colour_examples(per_class=4)
    train = tf.data.Dataset.from_tensor_slices((images, labels))
    args = dict(num_classes=3, batch_size=6, num_epochs=2, encoder_learning_rate=0.01,
                head_learning_rate=0.1, decay_epochs=(1,), decay_factor=0.2, image_size=32,
                seed=1, progress=False, checkpoint_every_steps=1)

    def fresh():
        """A small conv + batch-norm encoder (fine-tuning's logic is the same for a ResNet; the
        supervised test below trains resnet(18, 0.25) through the same step)."""
        keras.utils.set_random_seed(0)
        inputs = keras.Input((None, None, 3))
        x = keras.layers.Conv2D(8, 3, strides=2)(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    reference_encoder = fresh()
    before = reference_encoder.get_weights()
    reference, _ = finetune.finetune(reference_encoder, train,
                                     checkpoint_dir=str(tmp_path / "ref"), **args)
    assert any(not np.array_equal(a, b) for a, b in zip(before, reference_encoder.get_weights()))
    encoder = fresh()
    _, info = finetune.finetune(encoder, train, checkpoint_dir=str(tmp_path / "run"),
                                stop_after_steps=3, **args)
    assert info["stopped_at_step"] == 3
    encoder = fresh()  # a new process: everything comes back from the checkpoint
    resumed, _ = finetune.finetune(encoder, train, checkpoint_dir=str(tmp_path / "run"), **args)
    for a, b in zip(reference_encoder.get_weights() + reference.get_weights(),
                    encoder.get_weights() + resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_filter_by_ids_matches_full_ids_and_file_names(tmp_path):
    examples = tf.data.Dataset.from_tensor_slices({
        "id": ["n01/n01_1", "n01/n01_2", "n02/n02_7", "n02/n02_8"], "label": [0, 0, 1, 1]})
    list_file = tmp_path / "1percent.txt"
    list_file.write_text("n01_2\nn02/n02_8\n\n")
    kept = inputs.filter_by_ids(examples, inputs.read_id_list(str(list_file)))
    assert [e["id"].numpy().decode() for e in kept] == ["n01/n01_2", "n02/n02_8"]


def test_supervised_baseline_learns_separable_colours():
    images, labels = colour_examples(per_class=8)
    train = tf.data.Dataset.from_tensor_slices((images, labels))
    keras.utils.set_random_seed(0)
    encoder = resnet.resnet(18, 0.25)
    head, info = supervised.train_supervised(
        encoder, train, num_classes=3, batch_size=8, num_epochs=4, base_learning_rate=0.8,
        image_size=32, progress=False)
    assert info["losses"][-1] < info["losses"][0]
    metrics = linear_head.evaluate_head(encoder, head, train, num_classes=3, batch_size=24,
                                        image_size=32, resize_size=36, progress=False)
    assert metrics["top1"] > 1 / 3


def test_linear_transfer_sweep_picks_the_working_learning_rate():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 4.0
    def sample(n):
        y = np.repeat(np.arange(4), n)
        return (centres[y] + rng.normal(scale=0.3, size=(len(y), 8))).astype(np.float32), \
            y.astype(np.int32)
    outcome = transfer.linear_transfer(
        sample(10), sample(5), num_classes=4, metric=transfer.MEAN_PER_CLASS,
        sweep={"learning_rate": [0.0, 0.5]}, batch_size=8, num_epochs=5, seed=0)
    assert outcome["best"] == {"learning_rate": 0.5}
    assert outcome["score"] == 1.0
    assert [s for h, s in outcome["sweep"] if h["learning_rate"] == 0.0][0] < 1.0


def test_transfer_reads_tfds_with_mock_data():
    import tensorflow_datasets as tfds
    data = config_lib.get_default_config().data
    data.source, data.tfds_name = "tfds", "cifar10"
    with tfds.testing.mock_data(num_examples=12):
        spec = transfer.TRANSFER_DATASETS["cifar10"]
        train = inputs.labelled_examples(data, spec["train_split"])
        test = inputs.labelled_examples(data, spec["test_split"])
        encoder = mean_colour_encoder()
        extracted = {name: features.extract_features(
            encoder, batches.eval_batches(ds, 6, 32, 32), progress=False)
            for name, ds in (("train", train), ("test", test))}
    assert extracted["train"][0].shape == (12, 3)
    outcome = transfer.linear_transfer(extracted["train"], extracted["test"], num_classes=10,
                                       metric=spec["metric"], sweep={"learning_rate": [0.1]},
                                       batch_size=4, num_epochs=1)
    assert 0.0 <= outcome["score"] <= 1.0 and outcome["test"]["num_examples"] == 12


def test_robustness_image_folder_200_class_mapping(tmp_path):
    wnids = robustness.imagenet_wnids()
    subset = [wnids[7], wnids[300], wnids[999]]  # class c coloured by channel c
    write_image_folder(tmp_path / "imagenet_r", subset)
    class_names = robustness.folder_class_names(str(tmp_path / "imagenet_r"))
    label_map = robustness.class_index_mapping(class_names, wnids)
    np.testing.assert_array_equal(label_map, [7, 300, 999])
    # An ImageNet head that scores class 7 / 300 / 999 by red / green / blue, and class 0 by a
    # large constant: only the restriction to the 200-class subset makes it right.
    weights = np.zeros((3, 1000), np.float32)
    weights[0, 7], weights[1, 300], weights[2, 999] = 1.0, 1.0, 1.0
    bias = np.zeros(1000, np.float32)
    bias[0] = 100.0
    head = linear_head.make_linear_head(3, 1000)
    head.layers[-1].set_weights([weights, bias])
    examples = inputs.labelled_examples(folder_config(tmp_path / "imagenet_r"), "")
    common = dict(batch_size=4, image_size=32, resize_size=36, progress=False,
                  label_map=label_map)
    restricted = robustness.evaluate_zero_shot(mean_colour_encoder(), head, examples,
                                               restrict_to_present_classes=True, **common)
    unrestricted = robustness.evaluate_zero_shot(mean_colour_encoder(), head, examples, **common)
    assert restricted["top1"] == 1.0 and restricted["num_examples"] == 9
    assert unrestricted["top1"] == 0.0


def test_backgrounds_from_masks_perfect_and_constant():
    images, labels = colour_examples(per_class=4, size=16)
    images01 = images.astype(np.float32) / 255.0
    masks = np.ones((len(labels), 16, 16, 1), np.float32)  # all foreground: variants == original
    variants = backgrounds.make_variants(images01, masks, labels, seed=0)
    encoder = mean_colour_encoder()
    train_x = features.image_array_features(encoder, images01)
    head, _ = linear.train_linear_head(None, None, num_classes=3, augment=False,
                                       train_features=(train_x, labels), batch_size=4,
                                       num_epochs=20, learning_rate=0.5, progress=False)
    metrics = backgrounds.evaluate_variants(
        encoder, head, {k: (v, labels) for k, v in variants.items() if k != "only_fg"},
        num_classes=3, batch_size=8, progress=False)
    assert metrics["original"] == 1.0 and metrics["mixed_rand"] == 1.0
    assert metrics["bg_gap"] == 0.0
    # A head that always predicts class 0 scores chance (1/3) on every variant.
    constant = linear_head.make_linear_head(3, 3)
    constant.layers[-1].set_weights([np.zeros((3, 3), np.float32),
                                     np.array([1.0, 0.0, 0.0], np.float32)])
    chance = backgrounds.evaluate_variants(encoder, constant, {k: (v, labels) for k, v in
                                                               variants.items()},
                                           num_classes=3, progress=False)
    for name in backgrounds.VARIANTS:
        assert chance[name] == pytest.approx(1 / 3)


def test_backgrounds_masks_from_digits_source():
    data = config_lib.get_default_config().data
    data.source, data.num_examples = "digits", 20
    examples = inputs.labelled_examples(data, "test", with_masks=True)
    images, masks, labels = backgrounds.load_masked_examples(examples, 32, 32)
    assert images.shape == (20, 32, 32, 3) and masks.shape == (20, 32, 32, 1)
    variants = backgrounds.make_variants(images, masks, labels)
    binary = masks >= 0.5
    np.testing.assert_allclose(variants["mixed_rand"][np.repeat(binary, 3, -1)],
                               images[np.repeat(binary, 3, -1)])


def test_analysis_figures_are_pngs(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    features = np.eye(3)[labels] * 3 + rng.normal(scale=0.2, size=(30, 3))
    ratios = analysis.class_concentration_ratios(features, labels)
    assert np.all(ratios > 1.0)  # tight, separated classes
    index, distances = analysis.nearest_neighbours(features, 5)
    for path in (analysis.plot_concentration({"a": ratios, "b": ratios * 0.5},
                                             str(tmp_path / "c.png")),
                 analysis.plot_neighbour_confusion(index, distances, labels,
                                                   str(tmp_path / "nn.png"), ["x", "y", "z"])):
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.shared_data("imagenette")
def test_linear_eval_on_imagenette_subset(data_root):
    root = data_root / "imagenette"
    data = config_lib.get_default_config().data
    data.source, data.data_dir, data.num_examples = "image_folder", str(root), 30
    train = inputs.labelled_examples(data, "train")
    test = inputs.labelled_examples(data, "val")
    _, metrics, info = linear.linear_eval(mean_colour_encoder(), train, test, num_classes=10,
                                          batch_size=16, num_epochs=2, augment=False,
                                          image_size=32, resize_size=36, progress=False)
    assert info["num_train_examples"] == 30 and metrics["num_examples"] == 30
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0


def test_linear_eval_cli_writes_head_and_result(tmp_path):
    import subprocess
    import sys
    write_image_folder(tmp_path / "data" / "train", ["a", "b"], per_class=4)
    write_image_folder(tmp_path / "data" / "val", ["a", "b"], per_class=2)
    repo = Path(__file__).parents[1]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "relicv2_tf.cli.linear_eval",
               "--config=" + str(repo / "experiments/configs/linear_eval_demo.py"),
               "--config.random_init=True", "--config.data.source=image_folder",
               f"--config.data.data_dir={tmp_path / 'data'}", "--config.num_classes=-1",
               "--config.test_split=val", "--config.linear.num_epochs=2",
               "--config.linear.image_size=32", "--config.linear.resize_size=36",
               f"--output_dir={out}", "--noprogress"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(repo))
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "relicv2 linear_eval: top1=" in done.stdout
    record = results.read_result(str(out), "linear_eval")
    assert record["metrics"]["num_examples"] == 4
    head = keras.models.load_model(out / "linear_head.keras")
    assert head.output_shape == (None, 2)
