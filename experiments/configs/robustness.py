"""Robustness / OOD evaluation, zero-shot with the ImageNet linear head (ReLICv2 section 4.1, B.4).

  relicv2-robustness --config=experiments/configs/robustness.py \
      --config.encoder_dir=runs/r50/encoder --config.head_path=runs/r50/linear/linear_head.keras \
      --output_dir=runs/r50/robustness

`datasets` names groups: imagenet_v2 (3 variants), imagenet_c (15 corruptions x 5 severities,
reported as their mean top-1), imagenet_r, imagenet_sketch, imagenet_a (TFDS), objectnet
(ImageFolder only). A non-empty `image_folders.<name>` reads that set from an ImageFolder instead of
TFDS (folder names = wnids, or class indices for ImageNetV2; for imagenet_v2 the folder holds one
sub-folder per variant named as in TFDS). ObjectNet needs `objectnet_class_map`, a JSON
{folder: [wnid, ...]} of its ImageNet-overlapping classes.
"""

import ml_collections

from experiments.configs import common


def get_config():
    config = common.evaluation()
    config.head_path = ""  # linear_head.keras written by relicv2-linear-eval on ImageNet
    config.datasets = "imagenet_v2,imagenet_c,imagenet_r,imagenet_sketch,imagenet_a"
    config.tfds_data_dir = ""
    config.image_folders = ml_collections.ConfigDict({
        "imagenet_v2": "", "imagenet_r": "", "imagenet_a": "", "imagenet_sketch": "",
        "objectnet": ""})
    config.objectnet_class_map = ""
    config.wnids_file = ""  # 1000 wnids in label order; default: the TFDS imagenet2012 list
    config.num_examples = -1  # per test set; -1 = all
    config.batch_size = 256
    config.image_size = 224
    config.resize_size = 256
    return config
