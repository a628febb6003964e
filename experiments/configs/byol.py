"""BYOL, ResNet-50, ImageNet, 1000 epochs (Grill et al. 2020, section 3.3 and appendix C).

LARS (biases and batch norm excluded from decay and adaptation), base learning rate 0.2 x B/256,
weight decay 1.5e-6, 10 warm-up epochs then cosine decay, batch 4096, target EMA 0.996 -> 1,
projector and predictor MLPs 4096 -> 256, two 224 px views with BYOL's augmentations
(`data.augmentation = "byol"`, its Table 6; sources in relicv2_tf/data/augment_tables.py).
"""

from experiments.configs import common


def get_config():
    config = common.imagenet_pretraining("byol")
    config.training.target_ema_schedule = "cosine"  # tau_base -> 1 (section 3.3)
    config.training.base_target_ema = 0.996
    return config
