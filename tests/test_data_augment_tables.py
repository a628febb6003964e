"""Each method's augmentation table against the numbers of its paper / the authors' code.

The expected values are written here a second time, next to where each comes from, so that a
changed table entry fails a test that says which source it contradicts.
"""

import importlib

import pytest

from relicv2_tf import config as config_lib
from relicv2_tf.data import augment_tables

BOTH = [("odd", "large"), ("even", "large")]

# (keys, {field: value}) rows per table; every key of the table must be covered.
EXPECTED = {
    "relicv2": [
        # ReLICv2 appendix F.1, Table 16 (odd = 1st and 3rd large / 1st small view).
        ([("odd", "large")], dict(crop_area_range=(0.14, 1.0), blur_prob=0.1, solarize_prob=0.2)),
        ([("even", "large")], dict(crop_area_range=(0.08, 1.0), blur_prob=1.0,
                                   solarize_prob=0.0)),
        ([("odd", "small")], dict(crop_area_range=(0.05, 0.14), blur_prob=0.1,
                                  solarize_prob=0.2)),
        ([("even", "small")], dict(crop_area_range=(0.05, 0.14), blur_prob=1.0,
                                   solarize_prob=0.0)),
        # Table 16's common rows + BYOL's op definitions (F.1: "the same as in Grill et al.").
        (BOTH + [("odd", "small"), ("even", "small")],
         dict(flip_prob=0.5, color_jitter_prob=0.8, brightness=0.4, contrast=0.4,
              saturation=0.2, hue=0.1, grayscale_prob=0.2, blur_sigma_range=(0.1, 2.0),
              solarize_threshold=0.5, aspect_ratio_range=(3 / 4, 4 / 3),
              brightness_mode="additive", contrast_mode="channel_mean", saturation_mode="hsv",
              grayscale_weights=(0.2989, 0.5870, 0.1140), blur_kernel="gaussian",
              blur_kernel_fraction=0.1, blur_kernel_size=0, crop_sampler="torchvision",
              resize_method="bicubic",
              blur_padding="reflect")),  # reflect: this code base's choice, kept as it was
    ],
    "byol": [
        # deepmind-research byol/utils/augmentations.py `augment_config` view1 / view2.
        ([("odd", "large")], dict(blur_prob=1.0, solarize_prob=0.0)),
        ([("even", "large")], dict(blur_prob=0.1, solarize_prob=0.2)),
        (BOTH, dict(flip_prob=0.5, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
                    color_jitter_prob=0.8, grayscale_prob=0.2, blur_sigma_range=(0.1, 2.0),
                    blur_kernel_fraction=0.1,  # blur_divider=10.
                    solarize_threshold=0.5,
                    # `adjust_brightness` x + delta; `adjust_contrast` per-channel mean;
                    # saturation/hue through `rgb_to_hsv`; `_to_grayscale` weights.
                    brightness_mode="additive", contrast_mode="channel_mean",
                    saturation_mode="hsv", grayscale_weights=(0.2989, 0.5870, 0.1140),
                    blur_kernel="gaussian", blur_padding="zeros",  # padding='SAME'
                    # byol/utils/dataset.py `_decode_and_random_crop` + `_preprocess_image`.
                    crop_area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                    crop_sampler="byol", resize_method="bicubic")),
    ],
    "simclr": [
        # google-research/simclr tf2/data_util.py.
        (BOTH, dict(crop_area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                    crop_sampler="tf_sample_distorted_bounding_box", crop_max_attempts=100,
                    crop_min_object_covered=0.1, resize_method="bicubic",  # crop_and_resize
                    flip_prob=0.5,  # tf.image.random_flip_left_right
                    color_jitter_prob=0.8, grayscale_prob=0.2,  # random_color_jitter
                    brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,  # strength 1.0
                    brightness_mode="multiplicative",  # random_brightness impl='simclrv2'
                    contrast_mode="channel_mean", saturation_mode="hsv",  # tf.image
                    grayscale_weights=(0.2989, 0.5870, 0.1140),  # tf.image.rgb_to_grayscale
                    blur_prob=0.5, blur_sigma_range=(0.1, 2.0),  # batch_random_blur
                    blur_kernel="gaussian", blur_kernel_fraction=0.1,  # height // 10
                    blur_padding="zeros",  # padding='SAME'
                    solarize_prob=0.0)),
    ],
    "moco_v2": [
        # facebookresearch/moco main_moco.py --aug-plus, moco/loader.py GaussianBlur.
        (BOTH, dict(crop_area_range=(0.2, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                    crop_sampler="torchvision", crop_max_attempts=10,
                    resize_method="bilinear_antialias",
                    color_jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.4,
                    hue=0.1, brightness_mode="multiplicative", contrast_mode="grey_mean",
                    saturation_mode="grey_blend", grayscale_prob=0.2,
                    grayscale_weights=(0.299, 0.587, 0.114),
                    blur_prob=0.5, blur_sigma_range=(0.1, 2.0), blur_kernel="pil_box",
                    blur_padding="edge", flip_prob=0.5, solarize_prob=0.0)),
    ],
    "swav": [
        # facebookresearch/swav scripts/swav_800ep_pretrain.sh + src/multicropdataset.py.
        (BOTH, dict(crop_area_range=(0.14, 1.0))),
        ([("odd", "small"), ("even", "small")], dict(crop_area_range=(0.05, 0.14))),
        (BOTH + [("odd", "small"), ("even", "small")],
         dict(aspect_ratio_range=(3 / 4, 4 / 3), crop_sampler="torchvision",
              resize_method="bilinear_antialias", flip_prob=0.5, color_jitter_prob=0.8,
              brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,  # get_color_distortion
              brightness_mode="multiplicative", contrast_mode="grey_mean",
              saturation_mode="grey_blend", grayscale_prob=0.2,
              grayscale_weights=(0.299, 0.587, 0.114),
              blur_prob=0.5, blur_sigma_range=(0.1, 2.0),  # RandomGaussianBlur (cv2)
              blur_kernel="gaussian", blur_kernel_size=23, blur_padding="reflect",
              solarize_prob=0.0)),
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_table_values_match_their_sources(name):
    table = augment_tables.AUGMENTATION_TABLES[name]
    covered = set()
    for keys, fields in EXPECTED[name]:
        for key in keys:
            covered.add(key)
            for field, value in fields.items():
                got = getattr(table[key], field)
                if isinstance(value, tuple):
                    assert got == pytest.approx(value), (name, key, field)
                else:
                    assert got == value, (name, key, field, got)
    assert covered == set(table), f"{name}: rows for {set(table) - covered} not checked"


def test_table_16_object_is_the_relicv2_table():
    assert augment_tables.AUGMENTATION_TABLES["relicv2"] is augment_tables.TABLE_16


@pytest.mark.parametrize("method", ["byol", "simclr", "moco_v2", "swav"])
def test_each_method_config_selects_its_own_table(method):
    config = importlib.import_module(f"experiments.configs.{method}").get_config()
    assert config.data.augmentation == method
    config.data.source, config.data.tfds_name = "synthetic", ""
    config_lib.validate(config)
    small = config.data.num_small_views
    assert (small > 0) == augment_tables.table_has_size(method, "small")
    assert config_lib.get_default_config().data.augmentation == "relicv2"


def test_unknown_table_and_bad_modes_are_refused():
    config = config_lib.get_default_config()
    config.data.augmentation = "byol_v9"
    with pytest.raises(ValueError, match="data.augmentation='byol_v9'"):
        config_lib.validate(config)
    with pytest.raises(ValueError, match="brightness_mode"):
        augment_tables.ViewAugmentation((0.1, 1.0), 0.5, 0.0, brightness_mode="gamma")
    with pytest.raises(ValueError, match="blur_padding='edge'"):
        augment_tables.ViewAugmentation((0.1, 1.0), 0.5, 0.0, blur_kernel="pil_box")
