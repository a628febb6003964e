"""Multi-view pretraining input: L large + S small augmented views per example (ReLICv2 §3, F.1).

`pretrain_dataset(data_config, batch_size=per_replica_batch, seed=...)` yields dicts
  large:  float32 [B, L, image_size, image_size, 3]            normalised (ImageNet mean/std)
  small:  float32 [B, S, small_image_size, small_image_size, 3] (absent when S == 0)
  label:  int32 [B], id: string [B]
  hard_negative: float32 [B, image_size, image_size, 3], hard_negative_valid: float32 [B]
                 (only when data.bg_swaps_prob > 0; BG_Swaps)

Parameters: the table `augment_tables.AUGMENTATION_TABLES[data.augmentation]` (each method's
config selects its own paper's). Parity (Table 16): the 1st and 3rd large views and the 1st small
view use the "odd" parameters, the 2nd and 4th large and the 2nd small the "even" ones
(`augment_tables.view_augmentation`).
Saliency masking (ReLICv2 appendix E listing, `background.saliency_masking`): when
data.mask_apply_prob > 0, one masked copy of the image (background -> one grey level ~ U[0, 1])
is made per example, and each large view independently starts from it with probability p_m
(only where the mask covers >= mask_min_fraction of the whole image); small views always start
from the unmasked image. The masking decisions use a seed stream of their own, so every other
op draws exactly what it draws without masking.
Per view: crop + flip of its starting image (mask follows; `crop_flip`) -> [BG_Swaps positive,
2nd large view] -> BG_RM / BG_Random (if enabled) -> colour jitter, greyscale, blur, solarize
(`finish_view`) -> normalise. BG_Swaps (`_bg_swaps`): one decision and one other image per
example make the positive (2nd large view) and the hard negative (on the 1st large view's crop)
together.
Randomness: the example at position i of input pipeline p's stream (counted from the stream's
start, also after a restart) uses the stateless seed fold_in([seed, p], i), and which example sits
at position i is itself a pure function of (seed, p, i) (`sources.example_stream`: one stateless
order per epoch). So the views depend only on (seed, pipeline, position), not on threads, timing
or restarts: `start_position=p0` yields exactly the batches from example p0 on of a pipeline
started at 0 (a resumed run passes p0 = step x global batch / input pipelines). The "other image"
of BG_Random / BG_Swaps comes from a second stream of the source (`stream=1`) at the same
position, under the same rule.
With `data.tf_data_service_address` the batches are made by tf.data service workers
("distributed_epoch": each worker decodes and augments its own part of the source, every example
once per epoch); positions then count within a worker, so the seed also folds in a hash of the
example id (two workers' i-th examples get different views), and batch order depends on which
worker answers first: neither the batch order nor a restart is reproducible then.
"""

from __future__ import annotations

import dataclasses
import re

import tensorflow as tf

from relicv2_tf.data import augment, augment_tables, background, defaults, normalize, sources

# `stateless_fold_in(example seed, SALIENCY_MASKING_STREAM)` seeds the masking decisions: a stream
# apart from the per-view seeds, which stay those of the unmasked pipeline.
SALIENCY_MASKING_STREAM = 1


def pretrain_dataset(data_config, *, batch_size: int, seed: int, input_context=None,
                     repeat: bool = True, start_position: int = 0) -> tf.data.Dataset:
    """Batched multi-view dataset; `batch_size` is per replica (per input pipeline).

    `start_position`: the first example of this input pipeline's stream (0: the start; see the
    module docstring), e.g. for a restart at step s, s x global batch / number of pipelines.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1 (per replica).")
    check_data(data_config, _raise)
    dataset = sources.example_stream(data_config, seed=seed, input_context=input_context,
                                     start_position=start_position, repeat=repeat)
    with_masks = sources.has_masks(dataset)
    check_masks(data_config, with_masks, _raise)  # e.g. TFRecord shards written without masks
    use_other = with_masks and (data_config.bg_random_prob > 0 or data_config.bg_swaps_prob > 0)
    if use_other:
        # "Another random image": a second, independently ordered stream of the same source.
        other = sources.example_stream(data_config, seed=seed, input_context=input_context,
                                       start_position=start_position, repeat=True, stream=1)
        dataset = tf.data.Dataset.zip((dataset, other))
    pipeline_id = input_context.input_pipeline_id if input_context is not None else 0
    base_seed = tf.constant([seed, pipeline_id], tf.int64)
    service = data_config.tf_data_service_address

    @tf.autograph.experimental.do_not_convert  # plain TF ops only: skip autograph's rewrite
    def make(index, element):
        example, other_example = element if use_other else (element, None)
        example_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
        if service:
            example_seed = tf.random.experimental.stateless_fold_in(
                example_seed, tf.strings.to_hash_bucket_fast(example["id"], 2**62))
        return make_views(example, example_seed, data_config, other_example)

    dataset = dataset.enumerate(start=start_position).map(
        make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    # Parallelism comes from the parallel map over examples; one thread per op avoids
    # oversubscribing the cores with intra-op thread pools (measured faster on CPU).
    options.threading.max_intra_op_parallelism = 1
    options.deterministic = True
    dataset = dataset.with_options(options)
    if service:
        dataset = dataset.apply(tf.data.experimental.service.distribute(
            processing_mode="distributed_epoch", service=service))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _raise(message):
    raise ValueError(message)


def check_config(config, fail):
    """The views of `config.data` (`check_data`) and, where the source tells without reading
    it, the masks they need (`check_masks`)."""
    check_data(config.data, fail)
    check_masks(config.data, sources.source_has_masks(config.data), fail)


def check_data(data_config, fail):
    """The settings of the views: counts, probabilities, the augmentation table, the tf.data
    service address. `pretrain_dataset` checks them too, for callers without `config.validate`."""
    d = data_config
    if d.num_large_views < 1:
        fail(f"data.num_large_views={d.num_large_views} must be >= 1.")
    if d.num_small_views < 0:
        fail(f"data.num_small_views={d.num_small_views} must be >= 0.")
    for name in defaults.MASK_FEATURES + ("mask_min_fraction",):
        if not 0.0 <= d[name] <= 1.0:
            fail(f"data.{name}={d[name]} must be a probability in [0, 1].")
    augment_tables.check_data(d, fail)
    if d.bg_swaps_prob > 0 and d.num_large_views < 2:
        fail(f"data.bg_swaps_prob={d.bg_swaps_prob} needs 2 large views (anchor and positive).")
    address = d.tf_data_service_address
    if address and not re.fullmatch(r"grpc://[^\s/:]+:\d+", address):
        fail(f"data.tf_data_service_address={address!r}; give the dispatcher as grpc://host:port "
             "(e.g. grpc://data-0:5050), or '' to preprocess in this process.")


def check_masks(data_config, has_masks, fail):
    """The mask features (`defaults.MASK_FEATURES`) that are on need a source with masks;
    `has_masks` None: unknown until the data are read (TFRecord shards)."""
    d = data_config
    needs_masks = [n for n in defaults.MASK_FEATURES if d[n] > 0]
    if needs_masks and has_masks is False:
        fail(f"{', '.join(f'data.{n}={d[n]}' for n in needs_masks)}: uses a foreground mask per "
             f"image, which data.source={d.source!r} (data.data_dir={d.data_dir!r}) does not "
             "provide. Either give masks: run `relicv2-saliency` (stages priors, refine, "
             "generate) and train on its shards with --config.data.source=tfrecord "
             "--config.data.data_dir='<masks>/train-*', or for an ImageFolder pass "
             "--config.data.mask_dir=<mask folder>; or switch the feature off: "
             f"{' '.join(f'--config.data.{n}=0' for n in needs_masks)}.")


def make_views(example, seed, data_config, other_example=None):
    """One source example -> its views (unbatched version of the `pretrain_dataset` element)."""
    image = example["image"]
    mask = normalize.to_unit_float(example["mask"]) if "mask" in example else None
    other_image = other_mask = None
    if other_example is not None and mask is not None:
        # Align the other image with this one (same size) so one crop box fits both.
        size = tf.shape(image)[:2]
        other_image = tf.image.resize(normalize.to_unit_float(other_example["image"]), size)
        other_mask = tf.image.resize(normalize.to_unit_float(other_example["mask"]), size)
    num_large, num_small = data_config.num_large_views, data_config.num_small_views
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num_large + num_small + 2))

    large_images = [image] * num_large
    if mask is not None and data_config.mask_apply_prob > 0:
        large_images, _ = background.saliency_masking(
            image, mask, tf.random.experimental.stateless_fold_in(seed, SALIENCY_MASKING_STREAM),
            num_large, data_config.mask_apply_prob, data_config.mask_min_fraction)
    large_params = [_view_params(data_config, i, "large") for i in range(num_large)]
    large_crops = [crop_flip(large_images[i], mask, other_image, other_mask, seeds[i],
                             data_config.image_size, large_params[i])
                   for i in range(num_large)]
    hard_negative = None
    if data_config.bg_swaps_prob > 0:
        hard_negative, valid, large_crops[1] = _bg_swaps(large_crops, other_image, other_mask,
                                                         seeds[-2], seeds[-1], large_params[0],
                                                         data_config)
    large = [finish_view(crop, large_params[i], data_config)
             for i, crop in enumerate(large_crops)]
    output = {"large": normalize.normalize_images(tf.stack(large)),
              "label": tf.cast(example["label"], tf.int32), "id": example["id"]}
    if num_small > 0:
        small = []
        for j in range(num_small):
            params = _view_params(data_config, j, "small")
            crop = crop_flip(image, mask, other_image, other_mask, seeds[num_large + j],
                             data_config.small_image_size, params)
            small.append(finish_view(crop, params, data_config))
        output["small"] = normalize.normalize_images(tf.stack(small))
    if hard_negative is not None:
        output["hard_negative"] = normalize.normalize_images(hard_negative)
        output["hard_negative_valid"] = tf.cast(valid, tf.float32)
    return output


def _view_params(data_config, view_index, size):
    """The `data.augmentation` table's parameters of a view; `data.<size>_crop_area_range` (when
    set) replaces the crop area range, e.g. for the demo's 8x8-pixel digits where 5 % of the
    image is one pixel."""
    params = augment_tables.view_augmentation(view_index, size, data_config.augmentation)
    override = tuple(data_config.get(f"{size}_crop_area_range", ()) or ())
    if override:
        if len(override) != 2 or not 0.0 < override[0] <= override[1] <= 1.0:
            raise ValueError(f"data.{size}_crop_area_range={override} must be (min, max) with "
                             "0 < min <= max <= 1, or () for the table's own crop.")
        params = dataclasses.replace(params, crop_area_range=override)
    return params


@dataclasses.dataclass
class Crop:
    """A view's crop (before its photometric ops), its mask, the other image cut with the same
    box (BG_Random / BG_Swaps), and the seed of everything after the crop."""

    view: tf.Tensor
    mask: tf.Tensor | None
    other: tf.Tensor | None
    other_mask: tf.Tensor | None
    seed: tf.Tensor


def crop_flip(image, mask, other_image, other_mask, seed, size, params) -> Crop:
    """F.1 steps 1-2: one crop box and flip shared by the image, its mask and the aligned other
    image/mask (any of the last three None), each resized to [size, size] and clipped to [0, 1]
    (masks bilinear: soft edges)."""
    crop_seed, flip_seed, photometric_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    box = augment.sample_crop_box(tf.shape(image), crop_seed, params.crop_area_range,
                                  params.aspect_ratio_range, params.crop_max_attempts,
                                  params.crop_sampler, params.crop_min_object_covered)
    flip = tf.random.stateless_uniform([], flip_seed) < params.flip_prob

    def crop(x, method):
        if x is None:
            return None
        out = tf.clip_by_value(augment.crop_and_resize(x, box, size, method), 0.0, 1.0)
        return tf.cond(flip, lambda: tf.reverse(out, axis=[1]), lambda: out)

    return Crop(crop(image, params.resize_method), crop(mask, "bilinear"),
                crop(other_image, params.resize_method), crop(other_mask, "bilinear"),
                photometric_seed)


def finish_view(crop: Crop, params, data_config):
    """BG_RM / BG_Random -> photometric ops."""
    view = crop.view
    # One sub-seed per random op after the crop: BG_RM (1st), BG_Random (2nd), the photometric
    # ops (5th), so each op's draws do not depend on which other ops are on. No op reads the 3rd
    # and 4th (BG_Swaps and saliency masking draw once per example, from `make_views`' seeds).
    rm_seed, random_seed, _, _, photometric_seed = tf.unstack(
        tf.random.experimental.stateless_split(crop.seed, 5))
    min_fraction = data_config.mask_min_fraction
    if crop.mask is not None and data_config.bg_rm_prob > 0:
        view, _ = background.bg_rm(view, crop.mask, rm_seed, data_config.bg_rm_prob,
                                   min_fraction, data_config.bg_rm_grey_level)
    if crop.other is not None and data_config.bg_random_prob > 0:
        view, _ = background.bg_random(view, crop.mask, crop.other, crop.other_mask, random_seed,
                                       data_config.bg_random_prob, min_fraction)
    return augment.augment_photometric(view, photometric_seed, params)


def _bg_swaps(large_crops, other_image, other_mask, triplet_seed, negative_seed, anchor_params,
              data_config):
    """The BG_Swaps triplet: anchor = first large view, positive = second large view (the
    anchor's foreground on the other image's background), hard negative = the other image's
    foreground on the first view's background (same crop and flip), then its own draw of the
    first view's photometric parameters. One decision and one other image for both.

    Returns (hard_negative, valid, the positive's crop)."""
    anchor, positive = large_crops[0], large_crops[1]
    if anchor.mask is None or other_image is None:
        size = data_config.image_size
        return tf.zeros([size, size, 3]), tf.constant(False), positive
    swapped, negative, applied = background.bg_swaps(
        anchor.view, anchor.mask, positive.view, positive.mask, positive.other,
        positive.other_mask, other_image, other_mask, triplet_seed, data_config.bg_swaps_prob,
        data_config.mask_min_fraction)
    negative = augment.augment_photometric(negative, negative_seed, anchor_params)
    return negative, applied, dataclasses.replace(positive, view=swapped)
