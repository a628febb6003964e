"""MoCo-v2, ResNet-50, ImageNet, 200 epochs (Chen et al. 2020b, "Improved baselines with momentum
contrastive learning"; He et al. 2020).

SGD with momentum 0.9, learning rate 0.03 x B/256 with cosine decay and no warm-up, weight decay
1e-4 on every parameter, batch 256, key-encoder momentum m = 0.999 (constant), queue of 65,536
keys, InfoNCE temperature 0.2, MLP head 2048 -> 128, two 224 px views.
SGD is `relicv2_tf.optim.lars.LARS` with layer adaptation switched off for every variable and
nothing excluded from weight decay: its update v <- m v + lr (g + wd w), w <- w - v is PyTorch's
SGD with (coupled) L2 weight decay, which the MoCo code uses.
Deviations: the views use this code base's BYOL augmentation table (MoCo-v2: blur on 50 % of
views, no solarisation) and there is no Shuffle BN; the loss is symmetrised
(`loss.symmetric = False` gives the original asymmetric loss).
"""

import ml_collections

from relicv2_tf import config as config_lib


def get_config():
    config = config_lib.get_default_config()
    config.method = "moco_v2"
    config.data.source = "tfds"
    config.data.tfds_name = "imagenet2012"
    config.data.num_large_views = 2
    config.data.num_small_views = 0
    config.data.mask_apply_prob = 0.0
    config.model.depth = 50
    config.model.width_multiplier = 1
    config.model.synchronized_bn = False
    config.model.projector_hidden_dim = 2048
    config.model.projector_output_dim = 128
    config.loss = ml_collections.ConfigDict()
    config.loss.temperature = 0.2
    config.loss.queue_size = 65536
    config.loss.symmetric = True
    config.optimizer.base_learning_rate = 0.03
    config.optimizer.weight_decay = 1e-4
    config.optimizer.momentum = 0.9
    config.optimizer.warmup_epochs = 0
    config.optimizer.exclude_from_weight_decay = ()
    config.optimizer.exclude_from_layer_adaptation = (".",)  # every variable: plain SGD
    config.training.batch_size = 256
    config.training.num_epochs = 200
    config.training.base_target_ema = 0.999  # key-encoder momentum m, constant for MoCo
    config.training.checkpoint_every_steps = 5000
    return config
