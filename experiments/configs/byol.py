"""BYOL, ResNet-50, ImageNet, 1000 epochs (Grill et al. 2020, section 3.3 and appendix C).

LARS (biases and batch norm excluded from decay and adaptation), base learning rate 0.2 x B/256,
weight decay 1.5e-6, 10 warm-up epochs then cosine decay, batch 4096, target EMA 0.996 -> 1,
projector and predictor MLPs 4096 -> 256, two 224 px views with the BYOL augmentations.
"""

import ml_collections

from relicv2_tf import config as config_lib


def get_config():
    config = config_lib.get_default_config()
    config.method = "byol"
    config.data.source = "tfds"
    config.data.tfds_name = "imagenet2012"
    config.data.num_large_views = 2
    config.data.num_small_views = 0
    config.data.mask_apply_prob = 0.0  # ReLICv2's saliency masking is not part of BYOL
    config.model.depth = 50
    config.model.width_multiplier = 1
    config.model.projector_hidden_dim = 4096
    config.model.projector_output_dim = 256
    config.model.predictor_hidden_dim = 4096
    config.loss = ml_collections.ConfigDict()  # BYOL's loss has no parameters
    config.optimizer.base_learning_rate = 0.2
    config.optimizer.weight_decay = 1.5e-6
    config.optimizer.warmup_epochs = 10
    config.training.batch_size = 4096
    config.training.num_epochs = 1000
    config.training.base_target_ema = 0.996
    config.training.checkpoint_every_steps = 2500
    config.training.mixed_precision = "mixed_bfloat16"
    return config
