"""`relicv2-backgrounds`: ImageNet-9 background robustness and BG-gap.

  relicv2-backgrounds --config=experiments/configs/backgrounds_imagenet9.py \
      --config.encoder_dir=runs/r50/encoder --config.imagenet9_root=data/bg_challenge \
      --output_dir=runs/r50/backgrounds

Writes <output_dir>/backgrounds.json (accuracy per variant and bg_gap).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from relicv2_tf import config as config_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. experiments/configs/backgrounds_imagenet9.py.",
    lock_config=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory for results.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def _folder(root: str):
    data = config_lib.get_default_config().data
    data.source, data.data_dir, data.split = "image_folder", root, ""
    return data


def _imagenet9_variants(config):
    from relicv2_tf.evaluation import backgrounds
    if not config.imagenet9_root or not os.path.isdir(config.imagenet9_root):
        raise ValueError(f"--config.imagenet9_root={config.imagenet9_root!r} is not a directory "
                         "(the Backgrounds Challenge root, holding <variant>/val/<class>/).")
    variants = {}
    for name in backgrounds.VARIANTS:
        folder = os.path.join(config.imagenet9_root, name, config.imagenet9_split)
        if os.path.isdir(folder):
            variants[name] = _folder(folder)
    if "original" not in variants:
        raise ValueError(f"{config.imagenet9_root}/original/{config.imagenet9_split} is missing.")
    return variants


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, output_dir = _CONFIG.value, _OUTPUT_DIR.value
    if config is None or not output_dir:
        raise app.UsageError("relicv2-backgrounds needs --config=<file> and --output_dir=<dir>.")
    if config.mode not in ("imagenet9", "masks") or config.head not in ("train", "imagenet"):
        raise app.UsageError("--config.mode must be imagenet9 | masks and --config.head "
                             "train | imagenet.")
    import keras

    from relicv2_tf.evaluation import backgrounds, linear, results

    progress = _PROGRESS.value
    try:
        encoder = linear.encoder_from_config(config)
        if config.mode == "imagenet9":
            variant_data = _imagenet9_variants(config)
            train_data, train_split = None, None
            train_root = os.path.join(config.imagenet9_root, "original", "train")
            if config.head == "train":
                if not os.path.isdir(train_root):
                    raise ValueError(f"{train_root} is missing: head=train needs the original "
                                     "training images (or use --config.head=imagenet).")
                train_data, train_split = _folder(train_root), ""
            num_classes = (config.num_classes if config.num_classes > 0 else
                           linear.infer_num_classes(variant_data["original"], ""))
        else:
            train_data, train_split = config.data, config.train_split
            num_classes = linear.resolve_num_classes(config.num_classes, config.data,
                                                     config.train_split)
        superclass_of = None
        if config.head == "imagenet":
            head = keras.models.load_model(config.head_path)
            superclass_of = backgrounds.read_in_to_in9(config.in_to_in9)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"relicv2-backgrounds: {error}", file=sys.stderr)
        sys.exit(2)

    size = dict(image_size=config.image_size, resize_size=config.resize_size)
    if config.head == "train":
        head, _ = linear.train_linear_head(
            encoder, linear.labelled_examples(train_data, train_split), num_classes=num_classes,
            augment=False, seed=config.seed, progress=progress, **size,
            **config.linear.to_dict())
    if config.mode == "imagenet9":
        variants = {name: linear.labelled_examples(data, "")
                    for name, data in variant_data.items()}
    else:
        images, masks, labels = backgrounds.load_masked_examples(
            linear.labelled_examples(config.data, config.test_split, with_masks=True), **size)
        variants = {name: (composed, labels) for name, composed in
                    backgrounds.make_variants(images, masks, labels, config.seed).items()}
    metrics = backgrounds.evaluate_variants(encoder, head, variants, num_classes=num_classes,
                                            superclass_of=superclass_of,
                                            batch_size=config.batch_size, progress=progress,
                                            **size)
    results.write_result(output_dir, "backgrounds", metrics, config=config)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
