"""SimCLR, ResNet-50, ImageNet, 1000 epochs (Chen et al. 2020, section 4 and appendix B.6).

LARS, learning rate 0.3 x B/256 (4.8 at batch 4096; the square-root rule 0.075 sqrt(B) is the
paper's alternative for small batches), weight decay 1e-6, 10 warm-up epochs then cosine decay,
batch 4096, NT-Xent temperature 0.1 (0.5 in the paper's shorter ablations), global batch norm,
MLP head 2048 -> 128, two 224 px views. No target network.
"""

import ml_collections

from relicv2_tf import config as config_lib


def get_config():
    config = config_lib.get_default_config()
    config.method = "simclr"
    config.data.source = "tfds"
    config.data.tfds_name = "imagenet2012"
    config.data.num_large_views = 2
    config.data.num_small_views = 0
    config.data.mask_apply_prob = 0.0
    config.model.depth = 50
    config.model.width_multiplier = 1
    config.model.synchronized_bn = True
    config.model.projector_hidden_dim = 2048
    config.model.projector_output_dim = 128
    config.loss = ml_collections.ConfigDict()
    config.loss.temperature = 0.1
    config.optimizer.base_learning_rate = 0.3
    config.optimizer.weight_decay = 1e-6
    config.optimizer.warmup_epochs = 10
    config.training.batch_size = 4096
    config.training.num_epochs = 1000
    config.training.checkpoint_every_steps = 2500
    config.training.mixed_precision = "mixed_bfloat16"
    return config
