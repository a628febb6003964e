"""The augmentation tables, as data: ReLICv2's Table 16 and each baseline's own paper recipe.

`AUGMENTATION_TABLES[data.augmentation]` maps (parity, size) to the `ViewAugmentation` of a view;
each method's config selects its own paper's table (docs/DATA.md lists every value with its
source). The ops that read these parameters are in `augment`; every variant named here (the
tuples below) is implemented there.
"""

from __future__ import annotations

import dataclasses

# The variants of each op (`augment` implements them all) a view may choose.
CROP_SAMPLERS = ("torchvision", "byol", "tf_sample_distorted_bounding_box")
RESIZE_METHODS = ("bicubic", "bilinear_antialias")
BRIGHTNESS_MODES = ("additive", "multiplicative")
CONTRAST_MODES = ("channel_mean", "grey_mean")
SATURATION_MODES = ("hsv", "grey_blend")
BLUR_KERNELS = ("gaussian", "pil_box")
BLUR_PADDINGS = ("reflect", "zeros", "edge")
GRAYSCALE_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale, BYOL
PIL_GRAYSCALE_WEIGHTS = (0.299, 0.587, 0.114)  # PIL Image.convert("L"): ITU-R 601-2 luma


@dataclasses.dataclass(frozen=True)
class ViewAugmentation:
    """Parameters of one view's augmentation. Defaults are ReLICv2's Table 16 as implemented
    here (BYOL's values and definitions, with reflect padding for the blur)."""

    crop_area_range: tuple[float, float]  # fraction of the source image area
    blur_prob: float
    solarize_prob: float
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)
    crop_sampler: str = "torchvision"  # one of CROP_SAMPLERS (`augment.sample_crop_box`)
    crop_max_attempts: int = 10
    crop_min_object_covered: float = 0.0  # tf_sample_distorted_bounding_box only
    resize_method: str = "bicubic"  # one of RESIZE_METHODS
    flip_prob: float = 0.5
    color_jitter_prob: float = 0.8
    brightness: float = 0.4  # additive: delta in [-b, b]; multiplicative: [max(0, 1 - b), 1 + b]
    brightness_mode: str = "additive"
    contrast: float = 0.4  # factor in [max(0, 1 - c), 1 + c]
    contrast_mode: str = "channel_mean"
    saturation: float = 0.2  # factor in [max(0, 1 - s), 1 + s]
    saturation_mode: str = "hsv"
    hue: float = 0.1  # delta in [-h, h], fraction of the hue circle
    grayscale_prob: float = 0.2
    grayscale_weights: tuple[float, float, float] = GRAYSCALE_WEIGHTS
    blur_kernel: str = "gaussian"  # one of BLUR_KERNELS
    blur_sigma_range: tuple[float, float] = (0.1, 2.0)  # pixels of the output view
    blur_kernel_fraction: float = 0.1  # gaussian taps ~ 10 % of the side (23 at 224)
    blur_kernel_size: int = 0  # a fixed number of gaussian taps instead (odd); 0 = fraction
    blur_padding: str = "reflect"  # one of BLUR_PADDINGS
    solarize_threshold: float = 0.5

    def __post_init__(self):
        for name, allowed in (("crop_sampler", CROP_SAMPLERS), ("resize_method", RESIZE_METHODS),
                              ("brightness_mode", BRIGHTNESS_MODES),
                              ("contrast_mode", CONTRAST_MODES),
                              ("saturation_mode", SATURATION_MODES),
                              ("blur_kernel", BLUR_KERNELS), ("blur_padding", BLUR_PADDINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ViewAugmentation.{name}={getattr(self, name)!r}; choose one "
                                 f"of {allowed}.")
        if self.blur_kernel == "pil_box" and self.blur_padding != "edge":
            raise ValueError("blur_kernel='pil_box' is PIL's filter, which replicates the edge "
                             "pixels: set blur_padding='edge'.")


# Keys: (parity, size). Our reading of appendix F.1 (see docs/DATA.md): parity "odd" is the
# 1st, 3rd, ... view of each size (0-based indices 0, 2, ...), "even" the 2nd, 4th, ...
# The crop rows of Table 16 give 8-100 % for even large views, 14-100 % for odd large views and
# 5-14 % for small views; the even column lists no small-view crop, so small views of both
# parities use 5-14 % (crop size and area depend on the view size, blur/solarize on parity).
# The table's "probability of randomly cropping 50 %" row contradicts the text ("apart from the
# initial step of image cropping, each step is executed with some probability"): every view is
# cropped.
TABLE_16 = {
    ("even", "large"): ViewAugmentation(crop_area_range=(0.08, 1.0), blur_prob=1.0,
                                        solarize_prob=0.0),
    ("odd", "large"): ViewAugmentation(crop_area_range=(0.14, 1.0), blur_prob=0.1,
                                       solarize_prob=0.2),
    ("even", "small"): ViewAugmentation(crop_area_range=(0.05, 0.14), blur_prob=1.0,
                                        solarize_prob=0.0),
    ("odd", "small"): ViewAugmentation(crop_area_range=(0.05, 0.14), blur_prob=0.1,
                                       solarize_prob=0.2),
}

# BYOL (Grill et al. 2020, appendix B, Table 6), checked against deepmind-research
# byol/utils/augmentations.py `augment_config` (view1 / view2: flip; colour_transform brightness
# 0.4, contrast 0.4, saturation 0.2, hue 0.1, color_jitter_prob 0.8, to_grayscale_prob 0.2,
# shuffle; gaussian_blur apply_prob 1.0 / 0.1, blur_divider 10, sigma 0.1-2.0; solarize
# apply_prob 0.0 / 0.2, threshold 0.5), its ops (`adjust_brightness`: x + delta;
# `adjust_contrast`: per-channel mean; saturation and hue in HSV; `_to_grayscale` weights
# 0.2989/0.5870/0.1140; `_gaussian_blur_single_image`: radius int(kernel_size / 2), padding
# 'SAME' = zeros) and byol/utils/dataset.py `_decode_and_random_crop` (area U[0.08, 1],
# log-uniform aspect in [3/4, 4/3], ONE draw with width and height clamped to the image, uniform
# offset) + `_preprocess_image` (bicubic resize to 224, clip). Both views crop 8-100 %.
# BYOL's view1 (blur 1.0, no solarize) is our 1st ("odd") view, view2 our 2nd ("even").
_BYOL_VIEW1 = ViewAugmentation(crop_area_range=(0.08, 1.0), crop_sampler="byol",
                               blur_prob=1.0, solarize_prob=0.0, blur_padding="zeros")
_BYOL_VIEW2 = dataclasses.replace(_BYOL_VIEW1, blur_prob=0.1, solarize_prob=0.2)
BYOL_TABLE = {("odd", "large"): _BYOL_VIEW1, ("even", "large"): _BYOL_VIEW2}

# SimCLR (Chen et al. 2020a, section 3 and appendix A: crop 8-100 % + flip, colour distortion of
# strength 1 (jitter 0.8 / 0.8 / 0.8 / 0.2 with p 0.8, greyscale p 0.2), blur p 0.5 with sigma
# 0.1-2.0 and a kernel of 10 % of the side; no solarize), checked against google-research/simclr
# tf2/data_util.py: `crop_and_resize` (tf.image.sample_distorted_bounding_box, area_range
# (0.08, 1.0), aspect_ratio_range (3/4, 4/3) sampled UNIFORMLY, min_object_covered 0.1,
# max_attempts 100, whole image on failure; bicubic resize), `random_color_jitter` (p 0.8 jitter
# then p 0.2 `to_grayscale` = tf.image.rgb_to_grayscale), `color_jitter` (brightness 0.8 s,
# contrast 0.8 s, saturation 0.8 s, hue 0.2 s; random order; clip after each op),
# `random_brightness` with its default impl 'simclrv2': factor ~ U[max(1 - 0.8, 0), 1.8]
# (assumed: the v1 paper's listing uses tf.image.random_brightness, i.e. ADDITIVE, and the code
# that produced the v1 numbers is not public; we follow the authors' public code),
# tf.image.random_contrast / random_saturation / random_hue, and `batch_random_blur`
# (blur_probability 0.5, kernel_size height // 10 -> radius 11 -> 23 taps at 224, padding
# 'SAME' = zeros; the code draws one sigma per batch, we draw one per image as the paper says).
_SIMCLR = ViewAugmentation(crop_area_range=(0.08, 1.0),
                           crop_sampler="tf_sample_distorted_bounding_box", crop_max_attempts=100,
                           crop_min_object_covered=0.1, brightness=0.8,
                           brightness_mode="multiplicative", contrast=0.8, saturation=0.8,
                           hue=0.2, blur_prob=0.5, solarize_prob=0.0, blur_padding="zeros")
SIMCLR_TABLE = {("odd", "large"): _SIMCLR, ("even", "large"): _SIMCLR}

# torchvision on PIL images (MoCo-v2 and SwAV): RandomResizedCrop (area U[scale], log-uniform
# aspect in [3/4, 4/3], 10 attempts then a centre crop; PIL bilinear, antialiased when
# shrinking); ColorJitter draws factors U[max(0, 1 - x), 1 + x] (hue U[-h, h]) and applies the
# four ops in a random order (torch.randperm) through torchvision/transforms/functional_pil.py:
# adjust_brightness = ImageEnhance.Brightness (x * f), adjust_contrast = ImageEnhance.Contrast
# (blend with the mean of the "L" image), adjust_saturation = ImageEnhance.Color (blend with the
# "L" image), adjust_hue = HSV shift; uint8 results clip every op to [0, 255];
# RandomGrayscale = convert("L") with 299/587/114 weights.
_TORCHVISION_OPS = dict(resize_method="bilinear_antialias", brightness_mode="multiplicative",
                        contrast_mode="grey_mean", saturation_mode="grey_blend",
                        grayscale_weights=PIL_GRAYSCALE_WEIGHTS)

# MoCo-v2 (Chen et al. 2020b), facebookresearch/moco main_moco.py, `--aug-plus` branch:
# RandomResizedCrop(224, scale=(0.2, 1.0)), RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8),
# RandomGrayscale(p=0.2), RandomApply(moco.loader.GaussianBlur([0.1, 2.0]), p=0.5),
# RandomHorizontalFlip(); moco/loader.py `GaussianBlur`: PIL ImageFilter.GaussianBlur(radius=
# sigma), sigma ~ U[0.1, 2.0] (PIL's "radius" is the standard deviation: Pillow
# src/libImaging/BoxBlur.c runs 3 passes of an extended box filter of that variance, edges
# replicated). No solarize.
_MOCO_V2 = ViewAugmentation(crop_area_range=(0.2, 1.0), brightness=0.4, contrast=0.4,
                            saturation=0.4, hue=0.1, blur_prob=0.5, solarize_prob=0.0,
                            blur_kernel="pil_box", blur_padding="edge", **_TORCHVISION_OPS)
MOCO_V2_TABLE = {("odd", "large"): _MOCO_V2, ("even", "large"): _MOCO_V2}

# SwAV (Caron et al. 2020, section 4 / appendix A), facebookresearch/swav
# scripts/swav_800ep_pretrain.sh (--size_crops 224 96, --nmb_crops 2 6, --min_scale_crops 0.14
# 0.05, --max_scale_crops 1. 0.14) and src/multicropdataset.py `MultiCropDataset`
# (RandomResizedCrop, RandomHorizontalFlip(p=0.5), `get_color_distortion(s=1.0)` =
# RandomApply(ColorJitter(0.8, 0.8, 0.8, 0.2), p=0.8) + RandomGrayscale(p=0.2), then
# `RandomGaussianBlur`: p 0.5, sigma = rand * 1.9 + 0.1, cv2.GaussianBlur with a fixed (23, 23)
# kernel at every crop size, OpenCV's default BORDER_REFLECT_101 = our "reflect"). The README says
# all released models used this OpenCV blur (`--use_pil_blur false`). No solarize.
_SWAV_LARGE = ViewAugmentation(crop_area_range=(0.14, 1.0), brightness=0.8, contrast=0.8,
                               saturation=0.8, hue=0.2, blur_prob=0.5, solarize_prob=0.0,
                               blur_kernel_size=23, blur_padding="reflect", **_TORCHVISION_OPS)
_SWAV_SMALL = dataclasses.replace(_SWAV_LARGE, crop_area_range=(0.05, 0.14))
SWAV_TABLE = {("odd", "large"): _SWAV_LARGE, ("even", "large"): _SWAV_LARGE,
              ("odd", "small"): _SWAV_SMALL, ("even", "small"): _SWAV_SMALL}

AUGMENTATION_TABLES = {"relicv2": TABLE_16, "byol": BYOL_TABLE, "simclr": SIMCLR_TABLE,
                       "moco_v2": MOCO_V2_TABLE, "swav": SWAV_TABLE}


def view_parity(view_index: int) -> str:
    """0-based index within its size group -> "odd" (1st, 3rd, ...) or "even" (2nd, 4th, ...)."""
    return "odd" if view_index % 2 == 0 else "even"


def table_has_size(augmentation: str, size: str) -> bool:
    return any(key[1] == size for key in AUGMENTATION_TABLES[augmentation])


def check_data(data_config, fail):
    """`data.augmentation` names a table, with small crops when there are small views."""
    name, num_small = data_config.augmentation, data_config.num_small_views
    if name not in AUGMENTATION_TABLES:
        fail(f"data.augmentation={name!r}; choose one of {sorted(AUGMENTATION_TABLES)} "
             "(--config.data.augmentation=...).")
    if num_small > 0 and not table_has_size(name, "small"):
        fail(f"data.num_small_views={num_small} but data.augmentation={name!r} has no small "
             "views (its paper uses none): set --config.data.num_small_views=0 or use a table "
             "with small crops (relicv2, swav).")


def view_augmentation(view_index: int, size: str,
                      augmentation: str = "relicv2") -> ViewAugmentation:
    """Parameters of the `view_index`-th (0-based) view of `size` ("large"/"small") in the table
    `AUGMENTATION_TABLES[augmentation]` (`data.augmentation`)."""
    if augmentation not in AUGMENTATION_TABLES:
        raise ValueError(f"data.augmentation={augmentation!r}; choose one of "
                         f"{sorted(AUGMENTATION_TABLES)}.")
    if not table_has_size(augmentation, size):
        raise ValueError(f"data.augmentation={augmentation!r} has no {size} views (its paper "
                         f"uses none): set data.num_{size}_views=0 or choose a table with them.")
    return AUGMENTATION_TABLES[augmentation][(view_parity(view_index), size)]
