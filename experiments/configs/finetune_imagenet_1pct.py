"""Semi-supervised fine-tuning on 1 % of the ImageNet labels (ReLICv2 appendix B.2).

  relicv2-finetune --config=experiments/configs/finetune_imagenet_1pct.py \
      --config.encoder_dir=runs/r50/encoder --output_dir=runs/r50/semi_1pct

Label subset: the SimCLR split, TFDS `imagenet2012_subset/1pct` (or `subset_file`, one
id / file name per line, filtering `data`). Encoder + new linear head, SGD with Nesterov momentum
0.9, separate learning rates for encoder and head, step decay. Appendix B.2 lost its numbers in
extraction; the values here are SwAV's published semi-supervised recipe, which B.2 says it follows
for the two learning rates: 20 epochs, x0.2 at epochs 12 and 16, 1 %: encoder 0.02 / head 5.0,
batch 256, no weight decay (B.2 states none for 1 %).
"""

import ml_collections

from experiments.configs import common
from relicv2_tf import config as config_lib


def get_config():
    config = common.evaluation()
    config.num_classes = 1000
    config.data = config_lib.get_default_config().data  # the labelled training subset
    config.data.source = "tfds"
    config.data.tfds_name = "imagenet2012_subset/1pct"
    config.train_split = "train"
    config.subset_file = ""  # optional list of ids / file names kept from `data`
    config.test_data = config_lib.get_default_config().data
    config.test_data.source = "tfds"
    config.test_data.tfds_name = "imagenet2012"
    config.test_split = "validation"
    config.eval_batch_size = 256
    config.resize_size = 256
    config.finetune = ml_collections.ConfigDict()
    config.finetune.batch_size = 256
    config.finetune.num_epochs = 20
    config.finetune.encoder_learning_rate = 0.02
    config.finetune.head_learning_rate = 5.0
    config.finetune.decay_epochs = (12, 16)
    config.finetune.decay_factor = 0.2
    config.finetune.weight_decay = 0.0
    config.finetune.momentum = 0.9
    config.finetune.nesterov = True
    config.finetune.bn_training = True
    config.finetune.image_size = 224
    config.finetune.shuffle_buffer = 10_000
    config.finetune.checkpoint_every_steps = 500
    return config
