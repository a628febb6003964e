"""ReLICv2, ResNet-50, ImageNet, 1000 epochs (Tomasev et al. 2022, section 3, appendices B, F, G).

Every value and its source is in docs/RECIPES.md, labelled "quoted" (the paper writes it),
"inferred" (read off a table or ablation: batch 4096, 1000 epochs, EMA 0.99, p_m 0.1, K = 10),
"code" or "assumed" (the ReLICv2 text we have lost the number: the optimiser is BYOL's);
tests/test_recipes_doc.py checks this file against it.

Saliency masking (p_m = 0.1, Table 18) needs a mask per image, so the data are the TFRecord
shards {image, mask, label, id} written by `relicv2-saliency` (priors -> refine -> generate over
the ImageNet train split). `data.data_dir` is deliberately empty: the run stops before training
until it points at them:
  relicv2-pretrain --config=experiments/configs/relicv2_r50_imagenet.py \
      --config.data.data_dir='/data/imagenet_masks/train-*' --workdir=... --strategy=tpu
To pretrain without masking, say so: --config.data.mask_apply_prob=0 (and then the TFDS source:
--config.data.source=tfds --config.data.tfds_name=imagenet2012).
kNN monitoring reads the labelled TFDS imagenet2012 train / validation splits.
"""

from experiments.configs import common
from relicv2_tf import config as config_lib


def get_config():
    # Every value not set here is relicv2_tf/config.py's default, which is ReLICv2's recipe:
    # ResNet-50, 4 x 224 + 2 x 96 px views (Table 16 augmentations), masking p 0.1, K = 10
    # negatives, constant target EMA 0.99, LARS, batch 4096, 1000 epochs (docs/RECIPES.md: the
    # text lost p, K, the EMA, the batch and the epochs; they are inferred from its ablations).
    config = config_lib.get_default_config()
    common.set_fields(config, {
        "data.source": "tfrecord",
        "data.data_dir": "",  # required: the relicv2-saliency shards, e.g. '/data/masks/train-*'
        "training.checkpoint_every_steps": 2500,
        "training.mixed_precision": "mixed_bfloat16",
        "training.jit_compile": True,
        "evaluation.knn_every_steps": 25_000,  # ~80 epochs at batch 4096
        "evaluation.knn_source": "tfds",
        "evaluation.knn_tfds_name": "imagenet2012",
        "evaluation.knn_data_dir": "",  # TFDS data_dir ("" = the TFDS default)
        "evaluation.knn_max_examples": 50_000})
    return config
