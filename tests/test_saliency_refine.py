"""Saliency network, DeepUSPS-style refinement and mask-shard generation."""

import os

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from relicv2_tf.data import tfrecord_format
from relicv2_tf.models import encoder_io, resnet
from relicv2_tf.saliency import generate, metrics, network, refine


def disc_dataset(num, size=64, seed=0):
    """Reddish discs on striped green backgrounds -> (uint8 [N, S, S, 3], bool [N, S, S])."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, masks = [], []
    for i in range(num):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(0.15, 0.25) ** 2
        background = np.stack([0.3 + 0.1 * np.sin(xx * 40 + i), 0.5 + 0.1 * np.sin(yy * 30),
                               0.3 + 0 * xx], -1) + rng.normal(0, 0.05, (size, size, 3))
        foreground = np.array([0.85, 0.2, 0.2]) + rng.normal(0, 0.03, (size, size, 3))
        image = np.where(mask[..., None], foreground, background)
        images.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
        masks.append(mask)
    return np.stack(images), np.stack(masks)


def noisy_prior(masks, seed):
    """Handcrafted-like noise: the object at 0.6, a random distractor blob, pixel noise."""
    rng = np.random.default_rng(seed)
    size = masks.shape[1]
    yy, xx = np.mgrid[0:size, 0:size] / size
    maps = []
    for mask in masks:
        cy, cx = rng.uniform(0.1, 0.9, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
        maps.append(np.clip(0.6 * mask + 0.5 * blob + rng.normal(0, 0.15, mask.shape), 0, 1))
    return np.stack(maps).astype(np.float32)


def tiny_network_config(encoder_dir=""):
    return ml_collections.ConfigDict(dict(
        encoder_dir=encoder_dir, allow_random_init=not encoder_dir, depth=18,
        width_multiplier=0.25, decoder_channels=16))


def mean_f_beta(maps, masks):
    return float(np.mean([metrics.f_beta(m, g) for m, g in zip(maps, masks)]))


# ------------------------------------------------------------------------------ network
def test_network_shapes_and_group_outputs():
    backbone = resnet.resnet(18, 0.25)
    shapes = [tuple(t.shape[1:]) for t in network.group_outputs(backbone)]
    assert [s[-1] for s in shapes] == list(resnet.group_channels(18, 0.25))
    model = network.saliency_network(backbone, 64, decoder_channels=8)
    assert model(np.zeros((2, 64, 64, 3), np.float32)).shape == (2, 64, 64, 1)
    features = model.get_layer("backbone")(np.zeros((1, 64, 64, 3), np.float32))
    assert [f.shape[1] for f in features] == [16, 8, 4, 2]  # strides 4, 8, 16, 32
    with pytest.raises(ValueError, match="multiple of 32"):
        network.saliency_network(backbone, 48)


def test_backbone_comes_from_an_encoder_directory_never_silently_random(tmp_path):
    with pytest.raises(ValueError, match="allow_random_init"):
        network.build_backbone("", depth=18, width_multiplier=0.25)
    encoder = resnet.resnet(18, 0.25, name="encoder")
    encoder_io.save_encoder(encoder, {"depth": 18, "width_multiplier": 0.25}, str(tmp_path))
    model = network.build_saliency_network(tiny_network_config(str(tmp_path)), 64)
    loaded = model.get_layer("backbone").get_layer("initial_conv").get_weights()[0]
    np.testing.assert_array_equal(loaded, encoder.get_layer("initial_conv").get_weights()[0])
    arch = network.architecture(tiny_network_config(str(tmp_path)), 64)
    assert arch["depth"] == 18 and arch["width_multiplier"] == 0.25


# ------------------------------------------------------------------------------ refinement
def test_fuse_is_the_mean_or_its_threshold():
    a, b = np.array([[0.0, 1.0]]), np.array([[0.5, 0.5]])
    np.testing.assert_allclose(refine.fuse({"a": a, "b": b}), [[0.25, 0.75]])
    np.testing.assert_allclose(refine.fuse({"a": a, "b": b}, threshold=0.5), [[0.0, 1.0]])


def test_f_measure_loss_matches_numpy():
    """DeepUSPS' continuous F-measure loss against a direct numpy transcription of utils.F_cont
    (per image: soft TP / FP / FN of sigmoid(logits) against the target, 1 - F, batch mean)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (3, 8, 8, 1)).astype(np.float32)
    targets = (rng.random((3, 8, 8, 1)) < 0.3).astype(np.float32)
    targets[2] = rng.random((8, 8, 1))  # soft targets too
    for beta_squared in (1.0, 4.0, 0.3):
        p = 1 / (1 + np.exp(-logits.astype(np.float64)))
        tp = (p * targets).sum(axis=(1, 2, 3))
        fp = (p * (1 - targets)).sum(axis=(1, 2, 3))
        fn = ((1 - p) * targets).sum(axis=(1, 2, 3))
        precision, recall = tp / (tp + fp + 1e-5), tp / (tp + fn + 1e-5)
        f = (1 + beta_squared) * precision * recall / (beta_squared * precision + recall + 1e-5)
        ours = float(refine.f_measure_loss(tf.constant(logits), tf.constant(targets),
                                           beta_squared))
        np.testing.assert_allclose(ours, np.mean(1 - f), rtol=1e-5)
    perfect = np.where(targets[:2] > 0.5, 20.0, -20.0).astype(np.float32)
    assert float(refine.f_measure_loss(tf.constant(perfect), tf.constant(targets[:2]))) < 1e-4


def test_training_with_the_f_measure_loss_fits_binary_targets():
    images, masks = disc_dataset(8, 64)
    trainer = refine.Trainer(network.build_saliency_network(tiny_network_config(), 64))
    options = refine.TrainOptions(epochs=6, learning_rate=2e-3, batch_size=4, loss="f_measure",
                                  f_beta_squared=4.0)
    before = mean_f_beta(refine.predict_maps(trainer.model, images), masks)
    trainer.train(images, masks.astype(np.float32), options, progress=False)
    after = mean_f_beta(refine.predict_maps(trainer.model, images), masks)
    assert after > before + 0.2, (before, after)
    with pytest.raises(ValueError, match="f_measure"):
        trainer.step_for("dice")


def test_refinement_improves_agreement_with_the_known_mask():
    images, masks = disc_dataset(16, 64)
    priors = {"noisy_a": noisy_prior(masks, 1), "noisy_b": noisy_prior(masks, 2)}
    config = ml_collections.ConfigDict(dict(
        seed=0,
        refine=dict(rounds=2, epochs_per_round=6, learning_rate=2e-3, learning_rate_growth=1.0,
                    batch_size=4, adam_beta_1=0.9, prediction_ema=0.5, reset_each_round=False,
                    flip=True, loss="bce", f_beta_squared=1.0),
        final=dict(epochs=10, learning_rate=2e-3, fusion_threshold=-1.0, loss="bce",
                   f_beta_squared=4.0)))
    factory = lambda: network.build_saliency_network(tiny_network_config(), 64)  # noqa: E731
    stages = []  # every stage-1 network after every round (saved to score it on the dev set)
    model, refined, fused = refine.run_refinement(
        factory, images, priors, config, progress=False,
        stage_callback=lambda name, net: stages.append((name, float(np.mean(
            refine.predict_maps(net, images[:2]))))))
    assert [n for n, _ in stages] == ["noisy_a_round1", "noisy_a_round2", "noisy_b_round1",
                                      "noisy_b_round2"]
    assert len({m for _, m in stages}) == 4  # each saw a different network state
    raw = {k: mean_f_beta(v, masks) for k, v in priors.items()}
    better = {k: mean_f_beta(v, masks) for k, v in refined.items()}
    final = mean_f_beta(refine.predict_maps(model, images), masks)
    assert set(refined) == set(priors) and fused.shape == masks.shape
    for name in priors:
        assert better[name] > raw[name] + 0.1, (raw, better)
    assert final > max(raw.values()) + 0.1, (raw, final)


def test_a_non_finite_step_applies_nothing_and_stops_the_stage():
    """The saliency network's loop has the guard of every training loop: a NaN target map
    makes the step non-finite; no trainable weight or Adam slot changes (batch-norm moving
    statistics come from the finite images) and the stage stops, naming it."""
    from relicv2_tf.optim import guard

    images, masks = disc_dataset(4, 64)
    model = network.build_saliency_network(tiny_network_config(), 64)
    trainer = refine.Trainer(model)
    before = [v.numpy().copy() for v in model.trainable_weights + trainer.optimizer.variables
              if v.path != trainer.optimizer.iterations.path]
    targets = masks.astype(np.float32)
    targets[2, 10, 10] = np.nan
    options = refine.TrainOptions(epochs=1, learning_rate=1e-3, batch_size=4, flip=False,
                                  description="round 1 of prior x")
    with pytest.raises(guard.NonFiniteError, match=r"round 1 of prior x.*epoch 1, batch 1"):
        trainer.train(images, targets, options, progress=False)
    after = [v.numpy() for v in model.trainable_weights + trainer.optimizer.variables
             if v.path != trainer.optimizer.iterations.path]
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)
    trainer.train(images, masks.astype(np.float32), options, progress=False)  # finite: trains
    assert any(not np.array_equal(old, new.numpy())
               for old, new in zip(before, model.trainable_weights))


# ------------------------------------------------------------------------------ generation
@pytest.fixture()
def image_folder(tmp_path):
    """Two classes, JPEG and PNG, RGB and greyscale, different sizes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "train"
    for c, name in enumerate(["n001", "n002"]):
        (root / name).mkdir(parents=True)
        for i in range(5):
            height, width = 30 + 7 * i, 40 + 3 * c
            if i == 3:
                image = Image.fromarray(rng.integers(0, 255, (height, width), np.uint8), "L")
            else:
                image = Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8))
            image.save(root / name / f"img{i}.{'png' if i == 4 else 'jpg'}")
    return str(root)


def brightness_predictor(batch):
    return batch.mean(axis=-1) / 255.0


def read_shards(paths):
    examples = []
    for path in paths:
        for record in tf.data.TFRecordDataset(path):
            examples.append({k: v.numpy() for k, v in
                             tfrecord_format.parse_example(record).items()})
    return examples


def test_generation_writes_disjoint_shards_that_round_trip(image_folder, tmp_path):
    out = str(tmp_path / "masks")
    for worker in range(2):
        stats = generate.generate_masks(image_folder, out, brightness_predictor, 32,
                                        num_shards=3, num_workers=2, worker_index=worker,
                                        batch_size=4, prefix="train", progress=False)
        assert stats["shards_of_worker"] == (2 if worker == 0 else 1)
    files = sorted(os.listdir(out))
    assert files == [f"train-{i:05d}-of-00003.tfrecord" for i in range(3)]
    examples = read_shards([os.path.join(out, f) for f in files])
    entries = generate.list_image_folder(image_folder)
    assert sorted(e["id"].decode() for e in examples) == sorted(e[2] for e in entries)
    by_id = {e[2]: e for e in entries}
    for example in examples:
        path, label, _ = by_id[example["id"].decode()]
        with open(path, "rb") as f:
            assert example["image"] == f.read()  # original bytes, not re-encoded
        assert example["label"] == label
        image = tf.io.decode_image(example["image"], channels=3).numpy()
        mask = tf.io.decode_png(example["mask"]).numpy()
        assert mask.shape == image.shape[:2] + (1,) and mask.dtype == np.uint8
        expected = generate.resize_map(
            brightness_predictor(generate.resize_uint8(image, 32)[None])[0], *image.shape[:2])
        assert np.abs(mask[..., 0] / 255.0 - expected).max() < 0.05


def test_generation_resumes_after_a_kill(image_folder, tmp_path):
    out = str(tmp_path / "masks")
    calls = {"n": 0}

    def dies_on_second_shard(batch):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt("killed")
        return brightness_predictor(batch)

    with pytest.raises(KeyboardInterrupt):
        generate.generate_masks(image_folder, out, dies_on_second_shard, 32, num_shards=3,
                                batch_size=8, progress=False)
    finished = sorted(f for f in os.listdir(out) if f.endswith(".tfrecord"))
    assert finished == ["masks-00000-of-00003.tfrecord"]  # the interrupted shard is not final
    mtime = os.path.getmtime(os.path.join(out, finished[0]))
    stats = generate.generate_masks(image_folder, out, brightness_predictor, 32, num_shards=3,
                                    batch_size=8, progress=False)
    assert stats["shards_skipped"] == 1 and stats["examples_written"] == 10 - 4
    assert os.path.getmtime(os.path.join(out, finished[0])) == mtime
    assert sorted(os.listdir(out)) == [f"masks-{i:05d}-of-00003.tfrecord" for i in range(3)]
    again = generate.generate_masks(image_folder, out, brightness_predictor, 32, num_shards=3,
                                    progress=False)
    assert again["shards_skipped"] == 3 and again["examples_written"] == 0
    assert len(read_shards([os.path.join(out, f) for f in os.listdir(out)])) == 10


def test_saved_network_generates_masks_and_a_figure(image_folder, tmp_path):
    config = tiny_network_config()
    model = network.build_saliency_network(config, 32)
    network.save_saliency_network(model, network.architecture(config, 32), str(tmp_path / "net"))
    loaded, arch = network.load_saliency_network(str(tmp_path / "net"))
    assert arch["image_size"] == 32
    images = np.stack([generate.load_resized(p, 32) for p, _, _ in
                       generate.list_image_folder(image_folder)[:3]])
    for saved, restored in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(saved, restored)
    maps = refine.predict_maps(loaded, images)
    out = str(tmp_path / "masks")
    generate.generate_masks(image_folder, out, lambda b: refine.predict_maps(loaded, b), 32,
                            num_shards=1, progress=False)
    examples = read_shards([os.path.join(out, os.listdir(out)[0])])
    assert len(examples) == 10 and tf.io.decode_png(examples[0]["mask"]).shape[-1] == 1
    priors = {"rbd": np.zeros((3, 32, 32), np.float32), "mc": np.ones((3, 32, 32), np.float32)}
    path = generate.save_figure(str(tmp_path / "fig.png"), images, priors, maps)
    assert os.path.getsize(path) < 300_000
    assert Image.open(path).size[0] > Image.open(path).size[1]  # 3 rows x 4 columns
    with pytest.raises(FileNotFoundError, match="--stage=refine"):
        network.load_saliency_network(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="ImageFolder"):
        generate.list_image_folder(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="worker_index"):
        generate.worker_shards(4, 2, 2)
