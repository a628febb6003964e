"""ReLICv2, ResNet-50, ImageNet, 1000 epochs (Tomasev et al. 2022, section 3 and appendix B.1).

The paper's extracted text lost most numbers; values below are the BYOL recipe ReLICv2 states it
follows (LARS, cosine decay, 10 warm-up epochs, batch 4096, base lr 0.2 x B/256, weight decay
1.5e-6, EMA 0.996), plus ReLICv2's own: 4 x 224 px large + 2 x 96 px small views, saliency
masking p_m = 0.1 (Table 18), 10 sampled negatives (Table 21).
Masks: run `relicv2-saliency` first and point data.data_dir at its TFRecord shards, e.g.
  --config.data.source=tfrecord --config.data.data_dir='/data/imagenet_masks/train-*'
"""

from relicv2_tf import config as config_lib


def get_config():
    config = config_lib.get_default_config()
    config.data.source = "tfds"
    config.data.tfds_name = "imagenet2012"
    config.data.split = "train"
    config.data.image_size = 224
    config.data.small_image_size = 96
    config.data.num_large_views = 4
    config.data.num_small_views = 2
    config.data.mask_apply_prob = 0.1
    config.model.depth = 50
    config.model.width_multiplier = 1
    config.model.synchronized_bn = True
    config.loss.temperature = 0.2
    config.loss.alpha = 1.0
    config.loss.num_negatives = 10
    config.optimizer.base_learning_rate = 0.2
    config.optimizer.weight_decay = 1.5e-6
    config.optimizer.warmup_epochs = 10
    config.training.batch_size = 4096
    config.training.num_epochs = 1000
    config.training.base_target_ema = 0.996
    config.training.checkpoint_every_steps = 2500
    config.training.mixed_precision = "mixed_bfloat16"
    config.training.jit_compile = True
    return config
