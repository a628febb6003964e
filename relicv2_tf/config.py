"""Default configuration shared by every entry point.

Configs are data: `experiments/configs/*.py` start from `get_default_config()` and change fields.
Keys are the argument names of what they build (`model.*` -> `models.resnet.resnet` and
`models.heads.mlp`, `loss.*` -> `losses.relicv2_loss`, `data.*` -> `data.views`...). The config is
locked after loading, so a misspelt key (`--config.data.imagesize=...`) stops the run at once.

The defaults are ReLICv2's recipe; docs/RECIPES.md gives every value's source. Where the
ReLICv2 text we have lost a number, the default is the BYOL recipe that ReLICv2 states it
follows (Grill et al. 2020, appendix C: LARS, base learning rate 0.2 x B/256, weight decay
1.5e-6, 10 warm-up epochs, cosine decay, batch 4096), marked "assumed" in RECIPES.md. The target
EMA is ReLICv2's own: a fixed rate 0.99 (appendix G.3, Table 22), not BYOL's cosine ramp.
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
    data.bg_swaps_prob = 0.0  # BG_Swaps (contrastive methods only: moco_v2, simclr)
    # BG_RM's background level; assumed 0.5: Ryali et al.'s value is not in the text we have.
    data.bg_rm_grey_level = 0.5
    # Augmentation table (relicv2_tf/data/augment_tables.py AUGMENTATION_TABLES): relicv2
    # (Table 16) | byol | simclr | moco_v2 | swav, each paper's own recipe; each method's config
    # selects its own.
    data.augmentation = "relicv2"
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
    loss.contrast_scale = 1.0  # c, weight of the contrastive term (appendix D.1)
    loss.alpha = 1.0  # invariance weight ("invariance scale", appendix D.1)
    loss.num_negatives = 10  # K; -1 = every other example of the global batch (paper Table 21)
    # Appendix E listing: all L x L large pairs incl. anchor == target, divided by (L + S) x L;
    # False = anchor != target only (an earlier reading, kept for comparison).
    loss.same_view_pairs = True

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
    # Target EMA xi <- tau xi + (1 - tau) theta: "constant" tau (ReLICv2 appendix G.3, Table 22:
    # 0.99 best) or "cosine" from tau_base to 1 (BYOL section 3.2, tau_base 0.996).
    train.target_ema_schedule = "constant"
    train.base_target_ema = 0.99
    train.checkpoint_every_steps = 1000
    train.keep_checkpoints = 3
    train.log_every_steps = 50  # steps between console / train.log lines and TensorBoard scalars
    # Steps between TensorBoard grids of the views trained on (and at the first step); each
    # grid starts a small copy of the input pipeline (train_logging.py). 0 = none.
    train.image_summary_every_steps = 5000
    train.steps_per_execution = 1
    train.jit_compile = False
    train.mixed_precision = ""  # "" | mixed_bfloat16 | mixed_float16
    train.synthetic_data = False  # constant random views instead of data.source: the model alone
    # Bit-identical reruns on the same machine and device count (tf op determinism; slower on
    # GPU). Without it, `seed` still fixes the initial weights and every augmentation.
    train.deterministic = False
    # A step with a non-finite loss or gradient applies no update (optim/guard.py). Then "stop"
    # ends the run at once (the last checkpoint is good; a rerun resumes from it); "skip_step"
    # counts and logs it and goes on, stopping after `max_consecutive_nonfinite` in a row.
    train.on_nonfinite = "stop"
    train.max_consecutive_nonfinite = 5

    # ---------------------------------------------------------------- monitoring (evaluation/knn)
    evaluation = config.evaluation = ml_collections.ConfigDict()
    # Weighted kNN top-1 of the online encoder during pretraining, logged to TensorBoard and the
    # console every `knn_every_steps` steps (a multiple of training.checkpoint_every_steps;
    # 0 = off). Labelled splits: knn_report.EVAL_SPLITS of `knn_source` ("" = data.source).
    evaluation.knn_every_steps = 0
    # Another labelled source for kNN ("" = data.*), e.g. TFDS imagenet2012 when pretraining on
    # TFRecord shards; then knn_data_dir / knn_tfds_name replace data.data_dir / data.tfds_name.
    evaluation.knn_source = ""
    evaluation.knn_data_dir = ""
    evaluation.knn_tfds_name = ""
    evaluation.knn_k = 20  # k = 20, T = 0.07 (Wu et al. 2018; the value lightly reports)
    evaluation.knn_temperature = 0.07
    evaluation.knn_max_examples = 5000  # per split (bounds the cost of one evaluation)
    # Online linear probe (methods/online_probe.py): a linear classifier on the stop-gradient
    # features of the first large view, trained alongside with its own SGD, its training-batch
    # top-1 in the logs (needs labels). Off here: the ImageNet recipes leave it to linear eval.
    evaluation.online_probe = False
    evaluation.online_probe_learning_rate = 0.1  # its SGD (momentum 0.9) learning rate
    return config


def validate(config) -> None:
    """Checks a config once, at the boundary, with messages that name the field and the fix."""
    import glob
    import os
    import re

    from relicv2_tf.data import sources
    from relicv2_tf.methods import METHODS
    from relicv2_tf.models import resnet

    def fail(message):
        raise ValueError(f"Invalid config: {message}")

    if config.method not in METHODS:
        fail(f"method={config.method!r}; choose one of {sorted(METHODS)} (--config.method=...).")
    d = config.data
    if d.source not in sources.SOURCES:
        fail(f"data.source={d.source!r}; choose one of {tuple(sources.SOURCES)}.")
    if d.source == "image_folder" and not os.path.isdir(d.data_dir):
        fail(f"data.data_dir={d.data_dir!r} is not a directory; point it at an ImageFolder root "
             "(class sub-folders of images), e.g. --config.data.data_dir=/data/imagenette.")
    if d.source == "tfrecord" and not glob.glob(d.data_dir):
        fail(f"data.data_dir={d.data_dir!r} matches no TFRecord files; give the pattern of the "
             "shards written by `relicv2-saliency --stage=generate` (images with their masks), "
             "e.g. --config.data.data_dir='/data/imagenet_masks/train-*'.")
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
    from relicv2_tf.optim import guard, schedules
    if t.target_ema_schedule not in schedules.TARGET_EMA_SCHEDULES:
        fail(f"training.target_ema_schedule={t.target_ema_schedule!r}; choose one of "
             f"{schedules.TARGET_EMA_SCHEDULES}.")
    if t.on_nonfinite not in guard.ON_NONFINITE:
        fail(f"training.on_nonfinite={t.on_nonfinite!r}; choose one of {guard.ON_NONFINITE}.")
    if t.max_consecutive_nonfinite < 1:
        fail(f"training.max_consecutive_nonfinite={t.max_consecutive_nonfinite} must be >= 1.")
    if not 0.0 <= t.base_target_ema <= 1.0:
        fail(f"training.base_target_ema={t.base_target_ema} must be in [0, 1].")
    _validate_knn_monitor(config, fail)

    # ---------------------------------------------------------------- baselines
    views = d.num_large_views
    if config.method in ("byol", "moco_v2", "simclr", "swav") and views < 2:
        fail(f"data.num_large_views={views}; {config.method} needs 2 large views.")
    if config.method in ("moco_v2", "simclr") and views != 2:
        fail(f"data.num_large_views={views}; {config.method} pairs exactly 2 views (set 2).")
    if config.method == "moco_v2":
        m = config.loss
        keys_per_step = t.batch_size * (2 if m.symmetric else 1)
        if m.queue_size < keys_per_step:
            fail(f"loss.queue_size={m.queue_size} must be >= {keys_per_step}, the keys each "
                 f"step enqueues (training.batch_size, x 2 with loss.symmetric).")
        if m.shuffle_bn_splits < 1 or t.batch_size % m.shuffle_bn_splits:
            fail(f"loss.shuffle_bn_splits={m.shuffle_bn_splits} must be >= 1 and divide "
                 f"training.batch_size={t.batch_size} (Shuffle-BN groups of the key batch).")
        if config.model.synchronized_bn:
            fail("model.synchronized_bn=True would pool MoCo's Shuffle-BN key groups across "
                 "replicas; set it False (loss.shuffle_bn_splits sets the key groups).")
    if config.method == "swav":
        s = config.loss
        if not s.code_views or max(s.code_views) >= views or min(s.code_views) < 0:
            fail(f"loss.code_views={tuple(s.code_views)} must index large views 0..{views - 1}.")
        if s.queue_size and s.queue_size < t.batch_size:
            fail(f"loss.queue_size={s.queue_size} must be 0 (no queue) or >= "
                 f"training.batch_size={t.batch_size}.")
        if s.queue_size and t.max_steps <= 0 and s.queue_start_epochs >= t.num_epochs:
            fail(f"loss.queue_size={s.queue_size} but loss.queue_start_epochs="
                 f"{s.queue_start_epochs} >= training.num_epochs={t.num_epochs}: the queue "
                 "would never be used. Start it earlier (SwAV: 15 of 200 epochs) or set "
                 "--config.loss.queue_size=0.")
    from relicv2_tf.data import augment_tables
    from relicv2_tf.data import background as background_lib
    if d.augmentation not in augment_tables.AUGMENTATION_TABLES:
        fail(f"data.augmentation={d.augmentation!r}; choose one of "
             f"{sorted(augment_tables.AUGMENTATION_TABLES)} (--config.data.augmentation=...).")
    if d.num_small_views > 0 and not augment_tables.table_has_size(d.augmentation, "small"):
        fail(f"data.num_small_views={d.num_small_views} but data.augmentation={d.augmentation!r} "
             "has no small crops: set --config.data.num_small_views=0 or use a table with small "
             "crops (relicv2, swav).")
    if not 0.0 <= d.bg_rm_grey_level <= 1.0:
        fail(f"data.bg_rm_grey_level={d.bg_rm_grey_level} must be in [0, 1].")
    if d.bg_swaps_prob > 0 and config.method not in background_lib.BG_SWAPS_METHODS:
        fail(f"data.bg_swaps_prob={d.bg_swaps_prob} with method={config.method!r}: BG_Swaps adds "
             f"a hard negative, which only {background_lib.BG_SWAPS_METHODS} use. Set "
             "--config.data.bg_swaps_prob=0 (BG_RM / BG_Random: data.bg_rm_prob / "
             "data.bg_random_prob work with every method), or use method moco_v2 or simclr.")
    needs_masks = [n for n in MASK_FEATURES if d[n] > 0]
    if needs_masks and sources.source_has_masks(d) is False:
        fail(f"{', '.join(f'data.{n}={d[n]}' for n in needs_masks)}: uses a foreground mask per "
             f"image, which data.source={d.source!r} does not provide. Either give masks: "
             "run `relicv2-saliency` (stages priors, refine, generate) and train on its shards "
             "with --config.data.source=tfrecord --config.data.data_dir='<masks>/train-*', or "
             "for an ImageFolder pass --config.data.mask_dir=<mask folder>; or switch the "
             f"feature off: {' '.join(f'--config.data.{n}=0' for n in needs_masks)}.")


# What each mask-based feature of the data config turns on (views.py needs masks for them).
MASK_FEATURES = ("mask_apply_prob", "bg_rm_prob", "bg_random_prob", "bg_swaps_prob")


def _validate_knn_monitor(config, fail):
    """`evaluation.knn_*`: the kNN monitor needs a labelled train / held-out split pair."""
    from relicv2_tf.evaluation import knn_report

    e, t = config.evaluation, config.training
    if e.knn_every_steps < 0:
        fail(f"evaluation.knn_every_steps={e.knn_every_steps} must be >= 0 (0 = off).")
    if e.knn_every_steps == 0:
        return
    if e.knn_every_steps % t.checkpoint_every_steps:
        fail(f"evaluation.knn_every_steps={e.knn_every_steps} must be a multiple of "
             f"training.checkpoint_every_steps={t.checkpoint_every_steps} (the monitor runs "
             "at the end of checkpoint intervals).")
    source = e.knn_source or config.data.source
    if source not in knn_report.EVAL_SPLITS:
        fail(f"evaluation.knn_every_steps={e.knn_every_steps} needs labelled train and held-out "
             f"splits, which source {source!r} does not have; set --config.evaluation."
             f"knn_source to one of {sorted(knn_report.EVAL_SPLITS)} (with knn_data_dir / "
             "knn_tfds_name), or --config.evaluation.knn_every_steps=0.")
    if e.knn_source == "tfds" and not e.knn_tfds_name:
        fail("evaluation.knn_source='tfds' needs evaluation.knn_tfds_name (e.g. imagenet2012).")
