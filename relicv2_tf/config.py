"""Default configuration shared by every entry point.

Configs are data: `experiments/configs/*.py` start from `get_default_config()` and change fields.
Keys are the argument names of what they build (`model.*` -> `models.resnet.resnet` and
`models.heads.mlp`, `loss.*` -> `losses.relicv2_loss`, `data.*` -> `data.views`...). The config is
locked after loading, so a misspelt key (`--config.data.imagesize=...`) stops the run at once.

Where the ReLICv2 paper's extracted text lost a number, the default is the BYOL recipe that
ReLICv2 states it follows (Grill et al. 2020, appendix C): LARS, base learning rate 0.2 x B/256,
weight decay 1.5e-6, 10 warm-up epochs, cosine decay, target EMA 0.996 -> 1, batch 4096.
"""

from __future__ import annotations

import ml_collections


def get_default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "relicv2"  # relicv2 | byol | moco_v2 | swav | simclr
    config.seed = 0

    # ---------------------------------------------------------------- data (relicv2_tf/data)
    data = config.data = ml_collections.ConfigDict()
    data.source = "digits"  # digits | image_folder | tfds | tfrecord | synthetic
    data.data_dir = ""  # ImageFolder root, TFRecord file pattern, or TFDS data_dir
    data.tfds_name = ""  # e.g. "imagenet2012" when source == "tfds"
    data.split = "train"
    data.image_size = 224  # large views (paper: 224)
    data.small_image_size = 96  # small views (paper: 96)
    data.num_large_views = 4  # L (paper: 4)
    data.num_small_views = 2  # S (paper: 2)
    data.mask_apply_prob = 0.1  # p_m, saliency masking of large views (paper Table 18: 0.1)
    data.mask_min_fraction = 0.1  # apply only if the mask covers at least this fraction
    data.bg_rm_prob = 0.0  # BG_RM (Ryali et al. 2021)
    data.bg_random_prob = 0.0  # BG_Random
    data.bg_swaps_prob = 0.0  # BG_Swaps
    data.shuffle_buffer = 10_000
    data.cache = False  # cache decoded images in memory (small datasets only)
    data.on_bad_image = "error"  # error | skip (skips are counted and logged)
    data.num_examples = -1  # limit the dataset (tests / demos); -1 = all
    data.large_crop_area_range = ()  # () = paper Table 16; (min, max) overrides (tiny images)
    data.small_crop_area_range = ()
    data.mask_dir = ""  # image_folder only: masks <mask_dir>/<class>/<stem>.png ("" = no masks)
    # Offload decoding + augmentation to a tf.data service ("grpc://host:port" of its dispatcher,
    # docs/SCALING.md); "" = in this process. Each worker processes its own part of every epoch.
    data.tf_data_service_address = ""

    # ---------------------------------------------------------------- model (relicv2_tf/models)
    model = config.model = ml_collections.ConfigDict()
    model.depth = 50
    model.width_multiplier = 1.0  # 1, 2, 4 in the paper; 0.25 for tiny test encoders
    model.bn_momentum = 0.9
    model.bn_epsilon = 1e-5
    model.synchronized_bn = True
    model.projector_hidden_dim = 4096
    model.projector_output_dim = 256
    model.predictor_hidden_dim = 4096

    # ---------------------------------------------------------------- loss (relicv2_tf/losses)
    loss = config.loss = ml_collections.ConfigDict()
    loss.temperature = 0.2  # tau
    loss.alpha = 1.0  # invariance weight
    loss.num_negatives = 10  # K; -1 = every other example of the global batch (paper Table 21)

    # ---------------------------------------------------------------- optimisation (relicv2_tf/optim)
    optim = config.optimizer = ml_collections.ConfigDict()
    optim.base_learning_rate = 0.2  # learning rate = base * global_batch / 256
    optim.weight_decay = 1.5e-6
    optim.momentum = 0.9
    optim.eeta = 1e-3
    optim.nesterov = False
    optim.warmup_epochs = 10
    optim.exclude_from_weight_decay = ("bias", "batchnorm", "beta", "gamma")
    optim.exclude_from_layer_adaptation = ("bias", "batchnorm", "beta", "gamma")

    # ---------------------------------------------------------------- training loop
    train = config.training = ml_collections.ConfigDict()
    train.batch_size = 4096  # global batch, split evenly across replicas
    train.num_epochs = 1000
    train.max_steps = -1  # overrides num_epochs when > 0
    train.base_target_ema = 0.996  # tau_base of the BYOL EMA schedule, annealed to 1
    train.checkpoint_every_steps = 1000
    train.keep_checkpoints = 3
    train.log_every_steps = 50
    train.steps_per_execution = 1
    train.jit_compile = False
    train.mixed_precision = ""  # "" | mixed_bfloat16 | mixed_float16
    train.synthetic_data = False  # constant random views instead of data.source: the model alone
    # Bit-identical reruns on the same machine and device count (tf op determinism; slower on
    # GPU). Without it, `seed` still fixes the initial weights and every augmentation.
    train.deterministic = False
    return config


SOURCES = ("digits", "synthetic", "image_folder", "tfds", "tfrecord")


def validate(config) -> None:
    """Checks a config once, at the boundary, with messages that name the field and the fix."""
    import glob
    import os
    import re

    from relicv2_tf.methods import METHODS
    from relicv2_tf.models import resnet

    def fail(message):
        raise ValueError(f"Invalid config: {message}")

    if config.method not in METHODS:
        fail(f"method={config.method!r}; choose one of {sorted(METHODS)} (--config.method=...).")
    d = config.data
    if d.source not in SOURCES:
        fail(f"data.source={d.source!r}; choose one of {SOURCES}.")
    if d.source == "image_folder" and not os.path.isdir(d.data_dir):
        fail(f"data.data_dir={d.data_dir!r} is not a directory; point it at an ImageFolder root "
             "(class sub-folders of images), e.g. --config.data.data_dir=/data/imagenette.")
    if d.source == "tfrecord" and not glob.glob(d.data_dir):
        fail(f"data.data_dir={d.data_dir!r} matches no TFRecord files; give a file pattern such "
             "as /data/masks/train-*.tfrecord (written by relicv2-saliency).")
    if d.source == "tfds" and not d.tfds_name:
        fail("data.source='tfds' needs data.tfds_name (e.g. --config.data.tfds_name=imagenet2012).")
    if d.num_large_views < 2 and config.method == "relicv2":
        fail(f"data.num_large_views={d.num_large_views}; ReLICv2 needs at least 2 large views.")
    if d.num_small_views < 0:
        fail(f"data.num_small_views={d.num_small_views} must be >= 0.")
    for name in ("mask_apply_prob", "bg_rm_prob", "bg_random_prob", "bg_swaps_prob"):
        if not 0.0 <= d[name] <= 1.0:
            fail(f"data.{name}={d[name]} must be a probability in [0, 1].")
    address = d.tf_data_service_address
    if address and not re.fullmatch(r"grpc://[^\s/:]+:\d+", address):
        fail(f"data.tf_data_service_address={address!r}; give the dispatcher as grpc://host:port "
             "(e.g. grpc://data-0:5050), or '' to preprocess in this process.")
    if config.model.depth not in resnet.RESNET_BLOCKS:
        fail(f"model.depth={config.model.depth}; choose one of {sorted(resnet.RESNET_BLOCKS)}.")
    t = config.training
    if t.batch_size <= 0:
        fail(f"training.batch_size={t.batch_size} must be positive.")
    if "num_negatives" in config.loss and config.loss.num_negatives >= t.batch_size:
        fail(f"loss.num_negatives={config.loss.num_negatives} must be < training.batch_size="
             f"{t.batch_size} (or -1 for every other example of the batch).")
    if t.mixed_precision not in ("", "mixed_bfloat16", "mixed_float16"):
        fail(f"training.mixed_precision={t.mixed_precision!r}; use '', 'mixed_bfloat16' or "
             "'mixed_float16'.")
    if t.checkpoint_every_steps <= 0:
        fail(f"training.checkpoint_every_steps={t.checkpoint_every_steps} must be positive.")

    # ---------------------------------------------------------------- baselines (issue 6)
    views = d.num_large_views
    if config.method in ("byol", "moco_v2", "simclr", "swav") and views < 2:
        fail(f"data.num_large_views={views}; {config.method} needs 2 large views.")
    if config.method in ("moco_v2", "simclr") and views != 2:
        fail(f"data.num_large_views={views}; {config.method} pairs exactly 2 views (set 2).")
    if config.method == "moco_v2" and config.loss.queue_size < t.batch_size:
        fail(f"loss.queue_size={config.loss.queue_size} must be >= training.batch_size="
             f"{t.batch_size} (each step enqueues the batch's keys).")
    if config.method == "swav":
        s = config.loss
        if not s.code_views or max(s.code_views) >= views or min(s.code_views) < 0:
            fail(f"loss.code_views={tuple(s.code_views)} must index large views 0..{views - 1}.")
        if s.queue_size and s.queue_size < t.batch_size:
            fail(f"loss.queue_size={s.queue_size} must be 0 (no queue) or >= "
                 f"training.batch_size={t.batch_size}.")
    background = {n: d[n] for n in ("bg_rm_prob", "bg_random_prob", "bg_swaps_prob") if d[n] > 0}
    if background and (d.source == "tfds" or (d.source == "image_folder" and not d.mask_dir)):
        fail(f"{', '.join('data.' + n for n in background)} > 0 need foreground masks, which "
             f"data.source={d.source!r} does not have: use data.source='tfrecord' with the "
             "shards of relicv2-saliency, or data.mask_dir=<masks> for image_folder.")
