"""The end-of-pretraining check: kNN top-1 of the pretrained encoder vs a random-init one.

Both encoders have the same architecture and see the same centre-cropped images
(`preprocess_for_eval` at the pretraining resolution), so the gap measures what pretraining
learned, not the preprocessing.
"""

from __future__ import annotations

import keras
import numpy as np

from relicv2_tf.data import eval_preprocess, sources
from relicv2_tf.evaluation import knn, linear
from relicv2_tf.models import encoder_io

EVAL_SPLITS = {"digits": ("train", "test"), "synthetic": ("train", "test"),
               "image_folder": ("train", "val"), "tfds": ("train", "validation")}


def _features(encoder, data_config, split, image_size, max_examples, batch_size=256):
    examples = sources.make_source(data_config, split, shuffle_files=False)
    if max_examples > 0:
        examples = examples.take(max_examples)
    examples = examples.map(lambda e: (e["image"], e["label"]))
    resize_size = eval_preprocess.eval_resize_size(image_size)
    feats, labels = [], []
    for images, batch_labels in linear.eval_batches(examples, batch_size, image_size,
                                                    resize_size):
        feats.append(np.asarray(encoder(images, training=False)))
        labels.append(np.asarray(batch_labels))
    return np.concatenate(feats), np.concatenate(labels)


def compare_with_random_init(config, encoder_dir: str, k: int = 20, temperature: float = 0.07,
                             max_examples: int = 5000) -> dict:
    """kNN top-1 on the source's held-out split for the trained and a random-init encoder."""
    train_split, test_split = EVAL_SPLITS[config.data.source]
    image_size = config.data.image_size
    pretrained = encoder_io.load_encoder(encoder_dir)
    keras.utils.set_random_seed(config.seed)  # the same random-init encoder on every run
    random_init = encoder_io.build_encoder(encoder_io.encoder_config(config.model))
    result = {"k": k, "temperature": temperature, "train_split": train_split,
              "test_split": test_split, "image_size": image_size}
    for name, encoder in (("pretrained", pretrained), ("random_init", random_init)):
        train_x, train_y = _features(encoder, config.data, train_split, image_size, max_examples)
        test_x, test_y = _features(encoder, config.data, test_split, image_size, max_examples)
        num_classes = int(max(train_y.max(), test_y.max()) + 1)
        result[f"{name}_top1"] = knn.knn_accuracy(train_x, train_y, test_x, test_y,
                                                  num_classes, k, temperature)
        result["num_train"], result["num_test"] = len(train_y), len(test_y)
    return result
