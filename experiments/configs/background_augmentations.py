"""Background augmentations of Ryali et al. (2021) as a config transformation.

`with_background(config, variant)` turns a method config into its BG_RM / BG_Random / BG_Swaps
variant: it sets the one probability of `PROBABILITIES[variant]` (all others 0) and, for
ImageNet from TFDS (no masks), switches the source to the TFRecord shards with masks written by
`relicv2-saliency` (give their pattern with --config.data.data_dir=...).

BG_Swaps adds a hard negative to the loss, so it exists only for the contrastive methods
(`relicv2_tf.data.background.BG_SWAPS_METHODS`: MoCo-v2, SimCLR); asking for it with another
method is an error here and in `config.validate`.

ASSUMPTIONS, not the paper's numbers: of arXiv 2103.12719 only the abstract is available here,
and it states no probability. The values below are recalled from the paper, not read in it
(BG_RM p = 0.2; BG_Random p in 0.1-0.2; BG_Swaps 0.2), BG_RM's grey level is
`data.bg_rm_grey_level` (0.5, assumed), and how BG_Swaps fills the anchor's own object in the
hard negative is our choice (docs/DATA.md). Check section 3 / the appendix of the paper before
quoting results. BG_Swaps' one probability decides, per example, the whole triplet: the swapped
positive (second large view) and the use of the hard negative (`relicv2_tf/data/views.py`).
"""

from relicv2_tf.data.background import BG_SWAPS_METHODS

VARIANTS = ("bg_rm", "bg_random", "bg_swaps")
PROBABILITIES = {"bg_rm": 0.2, "bg_random": 0.2, "bg_swaps": 0.2}  # assumed, see above


def with_background(config, variant: str):
    if variant not in VARIANTS:
        raise ValueError(f"Unknown background variant {variant!r}; choose one of {VARIANTS}.")
    if variant == "bg_swaps" and config.method not in BG_SWAPS_METHODS:
        raise ValueError(f"bg_swaps is for the contrastive methods {BG_SWAPS_METHODS} (it adds a "
                         f"hard negative); method {config.method!r} has no negatives: use "
                         "bg_rm or bg_random with it.")
    for name in VARIANTS:
        config.data[f"{name}_prob"] = PROBABILITIES[variant] if name == variant else 0.0
    if config.data.source == "tfds":
        config.data.source = "tfrecord"
        config.data.tfds_name = ""
        config.data.data_dir = ""  # required: --config.data.data_dir='/data/masks/train-*'
    return config
