"""MoCo-v2 + BG_RM (Ryali et al. 2021): `moco_v2.py` with the BG_RM probability of
`background_augmentations.PROBABILITIES` (assumed, see that module). Needs masks, e.g.
  --config.data.data_dir='/data/imagenet_masks/train-*'  (TFRecord shards from relicv2-saliency)
"""

from experiments.configs import moco_v2
from experiments.configs.background_augmentations import with_background


def get_config():
    return with_background(moco_v2.get_config(), "bg_rm")
