"""The saliency pipeline over all of Imagenette (`common.data_path("imagenette")`) in about
15-30 minutes on 2 cores.

    C=experiments/configs/saliency_imagenette.py
    relicv2-saliency --config=$C --stage=priors      # the subset's priors (figure, evaluate)
    relicv2-saliency --config=$C --stage=generate --num_workers=2 --worker_index=0 &
    relicv2-saliency --config=$C --stage=generate --num_workers=2 --worker_index=1
    relicv2-saliency --config=$C --stage=evaluate

Mask source: `generate.source = "fused_priors"`, the mean of the four handcrafted priors (RBD,
MR, DSR, MC) computed on every image at 160 px. The paper's source, the saliency network
(`--config.generate.source=network`, after `--stage=refine
--config.network.encoder_dir=<pretrain workdir>/encoder`), does not reach the fused priors at
this scale: on the saliency dev set they have the best S-measure and max F on every folder, and
every network trained from them loses against the prior it learns from; the fused priors need
no refine stage and no encoder. The measurements (dev-set scores per stage, the cost per image)
are in docs/SALIENCY.md ("Stage by stage on the dev set, and the mask source").

Sizes (same structure as saliency_imagenet.py, shrunk for 2 CPU cores; the paper's values are
in that file's docstring):
  priors    800 random train images at 160 px (whole image, square resize), 4 priors, 2 processes
  refine    (source=network only) the final network trained 20 epochs on the mean of the 800
            images' priors, no stage-1 rounds (`refine.rounds=0`), F-measure loss with
            beta^2 = 0.3 (the evaluation's F-beta), batch 16, Adam 2e-3; with rounds > 0, each
            round is 5 epochs at 1e-3 doubled each round (ReLICv2)
  generate  all 9,469 train + 3,925 val images -> 16 + 16 TFRecord shards, masks at image size
  evaluate  label-free check on 600 val images at 128 px
The network settings (for `generate.source=network`) are the best of those measured on the dev
set with the same priors and encoder (docs/SALIENCY.md): no stage-1 rounds, F-measure loss with
beta^2 = 0.3.

Expected stage times for a ResNet-18 x0.25 encoder on 2 CPU cores (wall = CPU seconds / 2 when
both cores are free, about twice that under load; docs/SALIENCY.md, "Measured figures"):
  priors    ~60 ms CPU / image at 160 px           x 800     -> ~1 min
  refine    10-20 ms / image-epoch on one core at 160 px x 800 x 20 -> ~3-6 min
  generate  fused priors: ~41 ms CPU / image x 13,394 -> ~10 min (~5 min with two workers);
            network: 15 ms CPU / image x 13,394 -> ~3.5 min
  evaluate  priors at 128 px + 3 x 8 classifier fits on 600 images -> ~1-2 min
A smoke run of every stage (a handful of images, see docs/SALIENCY.md) checks the config
end to end in under two minutes.
"""

import os

from experiments.configs import common, saliency_imagenet

# `saliency_imagenette.py:network_v1`: the settings of the Imagenette benchmark's mask set
# (experiments/imagenette64.py; the set's id is in docs/results/imagenette64.md): DeepUSPS-style
# refinement, 3 rounds of 5 epochs from the encoder, BCE, the network as the source, so that a
# session without masks remakes the same set and every record stays comparable.
NETWORK_V1 = {"refine.rounds": 3, "refine.epochs_per_round": 5, "refine.learning_rate": 1e-3,
              "refine.learning_rate_growth": 2.0, "refine.batch_size": 16,
              "refine.prediction_ema": 0.5, "refine.reset_each_round": False,
              "refine.loss": "bce", "final.epochs": 20, "final.learning_rate": 2e-3,
              "final.fusion_threshold": -1.0, "final.loss": "bce",
              "generate.source": "network"}
VARIANTS = {"": {}, "network_v1": NETWORK_V1}


def get_config(variant=""):
    if variant not in VARIANTS:
        raise ValueError(f"saliency_imagenette.py:{variant}: not one of {sorted(VARIANTS)}.")
    imagenette = common.data_path("imagenette")  # $RELICV2_DATA_ROOT or ../shared/data
    config = saliency_imagenet.get_config()
    config.workdir = "/tmp/relicv2_saliency_imagenette"
    config.data.data_dir = os.path.join(imagenette, "train")
    config.data.subset_size = 800
    config.data.image_size = 160  # multiple of 32 (decoder); Imagenette images are 224 px
    config.priors.num_workers = 2
    config.network.encoder_dir = ""  # required: <pretrain workdir>/encoder
    config.network.allow_random_init = False
    config.network.depth = 18  # used only with allow_random_init (the encoder sets its own)
    config.network.width_multiplier = 0.25
    config.network.decoder_channels = 32
    # no stage-1 rounds: they lost quality on the dev set with BCE and with the F-measure loss
    # (docs/SALIENCY.md); with rounds > 0: 5 epochs per round (CPU budget; DeepUSPS: 25)
    config.refine.rounds = 0
    config.refine.epochs_per_round = 5
    config.refine.learning_rate = 1e-3  # assumed for a few-epoch CPU run (DeepUSPS: 1e-6)
    config.refine.learning_rate_growth = 2.0  # paper: doubled each round
    config.refine.batch_size = 16
    config.refine.prediction_ema = 0.5
    config.refine.reset_each_round = False
    config.refine.loss = "bce"
    config.final.epochs = 20
    config.final.learning_rate = 2e-3
    config.final.fusion_threshold = -1.0  # the soft mean of the priors is the target
    config.final.loss = "f_measure"  # DeepUSPS' loss; better than BCE on the dev set
    config.final.f_beta_squared = 0.3  # the evaluation's F-beta; better than 1 and 4 here
    config.generate.source = "fused_priors"  # better S-measure than any network here
    config.generate.data_root = imagenette
    config.generate.splits = ("train", "val")
    config.generate.output_dir = "/tmp/relicv2_saliency_imagenette/masks"
    config.generate.num_shards = 16
    config.generate.batch_size = 64
    config.evaluate.data_dir = os.path.join(imagenette, "val")
    config.evaluate.num_images = 600
    config.evaluate.image_size = 128
    return common.set_fields(config, VARIANTS[variant])
