"""Per-image augmentations: ReLICv2's Table 16 and each baseline's own paper recipe, as data.

The tables appear once, as data (`AUGMENTATION_TABLES`, selected by `data.augmentation`); every
op is a small pure function of one image (float32 in [0, 1], [H, W, 3]) and a stateless seed
(int tensor of shape [2]), so the same seed always gives the same view, eagerly or inside
`tf.data`. Sub-seeds come from `tf.random.experimental.stateless_split`, never from global state.

Where the authors' code bases define an op differently, the difference is a field of
`ViewAugmentation` and the op implements every variant (docs/DATA.md lists them with sources):
  brightness  "additive" x + d (BYOL `augmentations.py`), "multiplicative" x * f (SimCLR
              `data_util.random_brightness` impl 'simclrv2'; torchvision/PIL `ImageEnhance`);
  contrast    "channel_mean" (x - mean_c) f + mean_c (tf.image, BYOL, SimCLR), "grey_mean" blend
              with the mean of the greyscale image (PIL `ImageEnhance.Contrast`, torchvision);
  saturation  "hsv" S * f in HSV (tf.image, BYOL, SimCLR), "grey_blend" blend with the greyscale
              image (PIL `ImageEnhance.Color`, torchvision);
  hue         H + d (mod 1) in HSV everywhere; d is a fraction of the hue circle in tf.image, BYOL
              and torchvision alike (PIL quantises it to 1/255, not reproduced);
  greyscale   weights (0.2989, 0.5870, 0.1140) (tf.image) or (0.299, 0.587, 0.114) (PIL "L");
  blur        truncated Gaussian with kernel ~ 10 % of the side (BYOL, SimCLR) or a fixed 23 taps
              (SwAV, OpenCV), or PIL's three-pass extended box filter (MoCo-v2); borders padded
              with zeros (BYOL, SimCLR: 'SAME' convolutions), reflected (OpenCV's default; ReLICv2
              here) or edge-replicated (PIL);
  crop        torchvision's RandomResizedCrop sampler, BYOL's single clamped draw, or
              tf.image.sample_distorted_bounding_box (SimCLR); bicubic (BYOL, SimCLR) or
              antialiased bilinear (torchvision on PIL images) resizing.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

# ---------------------------------------------------------------------------------------------
# The tables, as data.

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
    crop_sampler: str = "torchvision"  # one of CROP_SAMPLERS (see `sample_crop_box`)
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


# ---------------------------------------------------------------------------------------------
# Helpers.


def _split(seed, num: int):
    return tf.random.experimental.stateless_split(seed, num)


def _uniform(seed, minval=0.0, maxval=1.0, shape=()):
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval)


def _bernoulli(seed, prob: float):
    return _uniform(seed) < prob


def _select(condition, if_true, if_false):
    """Scalar-condition select for cheap ops: one elementwise pass, and far cheaper to build in a
    tf.data graph than a tf.cond (which traces two sub-functions)."""
    return tf.where(condition, if_true, if_false)


def to_unit_float(image):
    """uint8 [0, 255] -> float32 [0, 1]; floats are taken to be in [0, 1] already."""
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


# ---------------------------------------------------------------------------------------------
# Geometry: crop and flip (image and mask together).


def sample_crop_box(image_shape, seed, area_range=(0.08, 1.0),
                    aspect_ratio_range=(3 / 4, 4 / 3), max_attempts: int = 10,
                    sampler: str = "torchvision", min_object_covered: float = 0.0):
    """Random crop box (top, left, height, width), int32, of an image of shape [H, W, ...].

    sampler "torchvision" (RandomResizedCrop.get_params): area fraction ~ U[area_range],
      log(aspect = width / height) ~ U[log r_min, log r_max]; the first of `max_attempts`
      candidates that fits, else the whole image clamped to the aspect range, centred.
    "byol" (byol/utils/dataset.py): one such draw, width and height clamped to the image.
    "tf_sample_distorted_bounding_box" (SimCLR): tf.image's sampler, aspect ~ U[r_min, r_max]
      (not log-uniform), side uniform, crop >= `min_object_covered` of the image, `max_attempts`
      tries, else the whole image.
    Offsets are uniform.
    """
    if sampler == "tf_sample_distorted_bounding_box":
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            image_shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
            min_object_covered=min_object_covered, aspect_ratio_range=aspect_ratio_range,
            area_range=area_range, max_attempts=max_attempts,
            use_image_if_no_bounding_boxes=True)
        return tf.cast(tf.stack([begin[0], begin[1], size[0], size[1]]), tf.int32)
    height = tf.cast(image_shape[0], tf.float32)
    width = tf.cast(image_shape[1], tf.float32)
    attempts = 1 if sampler == "byol" else max_attempts
    area_seed, ratio_seed, offset_seed = tf.unstack(_split(seed, 3))
    area_fractions = _uniform(area_seed, area_range[0], area_range[1], [attempts])
    log_ratios = _uniform(ratio_seed, math.log(aspect_ratio_range[0]),
                          math.log(aspect_ratio_range[1]), [attempts])
    offsets = _uniform(offset_seed, shape=[2])
    if sampler == "byol":
        return byol_crop_box(height, width, area_fractions[0], log_ratios[0], offsets)
    return torchvision_crop_box(height, width, area_fractions, log_ratios, offsets,
                                aspect_ratio_range)


def byol_crop_box(height, width, area_fraction, log_ratio, offsets):
    """BYOL's `_decode_and_random_crop` from its draws: w = min(round(sqrt(A r)), W),
    h = min(round(sqrt(A / r)), H), offsets floor(u * (side - crop + 1))."""
    area = area_fraction * height * width
    crop_w = tf.minimum(tf.round(tf.sqrt(area * tf.exp(log_ratio))), width)
    crop_h = tf.minimum(tf.round(tf.sqrt(area / tf.exp(log_ratio))), height)
    top = tf.floor(offsets[0] * (height - crop_h + 1))
    left = tf.floor(offsets[1] * (width - crop_w + 1))
    return tf.cast(tf.stack([top, left, crop_h, crop_w]), tf.int32)


def torchvision_crop_box(height, width, area_fractions, log_ratios, offsets, aspect_ratio_range):
    """RandomResizedCrop's rule from its draws: the first candidate that fits, else the whole
    image clamped to the aspect range, centred."""
    areas = area_fractions * height * width
    ratios = tf.exp(log_ratios)
    crop_w = tf.round(tf.sqrt(areas * ratios))
    crop_h = tf.round(tf.sqrt(areas / ratios))
    fits = (crop_w >= 1) & (crop_h >= 1) & (crop_w <= width) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32))
    image_ratio = width / height
    fallback_w = tf.where(image_ratio > aspect_ratio_range[1],
                          tf.round(height * aspect_ratio_range[1]), width)
    fallback_h = tf.where(image_ratio < aspect_ratio_range[0],
                          tf.round(width / aspect_ratio_range[0]), height)
    any_fits = tf.reduce_any(fits)
    crop_w = tf.where(any_fits, crop_w[first], fallback_w)
    crop_h = tf.where(any_fits, crop_h[first], fallback_h)
    top = tf.where(any_fits, tf.floor(offsets[0] * (height - crop_h + 1)), (height - crop_h) // 2)
    left = tf.where(any_fits, tf.floor(offsets[1] * (width - crop_w + 1)), (width - crop_w) // 2)
    return tf.cast(tf.stack([top, left, crop_h, crop_w]), tf.int32)


def resize(image, size: int, method: str = "bicubic"):
    """[h, w, C] -> [size, size, C]. "bilinear_antialias" is PIL's bilinear filter (its support
    widens when shrinking), the interpolation of torchvision's RandomResizedCrop on PIL images."""
    if method == "bilinear_antialias":
        return tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.image.resize(image, [size, size], method=method)


def crop_and_resize(image, box, size: int, method: str = "bicubic"):
    """Crops `box` (top, left, height, width) out of [H, W, C] and resizes to [size, size, C].

    uint8 input gives float32 in [0, 1]; float input keeps its scale.
    """
    image = tf.convert_to_tensor(image)
    crop = image[box[0]:box[0] + box[2], box[1]:box[1] + box[3], :]
    resized = resize(crop, size, method)  # float32, input's scale
    if image.dtype == tf.uint8:
        resized = resized * (1.0 / 255.0)  # cast after cropping: only the crop is converted
    return tf.ensure_shape(resized, [size, size, image.shape[-1]])


def random_resized_crop(image, seed, size: int, area_range=(0.08, 1.0),
                        aspect_ratio_range=(3 / 4, 4 / 3), mask=None,
                        mask_method: str = "bilinear", sampler: str = "torchvision",
                        max_attempts: int = 10, min_object_covered: float = 0.0,
                        resize_method: str = "bicubic"):
    """Random resized crop (F.1 step 1): crop a random box, resize to size x size.

    `image` uint8 or float [H, W, 3] -> float32 [size, size, 3] clipped to [0, 1] (bicubic
    overshoots). If `mask` ([H, W, 1], uint8 0-255 or float 0-1) is given, the same box is cut out
    of it and resized with `mask_method` ("bilinear" keeps soft edges, "nearest" keeps it binary);
    returns (image, mask) with the mask float32 in [0, 1].
    """
    image = tf.convert_to_tensor(image)
    box = sample_crop_box(tf.shape(image), seed, area_range, aspect_ratio_range, max_attempts,
                          sampler, min_object_covered)
    out = tf.clip_by_value(crop_and_resize(image, box, size, resize_method), 0.0, 1.0)
    if mask is None:
        return out
    out_mask = crop_and_resize(mask, box, size, mask_method)
    return out, tf.clip_by_value(out_mask, 0.0, 1.0)


def random_flip(image, seed, prob: float = 0.5, mask=None):
    """Horizontal flip with probability `prob` (F.1 step 2); flips `mask` identically."""
    image = tf.convert_to_tensor(image)
    flip = _bernoulli(seed, prob)
    image = _select(flip, tf.reverse(image, axis=[1]), image)
    if mask is None:
        return image
    mask = tf.convert_to_tensor(mask)
    return image, _select(flip, tf.reverse(mask, axis=[1]), mask)


# ---------------------------------------------------------------------------------------------
# Colour.


def luma(image, weights=GRAYSCALE_WEIGHTS):
    """[..., 3] -> [...]: weighted sum of R, G, B."""
    image = tf.convert_to_tensor(image)
    return tf.tensordot(image, tf.constant(weights, image.dtype), axes=[[-1], [0]])


def adjust_brightness(image, amount, mode: str = "additive"):
    """"additive": x + amount (BYOL); "multiplicative": x * amount (SimCLR v2 code, PIL)."""
    image = tf.convert_to_tensor(image, tf.float32)
    if mode == "multiplicative":
        return image * amount
    return image + amount


def adjust_contrast(image, factor, mode: str = "channel_mean", weights=GRAYSCALE_WEIGHTS):
    """(x - m) * factor + m. "channel_mean": m = mean of each channel over the pixels
    (tf.image, BYOL, SimCLR); "grey_mean": m = one scalar, the mean of the greyscale image
    (PIL ImageEnhance.Contrast, torchvision)."""
    image = tf.convert_to_tensor(image)
    if mode == "grey_mean":
        mean = tf.reduce_mean(luma(image, weights))
        return (image - mean) * factor + mean
    # tf.image's fused kernel computes exactly the channel-mean rule, in one pass.
    return tf.image.adjust_contrast(image, factor)


def adjust_saturation(image, factor, mode: str = "hsv", weights=GRAYSCALE_WEIGHTS):
    """"hsv": HSV saturation times `factor`, clipped to [0, 1] (tf.image's fused kernel);
    "grey_blend": (x - g) * factor + g with g the pixel's grey value (PIL ImageEnhance.Color)."""
    if mode == "grey_blend":
        image = tf.convert_to_tensor(image)
        grey = luma(image, weights)[..., None]
        return (image - grey) * factor + grey
    return tf.image.adjust_saturation(image, factor)


def adjust_hue(image, delta):
    """HSV hue + delta (mod 1)."""
    return tf.image.adjust_hue(image, delta)


def color_jitter(image, seed, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
                 prob: float = 0.8, brightness_mode: str = "additive",
                 contrast_mode: str = "channel_mean", saturation_mode: str = "hsv",
                 grayscale_weights=GRAYSCALE_WEIGHTS):
    """With probability `prob`, the four adjustments in a random order (F.1 step 3).

    Each draws its own strength: brightness delta ~ U[-b, b] (additive) or factor
    ~ U[max(0, 1 - b), 1 + b] (multiplicative), contrast and saturation factors
    ~ U[max(0, 1 - c), 1 + c], hue delta ~ U[-h, h]; the image is clipped to [0, 1] after each.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    out = _color_jitter_graph(image, tf.cast(seed, tf.int64), float(brightness),
                              float(contrast), float(saturation), float(hue), float(prob),
                              brightness_mode, contrast_mode, saturation_mode,
                              tuple(float(w) for w in grayscale_weights))
    return tf.ensure_shape(out, image.shape)


def _factor(seed, strength):
    return _uniform(seed, max(1.0 - strength, 0.0), 1.0 + strength)


def _color_jitter(image, seed, brightness, contrast, saturation, hue, prob, brightness_mode,
                  contrast_mode, saturation_mode, grayscale_weights):
    apply_seed, order_seed, b_seed, c_seed, s_seed, h_seed = tf.unstack(_split(seed, 6))
    amount_b = (_factor(b_seed, brightness) if brightness_mode == "multiplicative"
                else _uniform(b_seed, -brightness, brightness))
    factor_c = _factor(c_seed, contrast)
    factor_s = _factor(s_seed, saturation)
    delta_h = _uniform(h_seed, -hue, hue)
    order = tf.argsort(_uniform(order_seed, shape=[4]))

    def clip(x):
        return tf.clip_by_value(x, 0.0, 1.0)

    # HSV saturation and hue map [0, 1] into [0, 1] (S clamped to [0, 1]), so their clip is a
    # no-op and is skipped; the grey blend can leave the range and is clipped like the others.
    saturate = (clip if saturation_mode == "grey_blend" else (lambda x: x))

    def jitter():
        x = image
        for step in range(4):
            x = tf.switch_case(order[step], [
                lambda x=x: clip(adjust_brightness(x, amount_b, brightness_mode)),
                lambda x=x: clip(adjust_contrast(x, factor_c, contrast_mode, grayscale_weights)),
                lambda x=x: saturate(adjust_saturation(x, factor_s, saturation_mode,
                                                       grayscale_weights)),
                lambda x=x: adjust_hue(x, delta_h),
            ])
        return x

    return tf.cond(_bernoulli(apply_seed, prob), jitter, lambda: image)


# Traced once per parameter set and reused by every view (images of any size): building the
# 4 x 4 switch branches once instead of once per view keeps tf.data graph construction fast.
_color_jitter_graph = tf.function(_color_jitter, autograph=False, reduce_retracing=True)


def to_grayscale(image, weights=GRAYSCALE_WEIGHTS):
    """Luma with `weights`, repeated on the three channels (F.1 step 4)."""
    return tf.tile(luma(image, weights)[..., None], [1, 1, 3])


def random_grayscale(image, seed, prob: float = 0.2, weights=GRAYSCALE_WEIGHTS):
    image = tf.convert_to_tensor(image)
    # tf.cond, not a select: the luma product is worth skipping 80 % of the time.
    return tf.cond(_bernoulli(seed, prob), lambda: to_grayscale(image, weights), lambda: image)


# ---------------------------------------------------------------------------------------------
# Blur.


def blur_kernel_radius(side: int, kernel_fraction: float = 0.1) -> int:
    """BYOL's rule: kernel ~ side * fraction, made odd: radius int(side * fraction / 2).

    224 -> 23 taps, 96 -> 9, 32 -> 3 (SimCLR's int(side // 10 / 2) is the same number). At least
    1 (3 taps) so the blur is not a no-op below 20 px, where BYOL's rule gives a single tap.
    """
    return max(1, int(side * kernel_fraction / 2))


def gaussian_taps(sigma, radius: int):
    """exp(-t^2 / 2 sigma^2) / Z for t = -radius..radius (sum 1)."""
    sigma = tf.cast(sigma, tf.float32)
    t = tf.range(-radius, radius + 1, dtype=tf.float32)
    taps = tf.exp(-tf.square(t) / (2.0 * tf.square(sigma)))
    return taps / tf.reduce_sum(taps)


def pil_box_radius(sigma, passes: int = 3):
    """Pillow's `_gaussian_blur_radius` (BoxBlur.c): the fractional box radius l + a whose
    `passes`-fold box filter has variance sigma^2 (Gwosdek et al. 2011)."""
    sigma2 = tf.square(tf.cast(sigma, tf.float32)) / passes
    length = tf.sqrt(12.0 * sigma2 + 1.0)
    whole = tf.floor((length - 1.0) / 2.0)
    fraction = ((2.0 * whole + 1.0) * (whole * (whole + 1.0) - 3.0 * sigma2)
                / (6.0 * (sigma2 - tf.square(whole + 1.0))))
    return whole + fraction


def pil_box_taps(sigma, max_radius: int, passes: int = 3):
    """One pass of Pillow's extended box filter (`ImagingHorizontalBoxBlur`) as taps
    t = -max_radius..max_radius: 1 / (2 r + 1) inside the integer radius int(r), the remainder
    split between the two taps at +-(int(r) + 1), zero beyond."""
    radius = pil_box_radius(sigma, passes)
    whole = tf.floor(radius)
    inner = 1.0 / (2.0 * radius + 1.0)
    outer = (1.0 - (2.0 * whole + 1.0) * inner) / 2.0
    t = tf.abs(tf.range(-max_radius, max_radius + 1, dtype=tf.float32))
    return tf.where(t <= whole, inner, tf.where(t == whole + 1.0, outer, 0.0))


def blur_matrix_from_taps(taps, radius: int, n: int, padding: str = "reflect"):
    """[n, n] matrix B such that B @ x is the 1-D convolution of x (first axis) with `taps`
    (offsets -radius..radius), the border `padding` folded in:
    "zeros": taps falling outside are dropped (a 'SAME' convolution of a zero-padded signal);
    "reflect": index -p -> p, n - 1 + p -> n - 1 - p (tf.pad REFLECT; needs radius < n);
    "edge": indices clamped to [0, n - 1] (Pillow's box blur).
    """
    taps = tf.cast(taps, tf.float32)
    i = tf.range(n)[:, None]
    j = tf.range(n)[None, :]

    def tap(offset):
        inside = tf.abs(offset) <= radius
        return tf.where(inside, tf.gather(taps, tf.clip_by_value(offset + radius, 0, 2 * radius)),
                        0.0)

    matrix = tap(j - i)
    if padding == "reflect":
        matrix += (tf.where(j >= 1, tap(-j - i), 0.0)
                   + tf.where(j <= n - 2, tap(2 * (n - 1) - j - i), 0.0))
    elif padding == "edge":
        # Column 0 collects the taps landing left of the signal (offsets <= -i - 1), column
        # n - 1 those landing right of it (offsets >= n - i).
        cumulative = tf.concat([[0.0], tf.cumsum(taps)], axis=0)  # cumulative[k] = sum taps[:k]
        rows = tf.range(n)
        below = tf.gather(cumulative, tf.clip_by_value(radius - rows, 0, 2 * radius + 1))
        above = cumulative[-1] - tf.gather(cumulative,
                                           tf.clip_by_value(n - rows + radius, 0, 2 * radius + 1))
        matrix += (tf.one_hot(tf.zeros([n], tf.int32), n) * below[:, None]
                   + tf.one_hot(tf.fill([n], n - 1), n) * above[:, None])
    return matrix


def blur_matrix(sigma, radius: int, n: int, padding: str = "reflect"):
    """Gaussian blur (`gaussian_taps`) along the first axis as an [n, n] matrix."""
    return blur_matrix_from_taps(gaussian_taps(sigma, radius), radius, n, padding)


def separable_blur(image, column_matrix, row_matrix):
    """column_matrix @ image along the height, then row_matrix along the width, of [H, W, C].

    Each is one GEMM on the image viewed as [H, W * C] (rows after a transpose), which on CPU is
    1.4x faster than an einsum and 2x faster than a separable depthwise convolution at 224 px
    (measured, docs/BENCHMARKS.md), and simpler to check.
    """
    height, width, channels = (int(d) for d in image.shape)
    columns = tf.matmul(column_matrix, tf.reshape(image, [height, width * channels]))
    rows_first = tf.transpose(tf.reshape(columns, [height, width, channels]), [1, 0, 2])
    rows = tf.matmul(row_matrix, tf.reshape(rows_first, [width, height * channels]))
    return tf.transpose(tf.reshape(rows, [width, height, channels]), [1, 0, 2])


def gaussian_blur(image, sigma, radius: int, padding: str = "reflect"):
    """Separable Gaussian blur of [H, W, C]: `radius` taps each side, `padding` at the borders
    (BYOL and SimCLR pad with zeros, which darkens the borders; OpenCV reflects)."""
    image = tf.convert_to_tensor(image)
    height, width = int(image.shape[0]), int(image.shape[1])
    if padding == "reflect":
        radius = min(radius, height - 1, width - 1)  # one reflection must suffice
    taps = gaussian_taps(sigma, radius)
    return separable_blur(image, blur_matrix_from_taps(taps, radius, height, padding),
                          blur_matrix_from_taps(taps, radius, width, padding))


def pil_box_blur(image, sigma, max_sigma: float = 2.0, passes: int = 3):
    """PIL's ImageFilter.GaussianBlur(radius=sigma) in float: `passes` extended box filters per
    axis with edge replication (Pillow's uint8 rounding after each pass is not reproduced).
    `max_sigma` bounds the static support of one pass."""
    image = tf.convert_to_tensor(image)
    height, width = int(image.shape[0]), int(image.shape[1])
    max_radius = int(math.ceil(max_sigma)) + 1  # int(l + a) <= sigma, plus the far taps
    taps = pil_box_taps(sigma, max_radius, passes)

    def passes_matrix(n):
        one = blur_matrix_from_taps(taps, max_radius, n, "edge")
        matrix = one
        for _ in range(passes - 1):
            matrix = tf.matmul(one, matrix)
        return matrix

    return separable_blur(image, passes_matrix(height), passes_matrix(width))


def random_gaussian_blur(image, seed, prob: float, sigma_range=(0.1, 2.0),
                         kernel_fraction: float = 0.1, kernel: str = "gaussian",
                         padding: str = "reflect", kernel_size: int = 0):
    """With probability `prob`, blur with sigma ~ U[sigma_range] (F.1 step 5): a Gaussian of
    `kernel_size` taps (0: `blur_kernel_radius` of the side) or PIL's box approximation."""
    apply_seed, sigma_seed = tf.unstack(_split(seed, 2))
    sigma = _uniform(sigma_seed, sigma_range[0], sigma_range[1])
    if kernel == "pil_box":
        blur = lambda: pil_box_blur(image, sigma, max_sigma=sigma_range[1])  # noqa: E731
    else:
        radius = (kernel_size // 2 if kernel_size
                  else blur_kernel_radius(int(image.shape[0]), kernel_fraction))
        blur = lambda: gaussian_blur(image, sigma, radius, padding)  # noqa: E731
    return tf.cond(_bernoulli(apply_seed, prob), blur, lambda: image)


# ---------------------------------------------------------------------------------------------
# Solarize.


def solarize(image, threshold: float = 0.5):
    """x if x < threshold else 1 - x, per channel (F.1 step 6)."""
    image = tf.convert_to_tensor(image)
    if threshold == 0.5:
        # Identical for every x (x < 1/2 <=> x < 1 - x) and one pass cheaper than the select.
        return tf.minimum(image, 1.0 - image)
    return tf.where(image < threshold, image, 1.0 - image)


def random_solarize(image, seed, prob: float, threshold: float = 0.5):
    image = tf.convert_to_tensor(image)
    # tf.cond: at the paper's p = 0.2 the solarized image is not computed 80 % of the time.
    return tf.cond(_bernoulli(seed, prob), lambda: solarize(image, threshold), lambda: image)


# ---------------------------------------------------------------------------------------------
# One whole view.


def augment_view(image, seed, size: int, params: ViewAugmentation, mask=None):
    """F.1 steps 1-6: image uint8/float [H, W, 3] -> float32 [size, size, 3] in [0, 1].

    With `mask` ([H, W, 1]) also returns the view's mask (float32 [size, size, 1] in [0, 1]),
    cropped and flipped with the image (colour ops do not touch it).
    """
    image = tf.convert_to_tensor(image)
    crop_seed, flip_seed, photometric_seed = tf.unstack(_split(seed, 3))
    crop = dict(sampler=params.crop_sampler, max_attempts=params.crop_max_attempts,
                min_object_covered=params.crop_min_object_covered,
                resize_method=params.resize_method)
    if mask is None:
        view = random_resized_crop(image, crop_seed, size, params.crop_area_range,
                                   params.aspect_ratio_range, **crop)
        view = random_flip(view, flip_seed, params.flip_prob)
        return augment_photometric(view, photometric_seed, params)
    view, view_mask = random_resized_crop(image, crop_seed, size, params.crop_area_range,
                                          params.aspect_ratio_range, mask=mask, **crop)
    view, view_mask = random_flip(view, flip_seed, params.flip_prob, mask=view_mask)
    return augment_photometric(view, photometric_seed, params), view_mask


def augment_photometric(view, seed, params: ViewAugmentation):
    """F.1 steps 3-6 on a cropped view (float32 [S, S, 3] in [0, 1])."""
    jitter_seed, gray_seed, blur_seed, solarize_seed = tf.unstack(_split(seed, 4))
    view = color_jitter(view, jitter_seed, params.brightness, params.contrast, params.saturation,
                        params.hue, params.color_jitter_prob, params.brightness_mode,
                        params.contrast_mode, params.saturation_mode, params.grayscale_weights)
    view = random_grayscale(view, gray_seed, params.grayscale_prob, params.grayscale_weights)
    if params.blur_prob > 0:
        view = random_gaussian_blur(view, blur_seed, params.blur_prob, params.blur_sigma_range,
                                    params.blur_kernel_fraction, params.blur_kernel,
                                    params.blur_padding, params.blur_kernel_size)
    if params.solarize_prob > 0:
        view = random_solarize(view, solarize_seed, params.solarize_prob,
                               params.solarize_threshold)
    return tf.clip_by_value(view, 0.0, 1.0)
