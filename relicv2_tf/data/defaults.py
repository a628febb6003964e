"""The `data` section of the config: every field with its default, and the fields that need masks.

Imports no TensorFlow: config files read it (through `relicv2_tf.config.get_default_config`)
before TensorFlow starts, and the evaluation protocols build their labelled data sections from it
(`evaluation/inputs.py`). The checks of the section live with what reads it: the source's in
`sources.py`, the views' and masks' in `views.py`, the background augmentations' in
`background.py`.
"""

from __future__ import annotations

import ml_collections

# The features that use a foreground mask per image (their probabilities in the data section);
# any of them > 0 needs a source with masks (`views.check_masks`).
MASK_FEATURES = ("mask_apply_prob", "bg_rm_prob", "bg_random_prob", "bg_swaps_prob")


def data_config() -> ml_collections.ConfigDict:
    """The default data section: ReLICv2's views (docs/RECIPES.md) on the built-in digits."""
    data = ml_collections.ConfigDict()
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
    return data
