"""A CPU-sized run of the saliency pipeline on Imagenette ($RELICV2_DATA_ROOT/imagenette, default
../shared/data/imagenette; minutes, 2 cores).

    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=priors
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=refine
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=generate
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=evaluate

saliency_imagenette.py with a smaller subset at 128 px and learning rates that move a small
network in a few epochs. Unlike saliency_imagenette.py (which writes the fused priors), the demo
runs the paper's whole pipeline: three DeepUSPS stage-1 rounds per prior, then the masks of the
saliency network (network generation is also much faster than computing the priors of every
image). Pass
--config.network.encoder_dir=<pretrain workdir>/encoder to start from a self-supervised encoder
(then set allow_random_init=False); random init is the fallback when none exists yet.
"""

from experiments.configs import saliency_imagenette


def get_config():
    """saliency_imagenette.py on a 400-image subset at 128 px, from a random-init encoder."""
    config = saliency_imagenette.get_config()
    config.workdir = "/tmp/relicv2_saliency_demo"
    config.data.subset_size = 400
    config.data.image_size = 128
    config.network.allow_random_init = True
    config.refine.rounds = 3
    config.refine.epochs_per_round = 3
    config.refine.learning_rate = 2e-3
    config.final.epochs = 24
    config.final.loss = "bce"  # the loss of the demo's measured runs (docs/SALIENCY.md)
    config.generate.output_dir = "/tmp/relicv2_saliency_demo/masks"
    config.generate.source = "network"
    return config
