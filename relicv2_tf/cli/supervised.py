"""`relicv2-supervised`: the supervised baseline, the same ResNet trained with labels.

  relicv2-supervised --config=experiments/configs/supervised_imagenette.py \
      --output_dir=runs/imagenette/supervised

Writes <output_dir>/encoder (encoder_io format, evaluate it with relicv2-linear-eval like any
pretrained encoder), <output_dir>/linear_head.keras (its own classifier) and
<output_dir>/supervised.json (accuracy of the supervised classifier on the test split).
Rerunning resumes from <output_dir>/checkpoints.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. experiments/configs/supervised_imagenette.py.",
    lock_config=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory for results and checkpoints.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, output_dir = _CONFIG.value, _OUTPUT_DIR.value
    if config is None or not output_dir:
        raise app.UsageError("relicv2-supervised needs --config=<file> and --output_dir=<dir>.")
    import keras

    from relicv2_tf.evaluation import linear, results, supervised
    from relicv2_tf.models import encoder_io

    try:
        num_classes = linear.resolve_num_classes(config.num_classes, config.data,
                                                 config.train_split)
        train_examples = linear.labelled_examples(config.data, config.train_split)
        test_examples = linear.labelled_examples(config.data, config.test_split)
    except (ValueError, FileNotFoundError) as error:
        print(f"relicv2-supervised: {error}", file=sys.stderr)
        sys.exit(2)
    keras.utils.set_random_seed(config.seed)
    model_config = encoder_io.encoder_config(config.model)
    encoder = encoder_io.build_encoder(model_config)
    head, info = supervised.train_supervised(
        encoder, train_examples, num_classes=num_classes, seed=config.seed,
        progress=_PROGRESS.value, checkpoint_dir=os.path.join(output_dir, "checkpoints"),
        **config.supervised.to_dict())
    encoder_dir = encoder_io.save_encoder(encoder, model_config,
                                          os.path.join(output_dir, "encoder"))
    linear.save_head(head, output_dir)
    metrics = linear.evaluate_head(encoder, head, test_examples, num_classes=num_classes,
                                   batch_size=config.eval_batch_size,
                                   image_size=config.supervised.image_size,
                                   resize_size=config.resize_size, progress=_PROGRESS.value)
    details = {"encoder": encoder_dir, "num_train_examples": info["num_train_examples"],
               "learning_rate": info["learning_rate"], "epoch_losses": info["losses"]}
    results.write_result(output_dir, "supervised", metrics, config=config, details=details)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
