"""What the configs share, written once: setting dotted fields, the ImageNet pretraining setup
of every method, the encoder section of every evaluation protocol."""

import os

import ml_collections

from relicv2_tf import config as config_lib

# The real-data benchmarks (Imagenette, the saliency dev set) read `imagenette/` and
# `saliency_dev/` under this folder: $RELICV2_DATA_ROOT when set (e.g. your own download of
# Imagenette), else ../shared/data beside the repository, where CI lays them out.
DATA_ROOT_ENV = "RELICV2_DATA_ROOT"
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def data_root() -> str:
    """The folder of the real-data sets (see DATA_ROOT_ENV); read at call time, not import."""
    return os.environ.get(DATA_ROOT_ENV) or os.path.normpath(
        os.path.join(_REPO, "..", "shared", "data"))


def data_path(*parts: str) -> str:
    """A path under `data_root()`, e.g. data_path("imagenette", "val")."""
    return os.path.join(data_root(), *parts)


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
    """`method` on ImageNet from TFDS, with its own loss section (its defaults in
    relicv2_tf/methods/__init__.py METHODS), its own augmentation table and no ReLICv2 masking:
    the defaults of relicv2_tf/config.py (ReLICv2's recipe) for everything else, which each
    method config then changes where its paper differs."""
    config = config_lib.get_default_config(method)
    return set_fields(config, {
        "data.source": "tfds", "data.tfds_name": "imagenet2012",
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
