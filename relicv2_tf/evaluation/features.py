"""The one feature extractor: a frozen encoder (batch norm in inference mode) over images.

Every protocol, the kNN monitor and the saliency pipeline's label-free check extract features
here. Under a tf.distribute strategy with several replicas each batch is split over them
(`engine.replica_shards`) and the features are gathered back in order, so extraction uses every
device and gives the features one device would.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from relicv2_tf.data import normalize
from relicv2_tf.evaluation import batches, engine

_INFERENCE_FUNCTIONS = weakref.WeakKeyDictionary()


def inference_function(encoder, strategy=None):
    """A cached function images -> encoder(images, training=False) (one trace per encoder and
    strategy)."""
    strategy = strategy or tf.distribute.get_strategy()
    functions = _INFERENCE_FUNCTIONS.setdefault(encoder, {})
    if id(strategy) in functions:
        return functions[id(strategy)]
    if strategy.num_replicas_in_sync == 1:
        forward = tf.function(lambda images: encoder(images, training=False),
                              reduce_retracing=True)
    else:
        @tf.function(reduce_retracing=True)
        def distributed(images):
            features = strategy.run(lambda x: encoder(x, training=False), args=(images,))
            return strategy.gather(features, axis=0)

        def forward(images):
            return distributed(*engine.replica_shards(strategy, images))
    functions[id(strategy)] = forward
    return forward


def extract_features(encoder, image_batches, *, num_batches: int | None = None,
                     progress: bool = True, description: str = "features", strategy=None):
    """Runs the frozen encoder over (normalised images, labels) batches.

    Returns (features float32 [N, D], labels int32 [N]).
    """
    forward = inference_function(encoder, strategy)
    bar = keras.utils.Progbar(num_batches, unit_name=description) if progress else None
    features, labels = [], []
    for i, (images, batch_labels) in enumerate(image_batches):
        features.append(np.asarray(forward(images)))
        labels.append(np.asarray(batch_labels))
        if bar is not None:
            bar.update(i + 1)
    if not features:
        raise ValueError(f"No examples to extract {description} from: the dataset is empty.")
    return (np.concatenate(features).astype(np.float32),
            np.concatenate(labels).astype(np.int32))


def centre_crop_features(encoder, examples, *, batch_size: int, image_size: int = 224,
                         resize_size: int = 256, progress: bool = True,
                         description: str = "features", strategy=None):
    """(features, labels) of (uint8 image, label) examples, from their test-time centre crops
    (`batches.eval_batches`)."""
    return extract_features(encoder, batches.eval_batches(examples, batch_size, image_size,
                                                          resize_size),
                            progress=progress, description=description, strategy=strategy)


def image_array_features(encoder, images01, *, batch_size: int = 256, progress: bool = False,
                         description: str = "features", strategy=None) -> np.ndarray:
    """Features [N, D] of images already cropped, float [N, S, S, 3] in [0, 1] (normalised
    here): composed background variants, the saliency pipeline's masked images."""
    images01 = np.asarray(images01, np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images01, np.zeros(len(images01), np.int32)))
    dataset = dataset.batch(batch_size).map(lambda x, y: (normalize.normalize_images(x), y))
    return extract_features(encoder, dataset, progress=progress, description=description,
                            strategy=strategy)[0]
