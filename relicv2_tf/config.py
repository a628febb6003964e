"""Default configuration shared by every entry point.

Configs are data: `experiments/configs/*.py` start from `get_default_config(method)` and change
fields. Keys are the argument names of what they build (`model.*` -> `models.resnet.resnet` and
`models.heads.mlp`, `loss.*` -> the method's loss, `data.*` -> `data.views`...). The config is
locked after loading, so a misspelt key (`--config.data.imagesize=...`) stops the run at once.
Two sections have their owner's defaults: `data` (data/defaults.py) and `loss` (the method's,
methods/__init__.py METHODS). `validate` checks nothing itself but the training loop's fields:
each owner checks its section (`check_config(config, fail)` next to what it checks).
This module imports no TensorFlow (config files load before TensorFlow starts); `validate` does.

The defaults are ReLICv2's recipe; docs/RECIPES.md gives every value's source. Where the
ReLICv2 text we have lost a number, the default is the BYOL recipe that ReLICv2 states it
follows (Grill et al. 2020, appendix C: LARS, base learning rate 0.2 x B/256, weight decay
1.5e-6, 10 warm-up epochs, cosine decay, batch 4096), marked "assumed" in RECIPES.md. The target
EMA is ReLICv2's own: a fixed rate 0.99 (appendix G.3, Table 22), not BYOL's cosine ramp.
"""

from __future__ import annotations

import ml_collections

from relicv2_tf import methods
from relicv2_tf.data import defaults as data_defaults


def get_default_config(method: str = "relicv2") -> ml_collections.ConfigDict:
    """The defaults of every entry point, with `method`'s loss section (its paper's values)."""
    if method not in methods.METHODS:
        raise ValueError(f"method {method!r} is not one of {sorted(methods.METHODS)}.")
    config = ml_collections.ConfigDict()
    config.method = method  # relicv2 | byol | moco_v2 | swav | simclr
    config.seed = 0

    # ---------------------------------------------------------------- data (relicv2_tf/data)
    config.data = data_defaults.data_config()  # fields and defaults: data/defaults.py

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
    # The method's own section: methods/__init__.py METHODS (the arguments of its loss).
    config.loss = methods.METHODS[method].loss_config()

    # ---------------------------------------------------------- optimisation (relicv2_tf/optim)
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
    """Checks a config once, at the boundary: each section's owner checks its own settings (in
    this order), and the first problem is raised as a ValueError naming the field and the fix."""
    from relicv2_tf.data import background, sources, views
    from relicv2_tf.evaluation import knn_report
    from relicv2_tf.models import resnet
    from relicv2_tf.optim import guard, schedules

    def fail(message):
        raise ValueError(f"Invalid config: {message}")

    for check in (_check_training_loop, methods.check_config, sources.check_config,
                  views.check_config, background.check_config, resnet.check_config,
                  schedules.check_config, guard.check_config, knn_report.check_config):
        check(config, fail)


def _check_training_loop(config, fail):
    """The training loop's own settings (train.py reads them; it sits above this module)."""
    t = config.training
    if t.batch_size <= 0:
        fail(f"training.batch_size={t.batch_size} must be positive.")
    if t.mixed_precision not in ("", "mixed_bfloat16", "mixed_float16"):
        fail(f"training.mixed_precision={t.mixed_precision!r}; use '', 'mixed_bfloat16' or "
             "'mixed_float16'.")
    if t.checkpoint_every_steps <= 0:
        fail(f"training.checkpoint_every_steps={t.checkpoint_every_steps} must be positive.")
