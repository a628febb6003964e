"""Weighted k-nearest-neighbour classifier on L2-normalised features (Wu et al. 2018).

Votes of the k most cosine-similar training examples are weighted by exp(similarity / T),
the protocol used as a cheap monitor of self-supervised representations (k=20, T=0.07).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from relicv2_tf.evaluation import features


def knn_predict(train_features, train_labels, query_features, num_classes: int,
                k: int = 20, temperature: float = 0.07, batch_size: int = 1024):
    """Returns class scores [Q, num_classes] for each query (argmax = prediction)."""
    train = tf.math.l2_normalize(tf.convert_to_tensor(train_features, tf.float32), axis=-1)
    labels = tf.one_hot(tf.convert_to_tensor(train_labels, tf.int32), num_classes)
    k = min(k, int(train.shape[0]))
    scores = []
    query_features = tf.convert_to_tensor(query_features, tf.float32)
    for start in range(0, int(query_features.shape[0]), batch_size):
        query = tf.math.l2_normalize(query_features[start:start + batch_size], axis=-1)
        similarity = tf.matmul(query, train, transpose_b=True)
        top_similarity, top_index = tf.math.top_k(similarity, k=k)
        weights = tf.exp(top_similarity / temperature)
        votes = tf.gather(labels, top_index) * weights[..., None]
        scores.append(tf.reduce_sum(votes, axis=1))
    return tf.concat(scores, axis=0).numpy()


def num_classes_of(*label_arrays) -> int:
    """Number of classes when only the labels are known: the largest label + 1."""
    return int(max(int(np.max(labels)) for labels in label_arrays) + 1)


def knn_accuracy(train_features, train_labels, query_features, query_labels,
                 num_classes: int, k: int = 20, temperature: float = 0.07) -> float:
    scores = knn_predict(train_features, train_labels, query_features, num_classes, k,
                         temperature)
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(query_labels)))


class KNNMonitor(keras.callbacks.Callback):
    """Logs the weighted kNN top-1 accuracy of `model.<encoder_attr>` as `knn_top1`.

    `train_dataset` / `test_dataset` yield batches of (normalised images, labels). Every
    `every_n_epochs` epochs, features of both are extracted in inference mode and the test set is
    classified by `knn_accuracy` (`num_classes` None: the largest label + 1). The value is
    written into the epoch's `logs` dict (NaN on the epochs in between), so callbacks placed
    after this one in the list (TensorBoard, CSVLogger) and the progress bar record it.
    """

    def __init__(self, train_dataset, test_dataset, num_classes=None, every_n_epochs: int = 1,
                 k: int = 20, temperature: float = 0.07, encoder_attr: str = "online_encoder"):
        super().__init__()
        self.train_dataset = train_dataset
        self.test_dataset = test_dataset
        self.num_classes = num_classes
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.temperature = temperature
        self.encoder_attr = encoder_attr
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            if logs is not None:  # NaN keeps the column in CSVLogger's header from epoch 1
                logs["knn_top1"] = float("nan")
            return
        encoder = getattr(self.model, self.encoder_attr, None)
        if encoder is None:
            raise AttributeError(
                f"KNNMonitor: the model has no attribute {self.encoder_attr!r}; pass "
                f"encoder_attr= the name of its encoder (e.g. 'online_encoder').")
        train_features, train_labels = features.extract_features(encoder, self.train_dataset,
                                                                 progress=False)
        test_features, test_labels = features.extract_features(encoder, self.test_dataset,
                                                               progress=False)
        num_classes = self.num_classes or num_classes_of(train_labels, test_labels)
        accuracy = knn_accuracy(train_features, train_labels, test_features, test_labels,
                                num_classes, self.k, self.temperature)
        self.history.append((epoch, accuracy))
        if logs is not None:
            logs["knn_top1"] = accuracy
