"""Linear evaluation: metric extremes, frozen encoder, resume, head format, kNN monitor."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf.evaluation import engine, knn, linear, linear_head
from relicv2_tf.models import resnet

NUM_CLASSES = 3


def colour_examples(per_class=8, size=20, seed=0):
    """Class c = an image whose channel c is bright: separable by mean colour alone."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(NUM_CLASSES):
        for _ in range(per_class):
            image = rng.integers(0, 60, size=(size, size, 3))
            image[..., c] += 180
            images.append(image.astype(np.uint8))
            labels.append(c)
    return np.stack(images), np.array(labels, np.int32)


def dataset(images, labels):
    return tf.data.Dataset.from_tensor_slices((images, labels))


def mean_colour_encoder():
    """A 'perfect' encoder for colour_examples: the mean colour."""
    images = keras.Input((None, None, 3))
    return keras.Model(images, keras.layers.GlobalAveragePooling2D()(images))


def constant_encoder():
    images = keras.Input((None, None, 3))
    features = keras.layers.GlobalAveragePooling2D()(images)
    return keras.Model(images, keras.layers.Dense(
        4, kernel_initializer="zeros", bias_initializer="ones", trainable=False)(features))


ARGS = dict(num_classes=NUM_CLASSES, batch_size=8, learning_rate=0.5, image_size=16,
            resize_size=18, progress=False)


@pytest.mark.parametrize("augment", [False, True])
def test_perfect_encoder_reaches_100_percent(augment):
    images, labels = colour_examples()
    _, metrics, _ = linear.linear_eval(mean_colour_encoder(), dataset(images, labels),
                                       dataset(images, labels), num_epochs=15, augment=augment,
                                       **ARGS)
    assert metrics["top1"] == 1.0
    assert metrics["mean_per_class_accuracy"] == 1.0


def test_constant_encoder_reaches_chance():
    images, labels = colour_examples()
    _, metrics, _ = linear.linear_eval(constant_encoder(), dataset(images, labels),
                                       dataset(images, labels), num_epochs=3, augment=False,
                                       **ARGS)
    # Constant features -> one predicted class for every image: 1/3 on balanced classes.
    assert metrics["top1"] == pytest.approx(1 / NUM_CLASSES)
    assert metrics["mean_per_class_accuracy"] == pytest.approx(1 / NUM_CLASSES)


@pytest.fixture(scope="module")
def tiny_resnet():
    keras.utils.set_random_seed(0)
    return resnet.resnet(18, 0.25)


def test_encoder_and_batch_norm_statistics_stay_frozen(tiny_resnet):
    images, labels = colour_examples(per_class=4, size=36)
    before = [w.copy() for w in tiny_resnet.get_weights()]
    head, info = linear.train_linear_head(tiny_resnet, dataset(images, labels), num_epochs=1,
                                          augment=True, **{**ARGS, "image_size": 32,
                                                           "resize_size": 36})
    assert info["steps_per_epoch"] == 2
    for a, b in zip(before, tiny_resnet.get_weights()):
        np.testing.assert_array_equal(a, b)  # includes BN moving mean / variance


@pytest.mark.parametrize("augment", [False, True])
def test_resume_after_interruption_reproduces_final_state(tmp_path, augment):
    images, labels = colour_examples(per_class=6)
    args = dict(ARGS, num_epochs=3, augment=augment, seed=5, checkpoint_every_steps=2)
    train = dataset(images, labels)  # 18 examples / batch 8 -> 3 steps per epoch, 9 steps
    reference, _ = linear.train_linear_head(mean_colour_encoder(), train,
                                            checkpoint_dir=str(tmp_path / "ref"), **args)
    encoder = mean_colour_encoder()
    _, info = linear.train_linear_head(encoder, train, checkpoint_dir=str(tmp_path / "run"),
                                       stop_after_steps=4, **args)  # mid-epoch 2
    assert info["stopped_at_step"] == 4
    resumed, info = linear.train_linear_head(encoder, train,
                                             checkpoint_dir=str(tmp_path / "run"), **args)
    assert info["stopped_at_step"] is None
    for a, b in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_head_file_format(tmp_path):
    head = linear_head.make_linear_head(16, 7)
    path = linear_head.save_head(head, str(tmp_path))
    assert path.endswith("linear_head.keras")
    loaded = keras.models.load_model(path)
    assert loaded.layers[-1].name == "linear_head"
    assert loaded.input_shape == (None, 16) and loaded.output_shape == (None, 7)
    x = np.random.default_rng(0).normal(size=(2, 16)).astype(np.float32)
    np.testing.assert_allclose(loaded(x), head(x), rtol=1e-6)


def test_step_schedule_boundaries():
    schedule = engine.learning_rate_schedule(1.0, 100, "step", [10, 20], 0.2)
    assert float(schedule(5)) == pytest.approx(1.0)
    assert float(schedule(15)) == pytest.approx(0.2)
    assert float(schedule(25)) == pytest.approx(0.04)


class PretrainStandIn(keras.Model):
    """Stands in for a pretraining model: exposes `online_encoder`, trains a head on top."""

    def __init__(self, encoder):
        super().__init__()
        self.online_encoder = encoder
        self.classifier = keras.layers.Dense(NUM_CLASSES)

    def call(self, images, training=False):
        return self.classifier(self.online_encoder(images, training=training))


def test_knn_monitor_logs_knn_top1_for_csv_logger(tmp_path):
    images, labels = colour_examples(per_class=5, size=8)
    normalised = (images.astype(np.float32) / 255.0)
    batches = tf.data.Dataset.from_tensor_slices((normalised, labels)).batch(6)
    encoder = mean_colour_encoder()
    model = PretrainStandIn(encoder)
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    monitor = knn.KNNMonitor(batches, batches, NUM_CLASSES, every_n_epochs=2, k=3)
    log_path = tmp_path / "log.csv"
    model.fit(batches, epochs=2, verbose=0,
              callbacks=[monitor, keras.callbacks.CSVLogger(str(log_path))])
    rows = list(csv.DictReader(log_path.open()))
    assert "knn_top1" in rows[-1]
    features = encoder(normalised).numpy()
    expected = knn.knn_accuracy(features, labels, features, labels, NUM_CLASSES, k=3)
    assert float(rows[-1]["knn_top1"]) == pytest.approx(expected)
    assert expected == 1.0  # the colour features separate the classes
    assert len(monitor.history) == 1 and monitor.history[0][0] == 1
