"""Linear evaluation on ImageNet, the paper's protocol (ReLICv2 section 3, appendix B.1).

  relicv2-linear-eval --config=experiments/configs/linear_eval_imagenet.py \
      --config.encoder_dir=runs/relicv2_r50/encoder --output_dir=runs/relicv2_r50/linear

Frozen encoder and batch-norm statistics; random resized crop 224 + flip for training, resize 256
bicubic + centre crop 224 for testing; SGD with Nesterov momentum 0.9, no weight decay.
Appendix B.1 lost its numbers in extraction; appendix D.1, which states that it follows B.1, gives
100 epochs, batch 256, learning rate 0.5 and momentum 0.9, used here. The schedule is not stated:
cosine decay, as in BYOL's linear evaluation.
"""

import ml_collections

from experiments.configs import common
from relicv2_tf import config as config_lib


def get_config():
    config = common.evaluation()
    config.num_classes = 1000  # -1 = infer from the data source
    config.data = config_lib.get_default_config().data
    config.data.source = "tfds"
    config.data.tfds_name = "imagenet2012"
    config.train_split = "train"
    config.test_split = "validation"
    config.eval_batch_size = 256
    config.linear = ml_collections.ConfigDict()
    config.linear.batch_size = 256
    config.linear.num_epochs = 100
    config.linear.learning_rate = 0.5
    config.linear.momentum = 0.9
    config.linear.nesterov = True
    config.linear.schedule = "cosine"  # cosine | step | constant
    config.linear.decay_epochs = ()  # for schedule == "step"
    config.linear.decay_factor = 0.1
    config.linear.weight_decay = 0.0  # the paper uses none
    config.linear.augment = True  # False: centre-crop features computed once (fast, approximate)
    config.linear.image_size = 224
    config.linear.resize_size = 256
    config.linear.shuffle_buffer = 10_000
    config.linear.checkpoint_every_steps = 1000
    return config
