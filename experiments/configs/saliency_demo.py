"""A CPU-sized run of the saliency pipeline on ../shared/data/imagenette (minutes, 2 cores).

    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=priors
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=refine
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=generate
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=evaluate

Same structure as saliency_imagenet.py; small subset, 128 px, a tiny ResNet-18 x0.25 and
learning rates that move a small network in a few epochs. Pass
--config.network.encoder_dir=<pretrain workdir>/encoder to start from a self-supervised encoder
(then set allow_random_init=False); random init is the fallback when none exists yet.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "saliency_imagenet", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                      "saliency_imagenet.py"))
_paper = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_paper)

_IMAGENETTE = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                            "..", "..", "..", "shared", "data", "imagenette"))


def get_config():
    config = _paper.get_config()
    config.workdir = "/tmp/relicv2_saliency_demo"
    config.data.data_dir = os.path.join(_IMAGENETTE, "train")
    config.data.subset_size = 400
    config.data.image_size = 128
    config.network.allow_random_init = True
    config.network.depth = 18
    config.network.width_multiplier = 0.25
    config.network.decoder_channels = 32
    config.refine.rounds = 3
    config.refine.epochs_per_round = 3
    config.refine.learning_rate = 2e-3
    config.refine.batch_size = 16
    config.refine.prediction_ema = 0.5
    config.final.epochs = 24
    config.final.learning_rate = 2e-3
    config.generate.data_root = _IMAGENETTE
    config.generate.splits = ("train", "val")
    config.generate.output_dir = "/tmp/relicv2_saliency_demo/masks"
    config.generate.num_shards = 16
    config.generate.batch_size = 64
    config.evaluate.data_dir = os.path.join(_IMAGENETTE, "val")
    config.evaluate.num_images = 600
    config.evaluate.image_size = 128
    return config
