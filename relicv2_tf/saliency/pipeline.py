"""The label-free saliency pipeline (ReLICv2 appendix F.2), one stage per call.

priors:   random subset of data.data_dir -> handcrafted maps -> <workdir>/priors.npz
refine:   DeepUSPS stages 1 + 2 -> <workdir>/saliency_network/, <workdir>/refined.npz
generate: masks (generate.source: the network or the fused priors) for every image of
          generate.data_root/<split> -> TFRecord shards + a figure
evaluate: label-free foreground / background check of priors vs network -> evaluate.json

`run_stage(config, stage)` runs one and returns its JSON-able summary; `relicv2-saliency` is its
command. `generate` also runs as an Apache Beam pipeline (`beam_runner`:
saliency/beam_generate.py). Each stage imports what it needs when it runs: the priors stage
(scipy / skimage, worker processes) never loads TensorFlow.
"""

from __future__ import annotations

import functools
import json
import os
import time

import numpy as np


def _subset(entries, size, seed):
    if size <= 0 or size >= len(entries):
        return list(entries)
    index = np.sort(np.random.default_rng(seed).choice(len(entries), size, replace=False))
    return [entries[i] for i in index]


def _load_images(entries, size, progress=True):
    import tqdm

    from relicv2_tf.saliency import generate

    return np.stack([generate.load_resized(path, size)
                     for path, _, _ in tqdm.tqdm(entries, desc="load images",
                                                 disable=not progress)])


def run_priors(config, progress: bool = True) -> dict:
    """Handcrafted priors of a random subset of `config.data.data_dir`."""
    from relicv2_tf.saliency import generate, handcrafted

    if not config.data.data_dir:
        raise ValueError("set --config.data.data_dir to an ImageFolder root.")
    start = time.time()
    entries = _subset(generate.list_image_folder(config.data.data_dir), config.data.subset_size,
                      config.seed)
    images = _load_images(entries, config.data.image_size, progress)
    priors = handcrafted.priors_for_images(
        images, config.priors.names, config.priors.n_segments, config.priors.compactness,
        config.priors.num_workers, progress=progress)
    os.makedirs(config.workdir, exist_ok=True)
    path = os.path.join(config.workdir, "priors.npz")
    np.savez_compressed(path, images=images, ids=np.array([e[2] for e in entries]),
                        **{f"prior_{k}": v for k, v in priors.items()})
    seconds = time.time() - start
    return {"stage": "priors", "path": path, "num_images": len(images),
            "seconds": round(seconds, 1), "images_per_second": round(len(images) / seconds, 2)}


def _read_priors(workdir):
    path = os.path.join(workdir, "priors.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run --stage=priors first.")
    data = np.load(path)
    priors = {k[len("prior_"):]: data[k].astype(np.float32) / 255.0
              for k in data.files if k.startswith("prior_")}
    return data["images"], priors


def _check_encoder(network_config):
    """The refinement starts from a self-supervised encoder of this project (ReLICv2 F.2.1)."""
    if not network_config.encoder_dir and not network_config.allow_random_init:
        raise ValueError(
            "set --config.network.encoder_dir=<pretrain workdir>/encoder: the saliency network "
            "is initialised from a self-supervised encoder of this project (relicv2-pretrain "
            "writes one); --config.network.allow_random_init=True trains from random weights "
            "instead (tests and demos only).")
    if network_config.encoder_dir and not os.path.isdir(network_config.encoder_dir):
        raise ValueError(f"--config.network.encoder_dir={network_config.encoder_dir!r} is not "
                         "a directory (expected <pretrain workdir>/encoder).")


def run_refine(config, progress: bool = True) -> dict:
    """The refinement (DeepUSPS stages 1 + 2) of the priors into a saliency network."""
    _check_encoder(config.network)
    from relicv2_tf.saliency import network, refine

    start = time.time()
    images, priors = _read_priors(config.workdir)
    priors = {k: priors[k] for k in config.priors.names}
    image_size = images.shape[1]
    factory = lambda: network.build_saliency_network(config.network, image_size)  # noqa: E731
    arch = network.architecture(config.network, image_size)
    stage_callback = None
    if config.refine.save_stage_networks:  # <workdir>/stages/<prior>_round<r>/
        stage_callback = lambda stage, model: network.save_saliency_network(  # noqa: E731
            model, arch, os.path.join(config.workdir, "stages", stage))
    model, refined, fused = refine.run_refinement(factory, images, priors, config,
                                                  progress=progress,
                                                  stage_callback=stage_callback)
    directory = network.save_saliency_network(
        model, arch, os.path.join(config.workdir, "saliency_network"))
    np.savez_compressed(os.path.join(config.workdir, "refined.npz"), fused=_to_uint8(fused),
                        **{f"refined_{k}": _to_uint8(v) for k, v in refined.items()})
    change = {k: round(float(np.abs(refined[k] - priors[k]).mean()), 4) for k in refined}
    return {"stage": "refine", "network_dir": directory, "num_images": len(images),
            "mean_abs_change_from_prior": change, "seconds": round(time.time() - start, 1)}


def _to_uint8(maps):
    return np.round(np.clip(maps, 0, 1) * 255).astype(np.uint8)


GENERATE_SOURCES = ("network", "fused_priors")


def mask_source(config):
    """-> (predict_fn(uint8 [B, S, S, 3]) -> float [B, S, S] in [0, 1], S, figure title) for
    `generate.source`: the trained saliency network at its own input size, or the mean of the
    handcrafted priors (`handcrafted.fused_priors`) at `data.image_size`, the size the priors
    stage and the dev-set measurement use."""
    from relicv2_tf.saliency import handcrafted, network, refine

    gen = config.generate
    if gen.source == "fused_priors":
        p = config.priors
        predict_fn = lambda batch: handcrafted.fused_priors(  # noqa: E731
            batch, p.names, p.n_segments, p.compactness)
        return predict_fn, config.data.image_size, "fused priors"
    model, arch = network.load_saliency_network(
        _local_directory(os.path.join(config.workdir, "saliency_network")))
    predict_fn = lambda batch: refine.predict_maps(model, batch, gen.batch_size)  # noqa: E731
    return predict_fn, arch["image_size"], "network"


def _local_directory(directory: str) -> str:
    """`directory` itself, or for a URL (gs://..., as the workers of a Beam run on a cluster
    get it) a local copy of its files: Keras reads weights from local files."""
    if "://" not in directory:
        return directory
    import tempfile

    import tensorflow as tf

    if not tf.io.gfile.isdir(directory):
        return directory  # load_saliency_network says what is missing
    local = tempfile.mkdtemp(prefix="saliency_network_")
    for name in tf.io.gfile.listdir(directory):
        tf.io.gfile.copy(f"{directory.rstrip('/')}/{name}", os.path.join(local, name))
    return local


def check_generate_config(config):
    """The generate stage's settings, checked before any work (ValueError naming the fix)."""
    gen = config.generate
    if gen.source not in GENERATE_SOURCES:
        raise ValueError(f"generate.source={gen.source!r}: choose one of {GENERATE_SOURCES}.")
    if not gen.data_root or not gen.output_dir:
        raise ValueError("set --config.generate.data_root and --config.generate.output_dir.")


def save_generate_figure(config, source=None) -> str | None:
    """The sample figure (images, priors, generated masks) when the priors stage ran; its path.
    `source`: `mask_source(config)` when the caller has it loaded."""
    from relicv2_tf.saliency import generate

    if not os.path.exists(os.path.join(config.workdir, "priors.npz")):
        return None
    predict_fn, image_size, title = source or mask_source(config)
    gen = config.generate
    images, priors = _read_priors(config.workdir)
    k = gen.figure_samples
    sample = np.stack([generate.resize_uint8(im, image_size) for im in images[:k]])
    figure = gen.figure_path or os.path.join(config.workdir, "saliency_samples.png")
    return generate.save_figure(figure, images[:k], {n: v[:k] for n, v in priors.items()},
                                predict_fn(sample), k, last_title=title)


def run_generate(config, num_workers: int | None = None, worker_index: int | None = None,
                 progress: bool = True) -> dict:
    """Masks of every image of `generate.data_root/<split>`, this worker's shards only;
    `num_workers` / `worker_index` override the config's. The masks come from
    `generate.source`: "network" (the refine stage's saliency network) or "fused_priors" (the
    mean of the four handcrafted priors, computed on each image; needs no refine stage)."""
    from relicv2_tf.saliency import generate

    check_generate_config(config)
    gen = config.generate
    num_workers = gen.num_workers if num_workers is None else num_workers
    worker_index = gen.worker_index if worker_index is None else worker_index
    source = mask_source(config)
    predict_fn, image_size, _ = source
    results = [generate.generate_masks(
        os.path.join(gen.data_root, split), gen.output_dir, predict_fn, image_size,
        num_shards=gen.num_shards, num_workers=num_workers, worker_index=worker_index,
        batch_size=gen.batch_size, prefix=split, num_examples=gen.num_examples,
        progress=progress)
        for split in gen.splits]
    summary = {"stage": "generate", "source": gen.source, "output_dir": gen.output_dir,
               "splits": results}
    if worker_index == 0:
        figure = save_generate_figure(config, source)
        if figure:
            summary["figure"] = figure
    return summary


def run_generate_on_beam(config, runner: str, beam_options=()) -> dict:
    """The generate stage as an Apache Beam pipeline on `runner` (saliency/beam_generate.py);
    Beam is an optional requirement, imported only here."""
    import importlib

    try:
        beam_generate = importlib.import_module("relicv2_tf.saliency.beam_generate")
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("apache_beam"):
            raise
        raise ValueError(f"--beam_runner={runner} needs Apache Beam, which is not installed: "
                         "pip install -r requirements-beam.txt") from error
    return beam_generate.run(config, runner, beam_options)


def run_evaluate(config, progress: bool = True) -> dict:
    """The label-free check: how well masks of the priors, their mean, the network and a centred
    box separate foreground from background for a classifier; writes `<workdir>/evaluate.json`."""
    from relicv2_tf.saliency import generate, handcrafted, label_free, network, refine

    ev = config.evaluate
    entries = [e for e in generate.list_image_folder(ev.data_dir) if e[1] >= 0]
    if not entries:
        raise ValueError(f"{ev.data_dir} has no class folders: the check needs labels.")
    entries = _subset(entries, ev.num_images, config.seed + 1)
    images = _load_images(entries, ev.image_size, progress)
    labels = np.array([e[1] for e in entries])
    priors = handcrafted.priors_for_images(
        images, config.priors.names, config.priors.n_segments, config.priors.compactness,
        config.priors.num_workers, progress=progress)
    maps = {k: v.astype(np.float32) / 255.0 for k, v in priors.items()}
    maps["priors_mean"] = refine.fuse({k: maps[k] for k in priors})
    network_dir = os.path.join(config.workdir, "saliency_network")
    if os.path.exists(network_dir):
        model, arch = network.load_saliency_network(network_dir)
        net_in = np.stack([generate.resize_uint8(im, arch["image_size"]) for im in images])
        predicted = refine.predict_maps(model, net_in)
        maps["network"] = np.stack([generate.resize_map(m, ev.image_size, ev.image_size)
                                    for m in predicted])
    masks = {k: np.stack([label_free.binarize(m, ev.threshold_factor) for m in v])
             for k, v in maps.items()}
    # baseline: a centred square covering the mean foreground fraction of the last mask set
    box = _centre_box(ev.image_size, float(masks[list(masks)[-1]].mean()))
    masks["centre_box"] = np.broadcast_to(box, (len(images),) + box.shape)
    x01 = images.astype(np.float32) / 255.0
    features_fn = label_free.colour_texture_features
    if ev.encoder_dir:  # pooled features of a self-supervised encoder instead
        from relicv2_tf.evaluation import features
        from relicv2_tf.models import encoder_io

        encoder = encoder_io.load_encoder(ev.encoder_dir)
        features_fn = functools.partial(features.image_array_features, encoder, batch_size=64)
    results = {k: label_free.foreground_background_check(x01, m, labels, features_fn,
                                                         train_fraction=ev.train_fraction,
                                                         seed=config.seed)
               for k, m in masks.items()}
    summary = {"stage": "evaluate", "data_dir": ev.data_dir, "num_images": len(images),
               "image_size": ev.image_size, "threshold_factor": ev.threshold_factor,
               "features": ev.encoder_dir or "colour_texture", "results": results}
    os.makedirs(config.workdir, exist_ok=True)
    with open(os.path.join(config.workdir, "evaluate.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _centre_box(image_size: int, fraction: float) -> np.ndarray:
    """A centred square mask [S, S] covering `fraction` of the image."""
    side = int(round(image_size * np.sqrt(fraction)))
    lo = (image_size - side) // 2
    box = np.zeros((image_size, image_size), np.float32)
    box[lo:lo + side, lo:lo + side] = 1
    return box


STAGES = {"priors": run_priors, "refine": run_refine, "generate": run_generate,
          "evaluate": run_evaluate}


def run_stage(config, stage: str, num_workers: int | None = None,
              worker_index: int | None = None, progress: bool = True,
              beam_runner: str = "", beam_options=()) -> dict:
    """Runs one stage of the pipeline; returns its summary. `num_workers` / `worker_index` are
    for `generate` (they override `config.generate`'s); `beam_runner` (with `beam_options`, Beam
    PipelineOptions flags) runs `generate` as a Beam pipeline instead; `progress`: tqdm bars
    (False in logs)."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {tuple(STAGES)}.")
    if beam_options and not beam_runner:
        raise ValueError("--beam_options needs --beam_runner=<runner>, e.g. DirectRunner.")
    if beam_runner and stage != "generate":
        raise ValueError(f"--beam_runner runs the generate stage only, not {stage!r}.")
    if beam_runner:
        if num_workers is not None or worker_index is not None:
            raise ValueError("--num_workers / --worker_index split the generate stage by hand; "
                             "with --beam_runner the runner spreads the shards: drop them.")
        return run_generate_on_beam(config, beam_runner, beam_options)
    if stage == "generate":
        return run_generate(config, num_workers, worker_index, progress)
    if num_workers is not None or worker_index is not None:
        raise ValueError("num_workers / worker_index apply to the generate stage only.")
    return STAGES[stage](config, progress)
