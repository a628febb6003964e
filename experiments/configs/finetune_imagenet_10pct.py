"""Semi-supervised fine-tuning on 10 % of the ImageNet labels (ReLICv2 appendix B.2).

  relicv2-finetune --config=experiments/configs/finetune_imagenet_10pct.py \
      --config.encoder_dir=runs/r50/encoder --output_dir=runs/r50/semi_10pct

As the 1 % config, with SwAV's 10 % learning rates (encoder 0.01 / head 0.2). B.2 uses weight decay
for 10 % but its value was lost in extraction: 1e-5 here is our choice.
"""

from experiments.configs import finetune_imagenet_1pct


def get_config():
    config = finetune_imagenet_1pct.get_config()
    config.data.tfds_name = "imagenet2012_subset/10pct"
    config.finetune.encoder_learning_rate = 0.01
    config.finetune.head_learning_rate = 0.2
    config.finetune.weight_decay = 1e-5
    return config
