"""relicv2_tf.data.views: the multi-view batches the pretraining loop consumes."""


import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf import config as config_lib
from relicv2_tf.data import augment_tables, background, normalize, views


def demo_config(**overrides):
    """The lead's demo setting: digits at 32 px, L=4, S=2 small 16 px."""
    config = config_lib.get_default_config().data
    config.source = "digits"
    config.image_size, config.small_image_size = 32, 16
    config.num_large_views, config.num_small_views = 4, 2
    config.shuffle_buffer = 64
    config.num_examples = 64
    for key, value in overrides.items():
        config[key] = value
    return config


def first_batch(config, batch_size=8, seed=0, **kwargs):
    return next(iter(views.pretrain_dataset(config, batch_size=batch_size, seed=seed, **kwargs)))


def test_demo_shapes_dtypes_and_normalisation():
    config = demo_config()
    dataset = views.pretrain_dataset(config, batch_size=8, seed=0)
    spec = dataset.element_spec
    assert spec["large"].shape.as_list() == [8, 4, 32, 32, 3]  # static shapes
    assert spec["small"].shape.as_list() == [8, 2, 16, 16, 3]
    assert set(spec) == {"large", "small", "label", "id"}
    batch = next(iter(dataset))
    assert batch["large"].dtype == tf.float32 and batch["label"].dtype == tf.int32
    assert batch["id"].dtype == tf.string
    for key in ("large", "small"):
        pixels = normalize.denormalize_images(batch[key]).numpy()
        assert pixels.min() >= -1e-4 and pixels.max() <= 1 + 1e-4  # normalised [0, 1] images
    assert set(batch["label"].numpy()) <= set(range(10))
    # The four large views of an example differ (independent augmentations).
    large = batch["large"].numpy()
    assert np.abs(large[:, 0] - large[:, 1]).max() > 0.1


def test_no_small_key_when_no_small_views_and_batch_is_per_replica():
    batch = first_batch(demo_config(num_small_views=0, num_large_views=2), batch_size=5)
    assert "small" not in batch
    assert batch["large"].shape == (5, 2, 32, 32, 3)


def test_deterministic_under_seed():
    config = demo_config(num_large_views=2, num_small_views=1)
    a, b = first_batch(config, seed=3), first_batch(config, seed=3)
    np.testing.assert_array_equal(a["large"].numpy(), b["large"].numpy())
    np.testing.assert_array_equal(a["id"].numpy(), b["id"].numpy())
    c = first_batch(config, seed=4)
    assert not np.array_equal(a["large"].numpy(), c["large"].numpy())


def test_repeat_false_ends_and_drops_remainder():
    config = demo_config(num_examples=20, num_large_views=1, num_small_views=0)
    batches = list(views.pretrain_dataset(config, batch_size=8, seed=0, repeat=False))
    assert len(batches) == 2


def _example_with_known_mask(mask_value=255, start=8, end=32):
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, [40, 40, 3]).astype(np.uint8)
    mask = np.zeros([40, 40, 1], np.uint8)
    mask[start:end, start:end] = mask_value
    return {"image": tf.constant(image), "mask": tf.constant(mask), "label": tf.constant(1),
            "id": tf.constant("x")}


def _masked_and_plain(config_masked, config_plain):
    """Graph versions of make_views (traced once each; far faster than op-by-op eager)."""
    def compile_for(config):
        return tf.function(lambda e, s: views.make_views(e, s, config), autograph=False)

    masked, plain = compile_for(config_masked), compile_for(config_plain)
    return lambda example, seed: (masked(example, seed), plain(example, seed))


def _grey_level(seed, num_large):
    """The grey level make_views draws for an example seed (the masking stream's first draw)."""
    masking_seed = tf.random.experimental.stateless_fold_in(seed, views.SALIENCY_MASKING_STREAM)
    grey_seed = tf.random.experimental.stateless_split(masking_seed, num_large + 1)[0]
    return float(tf.random.stateless_uniform([], grey_seed))


def test_saliency_masking_happens_before_crop_and_augmentation():
    """With p_m = 1 every large view is the unmasked pipeline run on the masked image (same crop,
    flip, jitter, blur, solarize, bit for bit), so its grey background is jittered like the rest
    of the view, not one flat level drawn after the ops; small views are never masked."""
    example = _example_with_known_mask(start=17, end=23)  # a small object: corners are background
    masked_cfg = demo_config(mask_apply_prob=1.0, mask_min_fraction=0.01)
    plain_cfg = demo_config(mask_apply_prob=0.0)
    both = _masked_and_plain(masked_cfg, plain_cfg)
    background_levels = []
    for k in range(3):
        seed = tf.constant([5, k], tf.int64)
        grey = _grey_level(seed, 4)
        masked_image = background.remove_background(
            example["image"], normalize.to_unit_float(example["mask"]), grey)
        masked_out, _ = both(example, seed)
        _, reference = both({**example, "image": masked_image}, seed)
        np.testing.assert_array_equal(masked_out["large"], reference["large"])
        _, plain_out = both(example, seed)
        np.testing.assert_array_equal(masked_out["small"], plain_out["small"])
        pixels = normalize.denormalize_images(masked_out["large"]).numpy()
        background_levels += [abs(float(np.median(view[:2, :2])) - grey) for view in pixels]
    # The corner of a large crop is (almost always) background: after colour jitter its level
    # moved off the drawn grey in most views (a mask applied after the ops would leave it at the
    # grey exactly).
    assert np.mean(np.array(background_levels) > 0.02) > 0.5, background_levels


def test_no_masking_is_the_unmasked_pipeline_bit_for_bit():
    example = _example_with_known_mask()
    without_mask = {k: v for k, v in example.items() if k != "mask"}
    config = demo_config(mask_apply_prob=0.0)
    make = tf.function(lambda e, s: views.make_views(e, s, config), autograph=False)
    for k in range(2):
        seed = tf.constant([9, k], tf.int64)
        a, b = make(example, seed), make(without_mask, seed)
        np.testing.assert_array_equal(a["large"], b["large"])
        np.testing.assert_array_equal(a["small"], b["small"])


def test_saliency_masking_needs_min_fraction_of_the_whole_image():
    example = _example_with_known_mask()  # the object covers 24 x 24 / 40 x 40 = 36 %
    masked_cfg = demo_config(mask_apply_prob=1.0, mask_min_fraction=0.4, num_large_views=2,
                             num_small_views=0)
    plain_cfg = demo_config(mask_apply_prob=0.0, num_large_views=2, num_small_views=0)
    both = _masked_and_plain(masked_cfg, plain_cfg)
    for k in range(3):  # whatever the crop covers, the whole image's 36 % decides: never masked
        masked, plain = both(example, tf.constant([1, k], tf.int64))
        np.testing.assert_array_equal(masked["large"], plain["large"])


def test_source_without_masks_refuses_masking_instead_of_switching_it_off(tmp_path):
    """A config that enables saliency masking on data without masks is an error, never a log
    line (config.validate refuses it statically; the pipeline refuses it when it reads data)."""
    from PIL import Image
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(4):
            image = Image.fromarray(np.full([20, 24, 3], 40 * i, np.uint8))
            image.save(tmp_path / label / f"{i}.png")
    config = demo_config(source="image_folder", data_dir=str(tmp_path), num_examples=-1,
                         mask_apply_prob=0.5, num_large_views=1, num_small_views=0)
    with pytest.raises(ValueError, match="data.mask_apply_prob=0.5: uses a foreground mask"):
        first_batch(config, batch_size=4)
    config.mask_apply_prob = 0.0
    assert first_batch(config, batch_size=4)["large"].shape == (4, 1, 32, 32, 3)


def test_bg_swaps_outputs_hard_negatives():
    config = demo_config(source="synthetic", image_size=32, small_image_size=16, num_examples=32,
                         bg_swaps_prob=1.0, mask_min_fraction=0.02, num_large_views=2,
                         num_small_views=0)
    batch = first_batch(config, batch_size=8)
    assert batch["hard_negative"].shape == (8, 32, 32, 3)
    valid = batch["hard_negative_valid"].numpy()
    assert valid.dtype == np.float32 and set(valid) <= {0.0, 1.0} and valid.sum() >= 2
    pixels = normalize.denormalize_images(batch["hard_negative"]).numpy()
    assert pixels.min() >= -1e-4 and pixels.max() <= 1 + 1e-4


def test_input_context_shards_examples_between_pipelines():
    config = demo_config(num_examples=32, shuffle_buffer=1, num_large_views=1,
                         num_small_views=0)
    ids = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        batches = views.pretrain_dataset(config, batch_size=4, seed=0, input_context=context,
                                         repeat=False)
        ids.append({i for b in batches for i in b["id"].numpy()})
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert len(ids[0] | ids[1]) == 32


@pytest.fixture(scope="module")
def tf_data_service():
    """An in-process tf.data service: one dispatcher and two workers on localhost."""
    service = tf.data.experimental.service
    dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
    address = dispatcher.target.split("://")[1]
    workers = [service.WorkerServer(service.WorkerConfig(dispatcher_address=address))
               for _ in range(2)]
    yield dispatcher.target
    for server in workers + [dispatcher]:
        server.stop()


def test_tf_data_service_workers_split_each_epoch_without_duplicates(tf_data_service):
    # "distributed_epoch": the two workers share the epoch, so every example arrives once
    # (the "parallel_epochs" recipe would send each of them twice, with identical views).
    # BG_Random/BG_Swaps on: the zipped "other image" stream goes through the service too.
    config = demo_config(source="synthetic", num_examples=48, shuffle_buffer=16,
                         bg_random_prob=0.5, bg_swaps_prob=0.5,
                         tf_data_service_address=tf_data_service)
    batches = list(views.pretrain_dataset(config, batch_size=8, seed=0, repeat=False))
    ids = [i for b in batches for i in b["id"].numpy()]
    assert len(ids) == len(set(ids))
    # Each worker drops the remainder of its own part (< 8 examples each).
    assert len(ids) >= 48 - 2 * 7 and set(ids) <= {f"synthetic/train/{i:06d}".encode()
                                                     for i in range(48)}
    batch = batches[0]
    assert batch["large"].shape == (8, 4, 32, 32, 3) and batch["small"].shape == (8, 2, 16, 16, 3)
    assert batch["hard_negative"].shape == (8, 32, 32, 3)


def test_tf_data_service_epoch_delivers_every_example_exactly_once(tf_data_service):
    """pretrain_dataset's processing mode, "distributed_epoch" (ShardingPolicy.DYNAMIC): the
    dispatcher hands splits of the source to the workers; TF guarantees at-most-once visitation
    (a worker that dies loses its current split), exactly once without failures. With batch 1 no
    worker has a remainder to drop, so one epoch is every example, once."""
    config = demo_config(source="synthetic", num_examples=48, shuffle_buffer=16,
                         bg_random_prob=0.5, tf_data_service_address=tf_data_service)
    batches = views.pretrain_dataset(config, batch_size=1, seed=0, repeat=False)
    ids = sorted(i for b in batches for i in b["id"].numpy())
    assert ids == [f"synthetic/train/{i:06d}".encode() for i in range(48)]


def test_tf_data_service_address_is_checked():
    config = config_lib.get_default_config()
    config.data.tf_data_service_address = "data-0:5050"
    with pytest.raises(ValueError, match="grpc://host:port"):
        config_lib.validate(config)


IDENTITY = dict(color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0,
                flip_prob=0.0, crop_area_range=(1.0, 1.0))


def identity_table(monkeypatch, name="relicv2", **changes):
    """Replaces the table `name` by one whose views are the whole image, untouched (plus
    `changes(key)` per (parity, size) key)."""
    import dataclasses
    table = {key: dataclasses.replace(value, **{**IDENTITY,
                                                **{k: f(key) for k, f in changes.items()}})
             for key, value in augment_tables.AUGMENTATION_TABLES[name].items()}
    monkeypatch.setitem(augment_tables.AUGMENTATION_TABLES, name, table)


def test_view_parity_follows_table_16_in_make_views(monkeypatch):
    # Only "even" views are solarised (probability 1), nothing else runs: then exactly large
    # views 2 and 4 (indices 1, 3) and small view 2 change.
    identity_table(monkeypatch, solarize_prob=lambda key: 1.0 if key[0] == "even" else 0.0)
    example = _example_with_known_mask()
    out = views.make_views(example, tf.constant([0, 0], tf.int64), demo_config(mask_apply_prob=0))
    large = normalize.denormalize_images(out["large"]).numpy()
    small = normalize.denormalize_images(out["small"]).numpy()
    assert large[[1, 3]].max() <= 0.5 + 1e-4 and large[[0, 2]].max() > 0.9
    assert small[1].max() <= 0.5 + 1e-4 and small[0].max() > 0.9


@pytest.mark.parametrize("name", ["byol", "simclr", "moco_v2", "swav"])
def test_make_views_reads_the_table_named_by_data_augmentation(monkeypatch, name):
    identity_table(monkeypatch, name, solarize_prob=lambda key: 1.0)  # every view solarised
    example = _example_with_known_mask()
    config = demo_config(mask_apply_prob=0, augmentation=name, num_large_views=2,
                         num_small_views=2 if name == "swav" else 0)
    out = views.make_views(example, tf.constant([0, 0], tf.int64), config)
    pixels = normalize.denormalize_images(out["large"]).numpy()
    assert pixels.max() <= 0.5 + 1e-4  # solarised: the table was used
    identity_table(monkeypatch)  # the relicv2 table: untouched views
    relicv2 = views.make_views(example, tf.constant([0, 0], tf.int64),
                               demo_config(mask_apply_prob=0, num_large_views=2))
    assert normalize.denormalize_images(relicv2["large"]).numpy().max() > 0.9


def test_small_views_need_a_table_with_small_crops():
    config = demo_config(augmentation="byol", num_small_views=2)
    with pytest.raises(ValueError, match="no small views"):
        first_batch(config)
    full = config_lib.get_default_config()
    full.data.augmentation, full.data.num_small_views = "moco_v2", 1
    with pytest.raises(ValueError, match="num_small_views=0"):
        config_lib.validate(full)


def _swaps_example(size=32):
    """Anchor: noise (channels <= 0.5) with a pure-green disc."""
    rng = np.random.RandomState(3)
    image = (rng.rand(size, size, 3) * 127).astype(np.uint8)
    y, x = np.mgrid[0:size, 0:size]
    disc = ((y - 15) ** 2 + (x - 13) ** 2) <= 36
    image[disc] = (0, 255, 0)
    mask = disc[..., None].astype(np.uint8) * 255
    return {"image": tf.constant(image), "mask": tf.constant(mask), "label": tf.constant(0),
            "id": tf.constant("anchor")}, disc


def _other_example(fg, bg, size=32):
    image = np.empty([size, size, 3], np.uint8)
    image[:] = bg
    mask = np.zeros([size, size, 1], np.uint8)
    mask[4:14, 18:28] = 255
    image[mask[..., 0] > 0] = fg
    return {"image": tf.constant(image), "mask": tf.constant(mask), "label": tf.constant(1),
            "id": tf.constant("other")}


@pytest.mark.parametrize("fg,bg", [((255, 0, 0), (0, 0, 255)), ((0, 0, 255), (255, 0, 0))])
def test_bg_swaps_triplet_in_make_views(monkeypatch, fg, bg):
    # Identity augmentations, so each view is the whole 32 px image: the positive (view 2) is the
    # anchor's disc on the other image's background, the hard negative the other image's object
    # over the disc on the anchor's background; both from the one other image given.
    identity_table(monkeypatch)
    example, disc = _swaps_example()
    config = demo_config(bg_swaps_prob=1.0, num_large_views=2, num_small_views=0,
                         mask_apply_prob=0.0, mask_min_fraction=0.05)
    out = views.make_views(example, tf.constant([4, 2], tf.int64), config,
                           _other_example(fg, bg))
    anchor = example["image"].numpy() / 255.0
    large = normalize.denormalize_images(out["large"]).numpy()
    negative = normalize.denormalize_images(out["hard_negative"]).numpy()
    assert float(out["hard_negative_valid"]) == 1.0
    np.testing.assert_allclose(large[0], anchor, atol=1e-4)  # the anchor is untouched
    np.testing.assert_allclose(large[1][disc], anchor[disc], atol=1e-4)
    np.testing.assert_allclose(large[1][~disc], np.broadcast_to(np.array(bg) / 255.0,
                                                                large[1][~disc].shape), atol=1e-4)
    np.testing.assert_allclose(negative[disc], np.broadcast_to(np.array(fg) / 255.0,
                                                               negative[disc].shape), atol=1e-4)
    # Every other pixel mixes the other's object colour and the anchor's own pixel (soft edges of
    # the moved object), and most are the anchor's background itself.
    colour = np.array(fg, np.float64) / 255.0
    direction = colour - anchor
    alpha = ((negative - anchor) * direction).sum(-1) / (direction ** 2).sum(-1)
    residual = np.abs(negative - anchor - alpha[..., None] * direction).max(-1)
    assert residual[~disc].max() < 2e-3 and -2e-3 < alpha.min() and alpha.max() < 1 + 2e-3
    anchor_background = ~disc & (alpha < 1e-3)
    assert anchor_background.mean() > 0.5
    np.testing.assert_allclose(negative[anchor_background], anchor[anchor_background], atol=2e-3)
    assert negative[..., 1].max() <= 0.5  # no trace of the green disc


def test_bg_swaps_valid_exactly_when_the_positive_is_swapped():
    example, _ = _swaps_example()
    other = _other_example((255, 0, 0), (0, 0, 255))
    config = demo_config(bg_swaps_prob=0.5, num_large_views=2, num_small_views=0,
                         mask_apply_prob=0.0, mask_min_fraction=0.05)
    plain = demo_config(num_large_views=2, num_small_views=0, mask_apply_prob=0.0)
    with_swaps = tf.function(lambda s: views.make_views(example, s, config, other),
                             autograph=False)
    without = tf.function(lambda s: views.make_views(example, s, plain, other), autograph=False)
    valid = []
    for k in range(24):
        seed = tf.constant([9, k], tf.int64)
        out, reference = with_swaps(seed), without(seed)
        swapped = np.abs(out["large"][1] - reference["large"][1]).max() > 1e-4
        assert swapped == bool(out["hard_negative_valid"])
        np.testing.assert_allclose(out["large"][0], reference["large"][0], atol=1e-5)
        valid.append(swapped)
    assert 3 < sum(valid) < 21


@pytest.mark.parametrize("method,refused", [("moco_v2", False), ("simclr", False),
                                            ("byol", True), ("swav", True), ("relicv2", True)])
def test_config_validation_refuses_bg_swaps_without_negatives(method, refused):
    import importlib
    module = "relicv2_r50_imagenet" if method == "relicv2" else method
    config = importlib.import_module(f"experiments.configs.{module}").get_config()
    config.data.source, config.data.tfds_name = "synthetic", ""
    config.data.bg_swaps_prob = 0.2
    if refused:
        with pytest.raises(ValueError, match="bg_swaps_prob=0"):
            config_lib.validate(config)
    else:
        config_lib.validate(config)


def test_bg_swaps_configs_exist_only_for_contrastive_methods():
    import importlib
    from pathlib import Path

    from experiments.configs import background_augmentations, imagenette64
    configs = Path(__file__).resolve().parents[1] / "experiments" / "configs"
    assert sorted(p.stem for p in configs.glob("*_bg_swaps.py")) == ["moco_v2_bg_swaps",
                                                                      "simclr_bg_swaps"]
    for stem in ("moco_v2_bg_swaps", "simclr_bg_swaps"):
        assert importlib.import_module(f"experiments.configs.{stem}").get_config(
        ).data.bg_swaps_prob > 0
    byol = importlib.import_module("experiments.configs.byol").get_config()
    with pytest.raises(ValueError, match="bg_rm or bg_random"):
        background_augmentations.with_background(byol, "bg_swaps")
    with pytest.raises(ValueError, match="bg_rm or bg_random"):
        imagenette64.get_config("swav,bg_swaps")
    assert imagenette64.get_config("simclr,bg_swaps").data.bg_swaps_prob > 0
