"""The Imagenette benchmark protocol (docs/results/imagenette64.md): every method on the full
Imagenette train split at 64 px, the same encoder, batch and number of epochs, each otherwise
on its paper recipe.

  relicv2-pretrain --config=experiments/configs/imagenette64.py:relicv2 --workdir=...
  relicv2-pretrain --config=experiments/configs/imagenette64.py:byol,bg_rm --workdir=...
  python experiments/imagenette64.py            # runs / resumes every cell, writes the table

The argument is "<method>[,<variant>]": method in relicv2 | byol | moco_v2 | simclr | swav,
variant in bg_rm | bg_random | bg_swaps (MoCo-v2 and SimCLR only), or one of the ReLICv2
ablations and controls (`RELICV2_VARIANTS`, ReLICv2 Tables 18-19 at this scale):
  nomask   no saliency masking
  placebo  masks replaced by a centred box of the same area as each image's mask (Table 19's
           "centered rectangle", matched in area), so masking changes the views as often and as
           much but carries no foreground information
  p03      mask-apply probability 0.3 (Table 18's dose axis; the recipe's is 0.1)
  better   the masks of the best source the dev-set measurement found (docs/SALIENCY.md)
  2views   2 large views, no small views, no masking: ReLICv2's loss on BYOL's views
or byol,ema099: BYOL with ReLICv2's constant target EMA 0.99 (instead of 0.996 -> 1 cosine).
The last two separate ReLICv2's loss from its views and EMA in the comparison with BYOL. Each
method starts from its paper config (experiments/configs/<paper config>.py: optimizer, loss,
heads, EMA, augmentation table) and this file changes only what the budget
forces, identically for all methods (`SHARED`), plus the few method settings that are sized for
ImageNet and cannot carry over to 9,469 images (`SMALL_DATA`, each with its reason). Masks:
`data.mask_dir` (PNG masks written by `relicv2-saliency --stage=generate` with
`generate.mask_folder`, see experiments/imagenette64.py); only configs that use masks read them.
"""

import importlib
import os

from experiments.configs import common
from experiments.configs.background_augmentations import with_background
from relicv2_tf.data.defaults import MASK_FEATURES

_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# Where experiments/imagenette64.py writes the saliency masks, <class>/<stem>.png for the train
# and val images together (their file names are distinct).
MASK_DIR = os.path.join(_ROOT, "runs", "imagenette64", "masks")
# The placebo masks (same layout): a centred box of each mask's area (experiments/imagenette64.py).
PLACEBO_MASK_DIR = os.path.join(_ROOT, "runs", "imagenette64", "masks_placebo")
# The best mask source of docs/SALIENCY.md, when it is not the network of MASK_DIR.
BETTER_MASK_DIR = os.path.join(_ROOT, "runs", "imagenette64", "masks_better")
TRAIN_EXAMPLES = 9469  # Imagenette train split (../shared/data/README.md)

PAPER_CONFIGS = {"relicv2": "relicv2_r50_imagenet", "byol": "byol", "moco_v2": "moco_v2",
                 "simclr": "simclr", "swav": "swav"}
# The budget: 2 CPU cores for the whole table (about 20 runs; each cell's training minutes are in
# docs/results/imagenette64.md).
EPOCHS = 15
BATCH_SIZE = 128
STEPS_PER_EPOCH = TRAIN_EXAMPLES // BATCH_SIZE  # 73 (the pipeline drops the last partial batch)

# The same for every method.
SHARED = {
    "data.source": "image_folder",
    "data.tfds_name": "",
    "data.split": "train",
    "data.cache": True,  # 9,469 decoded 224 px images: 1.4 GB
    "data.image_size": 64,
    "data.small_image_size": 28,  # 96 / 224 of the large views, as in ReLICv2 and SwAV
    "model.depth": 18,
    "model.width_multiplier": 0.25,
    "model.synchronized_bn": False,  # one device
    "training.batch_size": BATCH_SIZE,
    "training.num_epochs": EPOCHS,
    "training.max_steps": -1,
    "training.checkpoint_every_steps": STEPS_PER_EPOCH,
    "training.log_every_steps": STEPS_PER_EPOCH,
    "training.mixed_precision": "",
    "training.jit_compile": False,
    "training.deterministic": True,  # resumed runs equal uninterrupted ones
    # 1 epoch, ~7 % of the run (the papers warm up 10 of 800-1000 epochs, 1 %; a short run at
    # the papers' learning rates needs a longer ramp than 0.15 epoch: assumed).
    "optimizer.warmup_epochs": 1,
    "evaluation.knn_every_steps": 3 * STEPS_PER_EPOCH,  # learning curve: kNN every 3 epochs
    # The monitor reads the pretraining data's labelled splits (Imagenette train / val), not
    # the ImageNet TFDS splits the flagship ReLICv2 config names.
    "evaluation.knn_source": "",
    "evaluation.knn_data_dir": "",
    "evaluation.knn_tfds_name": "",
    "evaluation.knn_max_examples": -1,  # all 9,469 train / 3,925 val images
}

# Method settings sized for ImageNet that 9,469 images cannot carry (assumed, with the reason).
SMALL_DATA = {
    "relicv2": {},
    "byol": {},
    "moco_v2": {
        # 65,536 keys would hold each image ~7 times; the authors' CIFAR-10 demo uses 4,096
        # keys and m = 0.99 for short runs (m = 0.999 averages over ~1,000 steps, most of this
        # run).
        "loss.queue_size": 4096,
        "training.base_target_ema": 0.99,
        "loss.shuffle_bn_splits": 8,
    },
    "simclr": {
        # SimCLR's CIFAR-10 runs (appendix B.9) use temperature 0.5 at small batch sizes; 0.1 is
        # its batch-4096 ImageNet value.
        "loss.temperature": 0.5,
    },
    "swav": {
        # The authors' small-batch recipe (facebookresearch/swav
        # scripts/swav_200ep_bs256_pretrain.sh: batch 256, base_lr 0.6, 3,000 prototypes, a
        # queue of 3,840 from epoch 15 of 200), not the batch-4096 one: learning rate 0.6 per
        # 256; the queue from the same fraction of the run (15 / 200 of 15 epochs; from epoch 15
        # it would never be used). Sinkhorn epsilon 0.03, not 0.05: the authors' first
        # workaround (swav README, "Common issues") for a run whose loss sticks at
        # ln(prototypes) from the start: the authors' documented remedy, which did not prevent
        # the collapse here (docs/results/imagenette64.md, Reading, with the runs at 0.05); the
        # protocol keeps SwAV's crops.
        "optimizer.base_learning_rate": 0.6,
        "loss.queue_size": 3840,
        "loss.queue_start_epochs": 15 / 200 * EPOCHS,
        "loss.epsilon": 0.03,
    },
}
RELICV2_VARIANTS = ("nomask", "placebo", "p03", "better", "2views")
VARIANTS = RELICV2_VARIANTS + ("bg_rm", "bg_random", "bg_swaps", "ema099")


def imagenette_dir() -> str:
    """The Imagenette ImageFolder (`train/`, `val/`): common.data_root()/imagenette."""
    return common.data_path("imagenette")


def supervised_config():
    """The supervised baseline on the same budget: same encoder, 64 px, batch, epochs; the
    standard supervised recipe (experiments/configs/supervised_demo.py: SGD Nesterov 0.9,
    0.1 x B/256, weight decay 1e-4, cosine; random resized crop + flip)."""
    config = importlib.import_module("experiments.configs.supervised_demo").get_config()
    config.model.depth = SHARED["model.depth"]
    config.model.width_multiplier = SHARED["model.width_multiplier"]
    config.data.source = "image_folder"
    config.data.data_dir = imagenette_dir()
    config.data.num_examples = -1
    config.train_split, config.test_split = "train", "val"
    config.eval_batch_size = 256
    config.resize_size = 73  # 64 / 73 = 224 / 256
    config.supervised.batch_size = BATCH_SIZE
    config.supervised.num_epochs = EPOCHS
    config.supervised.base_learning_rate = 0.1
    config.supervised.image_size = SHARED["data.image_size"]
    config.supervised.shuffle_buffer = TRAIN_EXAMPLES
    config.supervised.checkpoint_every_steps = SHARED["training.checkpoint_every_steps"]
    return config


def get_config(spec="relicv2"):
    if spec == "supervised":  # for relicv2-supervised
        return supervised_config()
    method, *variants = spec.split(",")
    if method not in PAPER_CONFIGS:
        raise ValueError(f"imagenette64.py:{spec}: method {method!r} is not one of "
                         f"{sorted(PAPER_CONFIGS)}.")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or len(variants) > 1:
        raise ValueError(f"imagenette64.py:{spec}: give at most one variant of {VARIANTS}.")
    if variants and variants[0] in RELICV2_VARIANTS and method != "relicv2":
        raise ValueError(f"imagenette64.py:{spec}: {variants[0]!r} changes ReLICv2's saliency "
                         "masking or views; the other methods have no masking (use the bare "
                         "method name).")
    if variants == ["ema099"] and method != "byol":
        raise ValueError(f"imagenette64.py:{spec}: 'ema099' is BYOL with ReLICv2's EMA.")
    config = importlib.import_module(f"experiments.configs.{PAPER_CONFIGS[method]}").get_config()
    common.set_fields(config, {**SHARED, **SMALL_DATA[method]})
    config.data.data_dir = imagenette_dir()
    if method != "swav":  # SwAV's small crops are part of its recipe; ReLICv2 keeps its two
        config.data.num_small_views = 2 if method == "relicv2" else 0
    mask_dir = MASK_DIR
    variant = variants[0] if variants else ""
    if variant in ("nomask", "2views"):
        config.data.mask_apply_prob = 0.0
        if variant == "2views":
            config.data.num_large_views, config.data.num_small_views = 2, 0
    elif variant == "placebo":
        mask_dir = PLACEBO_MASK_DIR
    elif variant == "better":
        mask_dir = BETTER_MASK_DIR
    elif variant == "p03":
        config.data.mask_apply_prob = 0.3
    elif variant == "ema099":
        config.training.target_ema_schedule = "constant"
        config.training.base_target_ema = 0.99
    elif variant:
        config = with_background(config, variant)
    uses_masks = any(config.data[k] > 0 for k in MASK_FEATURES)
    config.data.mask_dir = mask_dir if uses_masks else ""
    return config
