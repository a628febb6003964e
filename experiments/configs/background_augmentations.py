"""Background augmentations of Ryali et al. (2021) as a config transformation.

`with_background(config, variant)` turns any method config into its BG_RM / BG_Random / BG_Swaps
variant: it sets the one probability of `PROBABILITIES[variant]` (all others 0) and, for
ImageNet from TFDS (no masks), switches the source to the TFRecord shards with masks written by
`relicv2-saliency` (give their pattern with --config.data.data_dir=...).

Probabilities: NOT verified against the paper's text. The text available to us (abstract and
first page of arXiv 2103.12719) does not state them; the values below are the ones our brief
recalls from the paper (BG_RM p = 0.2; BG_Random p in 0.1-0.2; BG_Swaps 0.2 for the swapped
positive and the hard negative). Check section 3 / appendix of the paper before quoting results.
In this code base BG_Swaps' one probability drives both the swapped positive (second large view)
and the use of the hard negative (`relicv2_tf/data/views.py`).
"""

VARIANTS = ("bg_rm", "bg_random", "bg_swaps")
PROBABILITIES = {"bg_rm": 0.2, "bg_random": 0.2, "bg_swaps": 0.2}  # unverified, see above


def with_background(config, variant: str):
    if variant not in VARIANTS:
        raise ValueError(f"Unknown background variant {variant!r}; choose one of {VARIANTS}.")
    for name in VARIANTS:
        config.data[f"{name}_prob"] = PROBABILITIES[variant] if name == variant else 0.0
    if config.data.source == "tfds":
        config.data.source = "tfrecord"
        config.data.tfds_name = ""
        config.data.data_dir = ""  # required: --config.data.data_dir='/data/masks/train-*'
    return config
