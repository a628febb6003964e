"""BYOL + BG_Random (Ryali et al. 2021): `byol.py` with the BG_Random probability of
`background_augmentations.PROBABILITIES` (assumed, see that module). Needs masks, e.g.
  --config.data.data_dir='/data/imagenet_masks/train-*'  (TFRecord shards from relicv2-saliency)
"""

from experiments.configs import byol
from experiments.configs.background_augmentations import with_background


def get_config():
    return with_background(byol.get_config(), "bg_random")
