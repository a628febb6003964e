"""Transfer to the paper's classification datasets: linear and fine-tuned (ReLICv2 appendix B.3).

  relicv2-transfer --config=experiments/configs/transfer.py \
      --config.encoder_dir=runs/r50/encoder --config.datasets=cifar10,oxford_iiit_pet \
      --output_dir=runs/r50/transfer

Datasets come from TFDS (`data.data_dir` = TFDS data_dir) except `aircraft` and `birdsnap`, read
as ImageFolders under `<image_folder_root>/<name>/{train,val,test}`. Hyper-parameters are swept on
a validation split (the dataset's, or `validation_fraction` of train held out), then the model is
retrained on train + validation and scored on test. The paper's sweep values were lost in
extraction; the grids below are ours (learning rate x weight decay for linear, learning rate for
fine-tuning). Linear transfer trains on centre-crop features without augmentation (as BYOL).
"""

import ml_collections

from experiments.configs import common
from relicv2_tf import config as config_lib


def get_config():
    config = common.evaluation()
    config.datasets = ("food101,cifar10,cifar100,sun397,dtd,cars196,oxford_iiit_pet,caltech101,"
                       "oxford_flowers102")
    config.protocol = "linear"  # linear | finetune | both
    config.data = config_lib.get_default_config().data  # source / tfds_name / split set per set
    config.image_folder_root = ""  # <root>/aircraft/{train,val,test}/<class>/...
    config.validation_fraction = 0.2
    config.eval_batch_size = 256
    config.linear = ml_collections.ConfigDict()
    config.linear.batch_size = 256
    config.linear.num_epochs = 30
    config.linear.momentum = 0.9
    config.linear.nesterov = True
    config.linear.schedule = "cosine"
    config.linear.image_size = 224
    config.linear.resize_size = 256
    config.linear_sweep = ml_collections.ConfigDict()
    config.linear_sweep.learning_rate = (0.01, 0.1, 1.0)
    config.linear_sweep.weight_decay = (0.0, 1e-5, 1e-4, 1e-3)
    config.finetune = ml_collections.ConfigDict()
    config.finetune.batch_size = 64
    config.finetune.num_epochs = 20
    config.finetune.decay_epochs = (12, 16)
    config.finetune.decay_factor = 0.2
    config.finetune.weight_decay = 1e-5
    config.finetune.momentum = 0.9
    config.finetune.nesterov = True
    config.finetune.image_size = 224
    config.finetune_sweep = ml_collections.ConfigDict()
    config.finetune_sweep.learning_rate = (0.01, 0.03, 0.1)
    return config
