"""What the configs share, written once: setting dotted fields, the ImageNet pretraining setup
of every method, the encoder section of every evaluation protocol."""

import ml_collections

from relicv2_tf import config as config_lib


def set_fields(config, fields: dict):
    """config["a"]["b"] = value for every {"a.b": value} (the locked config refuses new keys)."""
    for dotted, value in fields.items():
        *path, leaf = dotted.split(".")
        section = config
        for part in path:
            section = section[part]
        section[leaf] = value
    return config


def imagenet_pretraining(method: str, *, num_large_views: int = 2, num_small_views: int = 0):
    """`method` on ImageNet from TFDS, with its own augmentation table and no ReLICv2 masking:
    the defaults of relicv2_tf/config.py (ReLICv2's recipe) for everything else, which each
    method config then changes where its paper differs."""
    config = config_lib.get_default_config()
    config.loss = ml_collections.ConfigDict()  # each method states its own loss fields
    return set_fields(config, {
        "method": method, "data.source": "tfds", "data.tfds_name": "imagenet2012",
        "data.augmentation": method, "data.num_large_views": num_large_views,
        "data.num_small_views": num_small_views, "data.mask_apply_prob": 0.0,
        "training.checkpoint_every_steps": 2500, "training.mixed_precision": "mixed_bfloat16"})


def evaluation(depth: int = 50, width_multiplier: float = 1.0):
    """The encoder every evaluation protocol reads: `encoder_dir` (written by relicv2-pretrain
    or relicv2-import), or with `random_init` a random-init encoder of `model` seeded by
    `seed`."""
    config = ml_collections.ConfigDict()
    config.encoder_dir = ""
    config.random_init = False
    config.model = ml_collections.ConfigDict({"depth": depth,
                                              "width_multiplier": width_multiplier})
    config.seed = 0
    return config
