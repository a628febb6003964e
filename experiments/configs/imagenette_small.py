"""The baselines on Imagenette at 64 px (2,000 images, 300 steps): a CPU run in about 2 minutes.

  relicv2-pretrain --config=experiments/configs/imagenette_small.py:byol --workdir=runs/byol
  relicv2-pretrain --config=experiments/configs/imagenette_small.py:byol,bg_rm \
      --config.data.mask_dir=/path/to/imagenette_masks --workdir=runs/byol_bg_rm

The argument is "<method>[,<background variant>]", method in byol | moco_v2 | swav | simclr,
variant in bg_rm | bg_random | bg_swaps. Each method starts from its paper config
(experiments/configs/<method>.py) and shrinks only what the budget forces, identically for all:
2,000 training images (evenly spread over the 10 classes), 64 px large views (SwAV: plus 2 small
32 px crops instead of 6 x 96), ResNet-18 at width 0.25, heads 512 -> 128, batch 64, 300 steps
(about 10 epochs), 1 warm-up epoch. Method-specific changes for such short runs are listed in
`SHORT_RUN`: EMA / key momentum 0.99 (0.996 / 0.999 barely move the target in 300 steps), a
MoCo queue of 1,024 keys and 100 SwAV prototypes (2,000 images cannot fill 65,536 keys or
need 3,000 clusters), SimCLR temperature 0.5.
"""

import importlib

from experiments.configs.background_augmentations import with_background

IMAGENETTE_DIR = "../shared/data/imagenette"
SHORT_RUN = {
    "byol": {"training.base_target_ema": 0.99},
    "moco_v2": {"training.base_target_ema": 0.99, "loss.queue_size": 1024},
    "swav": {"loss.num_prototypes": 100, "loss.queue_size": 0, "loss.freeze_prototypes_steps": 31,
             "data.num_small_views": 2},
    "simclr": {"loss.temperature": 0.5},
}


def _set(config, dotted, value):
    *path, leaf = dotted.split(".")
    for part in path:
        config = config[part]
    config[leaf] = value


def get_config(spec="byol"):
    method, *variant = spec.split(",")
    if method not in SHORT_RUN:
        raise ValueError(f"imagenette_small.py:{spec}: method {method!r} is not one of "
                         f"{sorted(SHORT_RUN)}.")
    config = importlib.import_module(f"experiments.configs.{method}").get_config()
    config.data.source = "image_folder"
    config.data.tfds_name = ""
    config.data.data_dir = IMAGENETTE_DIR
    config.data.num_examples = 2000
    config.data.cache = True
    config.data.shuffle_buffer = 2000
    config.data.image_size = 64
    config.data.small_image_size = 32
    config.model.depth = 18
    config.model.width_multiplier = 0.25
    config.model.synchronized_bn = False
    config.model.projector_hidden_dim = 512
    config.model.projector_output_dim = 128
    config.model.predictor_hidden_dim = 512
    config.training.batch_size = 64
    config.training.max_steps = 300
    config.training.checkpoint_every_steps = 100
    config.training.log_every_steps = 10
    config.training.mixed_precision = ""
    config.training.jit_compile = False
    config.optimizer.warmup_epochs = 1
    for key, value in SHORT_RUN[method].items():
        _set(config, key, value)
    if variant:
        config = with_background(config, variant[0])
    return config
