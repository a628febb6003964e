"""Supervised baseline on scikit-learn's digits (seconds on a CPU).

  relicv2-supervised --config=experiments/configs/supervised_demo.py --output_dir=runs/sup_demo
"""

import ml_collections

from relicv2_tf import config as config_lib


def get_config():
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict({"depth": 18, "width_multiplier": 0.25})
    config.seed = 0
    config.num_classes = 10
    config.data = config_lib.get_default_config().data
    config.data.source = "digits"
    config.train_split = "train"
    config.test_split = "test"
    config.eval_batch_size = 256
    config.resize_size = 32
    config.supervised = ml_collections.ConfigDict()
    config.supervised.batch_size = 128
    config.supervised.num_epochs = 10
    config.supervised.base_learning_rate = 0.1  # x batch / 256
    config.supervised.weight_decay = 1e-4
    config.supervised.momentum = 0.9
    config.supervised.nesterov = True
    config.supervised.schedule = "cosine"
    config.supervised.decay_epochs = ()
    config.supervised.decay_factor = 0.1
    config.supervised.image_size = 32
    config.supervised.shuffle_buffer = 2048
    config.supervised.checkpoint_every_steps = 100
    return config
