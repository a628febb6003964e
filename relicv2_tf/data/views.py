"""Multi-view pretraining input: L large + S small augmented views per example (ReLICv2 §3, F.1).

`pretrain_dataset(data_config, batch_size=per_replica_batch, seed=...)` yields dicts
  large:  float32 [B, L, image_size, image_size, 3]            normalised (ImageNet mean/std)
  small:  float32 [B, S, small_image_size, small_image_size, 3] (absent when S == 0)
  label:  int32 [B], id: string [B]
  hard_negative: float32 [B, image_size, image_size, 3], hard_negative_valid: float32 [B]
                 (only when data.bg_swaps_prob > 0; BG_Swaps)

Parity (Table 16): the 1st and 3rd large views and the 1st small view use the "odd" parameters,
the 2nd and 4th large and the 2nd small the "even" ones (`augment.view_augmentation`).
Per view: crop + flip (mask follows) -> BG_RM / BG_Random (if enabled) -> colour jitter, greyscale,
blur, solarize -> saliency masking (large views only, probability p_m, grey ~ U[0, 1], only when
the view's mask covers >= mask_min_fraction) -> normalise.
Randomness: example i of input pipeline p uses the stateless seed fold_in([seed, p], i), so the
views depend only on (seed, pipeline, position in the stream), not on threads or timing.
With `data.tf_data_service_address` the batches are made by tf.data service workers
("distributed_epoch": each worker decodes and augments its own part of the source, every example
once per epoch); positions then count within a worker, so the seed also folds in a hash of the
example id (two workers' i-th examples get different views), and batch order depends on which
worker answers first.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
from absl import logging

from relicv2_tf.data import augment, background, normalize, sources


def pretrain_dataset(data_config, *, batch_size: int, seed: int, input_context=None,
                     repeat: bool = True) -> tf.data.Dataset:
    """Batched multi-view dataset; `batch_size` is per replica (per input pipeline)."""
    _check_config(data_config, batch_size)
    source = sources.make_source(data_config, input_context=input_context, seed=seed,
                                 shuffle_files=True)
    with_masks = sources.has_masks(source)
    bg_probs = (data_config.bg_rm_prob, data_config.bg_random_prob, data_config.bg_swaps_prob)
    if not with_masks:
        if data_config.mask_apply_prob > 0:
            logging.info("Saliency masking is off: data.source=%r has no masks.",
                         data_config.source)
        if any(p > 0 for p in bg_probs):
            logging.warning("Background augmentations are off: data.source=%r has no masks.",
                            data_config.source)
    use_other = with_masks and (data_config.bg_random_prob > 0 or data_config.bg_swaps_prob > 0)

    dataset = _prepare_stream(source, data_config, seed, repeat)
    if use_other:
        # "Another random image": an independently shuffled stream of the same source.
        other = sources.make_source(data_config, input_context=input_context, seed=seed + 1,
                                    shuffle_files=True)
        other = _prepare_stream(other, data_config, seed + 1, repeat=True)
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

    dataset = dataset.enumerate().map(make, num_parallel_calls=tf.data.AUTOTUNE,
                                      deterministic=True)
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


def _check_config(data_config, batch_size):
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1 (per replica).")
    if data_config.num_large_views < 1:
        raise ValueError("data.num_large_views must be >= 1.")
    if data_config.num_small_views < 0:
        raise ValueError("data.num_small_views must be >= 0.")
    for key in ("mask_apply_prob", "mask_min_fraction", "bg_rm_prob", "bg_random_prob",
                "bg_swaps_prob"):
        if not 0.0 <= data_config[key] <= 1.0:
            raise ValueError(f"data.{key}={data_config[key]} must be in [0, 1].")


def _prepare_stream(dataset, data_config, seed, repeat):
    if data_config.cache:
        dataset = dataset.cache()
    if data_config.shuffle_buffer > 1:
        dataset = dataset.shuffle(data_config.shuffle_buffer, seed=seed,
                                  reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset


def make_views(example, seed, data_config, other_example=None):
    """One source example -> its views (unbatched version of the `pretrain_dataset` element)."""
    image = example["image"]
    mask = augment.to_unit_float(example["mask"]) if "mask" in example else None
    other_image = other_mask = None
    if other_example is not None and mask is not None:
        # Align the other image with this one (same size) so one crop box fits both.
        size = tf.shape(image)[:2]
        other_image = tf.image.resize(augment.to_unit_float(other_example["image"]), size)
        other_mask = tf.image.resize(augment.to_unit_float(other_example["mask"]), size)
    num_large, num_small = data_config.num_large_views, data_config.num_small_views
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num_large + num_small + 2))

    large = []
    for i in range(num_large):
        # BG_Swaps' positive is the second large view: the anchor's (first view's) foreground on
        # another image's background.
        swaps_prob = data_config.bg_swaps_prob if i == 1 else 0.0
        view = _view(image, mask, other_image, other_mask, seeds[i], data_config.image_size,
                     _view_params(data_config, i, "large"), data_config, swaps_prob,
                     saliency=True)
        large.append(view)
    output = {"large": normalize.normalize_images(tf.stack(large)),
              "label": tf.cast(example["label"], tf.int32), "id": example["id"]}
    if num_small > 0:
        small = [_view(image, mask, other_image, other_mask, seeds[num_large + j],
                       data_config.small_image_size, _view_params(data_config, j, "small"),
                       data_config, 0.0, saliency=False) for j in range(num_small)]
        output["small"] = normalize.normalize_images(tf.stack(small))
    if data_config.bg_swaps_prob > 0:
        hard_negative, valid = _hard_negative(image, mask, other_image, other_mask, seeds[0],
                                              seeds[-1], data_config)
        output["hard_negative"] = normalize.normalize_images(hard_negative)
        output["hard_negative_valid"] = tf.cast(valid, tf.float32)
    return output


def _view_params(data_config, view_index, size):
    """Table 16 parameters of a view; `data.<size>_crop_area_range` (when set) replaces the
    crop area range, e.g. for the demo's 8x8-pixel digits where 5 % of the image is one pixel."""
    params = augment.view_augmentation(view_index, size)
    override = tuple(data_config.get(f"{size}_crop_area_range", ()) or ())
    if override:
        if len(override) != 2 or not 0.0 < override[0] <= override[1] <= 1.0:
            raise ValueError(f"data.{size}_crop_area_range={override} must be (min, max) with "
                             "0 < min <= max <= 1, or () for the paper's Table 16.")
        params = dataclasses.replace(params, crop_area_range=override)
    return params


def _crop_flip(image, mask, other_image, other_mask, seed, size, params):
    """Crop box and flip shared by the image, its mask and the aligned other image/mask."""
    crop_seed, flip_seed, photometric_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    box = augment.sample_crop_box(tf.shape(image), crop_seed, params.crop_area_range,
                                  params.aspect_ratio_range)
    flip = tf.random.stateless_uniform([], flip_seed) < params.flip_prob

    def crop(x, method):
        if x is None:
            return None
        out = tf.clip_by_value(augment.crop_and_resize(x, box, size, method), 0.0, 1.0)
        return tf.cond(flip, lambda: tf.reverse(out, axis=[1]), lambda: out)

    return (crop(image, "bicubic"), crop(mask, "bilinear"), crop(other_image, "bicubic"),
            crop(other_mask, "bilinear"), photometric_seed)


def _view(image, mask, other_image, other_mask, seed, size, params, data_config, swaps_prob,
          saliency):
    view, view_mask, other_view, other_view_mask, photometric_seed = _crop_flip(
        image, mask, other_image, other_mask, seed, size, params)
    rm_seed, random_seed, swaps_seed, saliency_seed, photometric_seed = tf.unstack(
        tf.random.experimental.stateless_split(photometric_seed, 5))
    min_fraction = data_config.mask_min_fraction
    if view_mask is not None and data_config.bg_rm_prob > 0:
        view, _ = background.bg_rm(view, view_mask, rm_seed, data_config.bg_rm_prob, min_fraction)
    if other_view is not None and data_config.bg_random_prob > 0:
        view, _ = background.bg_random(view, view_mask, other_view, other_view_mask, random_seed,
                                       data_config.bg_random_prob, min_fraction)
    if other_view is not None and swaps_prob > 0:
        view, _ = background.bg_swaps_positive(view, view_mask, other_view, other_view_mask,
                                               swaps_seed, swaps_prob, min_fraction)
    view = augment.augment_photometric(view, photometric_seed, params)
    if saliency and view_mask is not None and data_config.mask_apply_prob > 0:
        view, _ = background.saliency_masking(view, view_mask, saliency_seed,
                                              data_config.mask_apply_prob, min_fraction)
    return view


def _hard_negative(image, mask, other_image, other_mask, anchor_seed, seed, data_config):
    """BG_Swaps hard negative: another foreground on the first large view's background (same
    crop and flip as that view), then its own draw of the first view's photometric parameters."""
    size = data_config.image_size
    if mask is None or other_image is None:
        return tf.zeros([size, size, 3]), tf.constant(False)
    params = _view_params(data_config, 0, "large")
    anchor, anchor_mask, other, other_view_mask, _ = _crop_flip(
        image, mask, other_image, other_mask, anchor_seed, size, params)
    valid_seed, photometric_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    valid = background.bg_swaps_hard_negative_valid(anchor_mask, other_view_mask, valid_seed,
                                                    data_config.bg_swaps_prob,
                                                    data_config.mask_min_fraction)
    negative = background.bg_swaps_hard_negative(anchor, anchor_mask, other, other_view_mask)
    return augment.augment_photometric(negative, photometric_seed, params), valid
