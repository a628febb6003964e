"""Backgrounds Challenge (ImageNet-9, Xiao et al. 2020): accuracy on original / only_fg /
mixed_same / mixed_rand / mixed_next and BG-gap = mixed_same - mixed_rand.

  # ImageNet-9 as published (<root>/<variant>/val/<class>/...), ImageNet head + in_to_in9.json:
  relicv2-backgrounds --config=experiments/configs/backgrounds_imagenet9.py \
      --config.encoder_dir=runs/r50/encoder --config.head=imagenet \
      --config.head_path=runs/r50/linear/linear_head.keras --config.in_to_in9=in_to_in9.json \
      --config.imagenet9_root=data/bg_challenge --output_dir=runs/r50/backgrounds
  # the same five variants composed from any dataset with masks (here: the digits' ink masks),
  # with a 9/10-way linear head trained on the original training images:
  relicv2-backgrounds --config=experiments/configs/backgrounds_imagenet9.py \
      --config.mode=masks --config.data.source=digits --config.test_split=test \
      --config.image_size=32 --config.resize_size=32 --config.encoder_dir=runs/demo/encoder \
      --output_dir=runs/demo/backgrounds
"""

import ml_collections

from experiments.configs import common
from relicv2_tf import config as config_lib


def get_config():
    config = common.evaluation()
    config.mode = "imagenet9"  # imagenet9 (ImageFolder root) | masks (compose from masks)
    config.imagenet9_root = ""
    config.imagenet9_split = "val"
    config.head = "train"  # train: linear probe on original training images | imagenet
    config.head_path = ""  # for head == imagenet: linear_head.keras of ImageNet linear eval
    config.in_to_in9 = ""  # for head == imagenet: the challenge's in_to_in9.json
    config.data = config_lib.get_default_config().data  # for mode == masks (needs `mask`)
    config.train_split = "train"
    config.test_split = "validation"
    config.num_classes = -1  # -1 = infer
    config.batch_size = 128
    config.image_size = 224
    config.resize_size = 256
    config.linear = ml_collections.ConfigDict()
    config.linear.batch_size = 256
    config.linear.num_epochs = 30
    config.linear.learning_rate = 0.5
    config.linear.momentum = 0.9
    config.linear.nesterov = True
    config.linear.schedule = "cosine"
    return config
