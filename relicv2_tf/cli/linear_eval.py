"""`relicv2-linear-eval`: linear evaluation of a frozen encoder (ReLICv2 appendix B.1).

  relicv2-linear-eval --config=experiments/configs/linear_eval_imagenet.py \
      --config.encoder_dir=runs/r50/encoder --output_dir=runs/r50/linear
  relicv2-linear-eval --config=experiments/configs/linear_eval_imagenette.py \
      --config.random_init=True --output_dir=runs/imagenette/linear_random

Writes <output_dir>/linear_head.keras (the head serving exports next to the encoder),
<output_dir>/linear_eval.json and prints a one-line summary. Rerunning the same command resumes
from the latest checkpoint in <output_dir>/checkpoints.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. experiments/configs/linear_eval_imagenet.py.",
    lock_config=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Directory for results, the linear head and checkpoints.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, output_dir = _CONFIG.value, _OUTPUT_DIR.value
    if config is None or not output_dir:
        raise app.UsageError("relicv2-linear-eval needs --config=<file> and --output_dir=<dir>.")
    from relicv2_tf.evaluation import linear, results

    try:
        encoder = linear.encoder_from_config(config)
        num_classes = linear.resolve_num_classes(config.num_classes, config.data,
                                                 config.train_split)
    except (ValueError, FileNotFoundError) as error:
        print(f"relicv2-linear-eval: {error}", file=sys.stderr)
        sys.exit(2)
    train_examples = linear.labelled_examples(config.data, config.train_split, seed=config.seed)
    test_examples = linear.labelled_examples(config.data, config.test_split, seed=config.seed)
    head, metrics, info = linear.linear_eval(
        encoder, train_examples, test_examples, num_classes=num_classes, seed=config.seed,
        eval_batch_size=config.eval_batch_size, progress=_PROGRESS.value,
        checkpoint_dir=os.path.join(output_dir, "checkpoints"), **config.linear.to_dict())
    head_path = linear.save_head(head, output_dir)
    details = {"head": head_path, "encoder_dir": config.encoder_dir or "random_init",
               "num_train_examples": info["num_train_examples"],
               "epoch_losses": info["losses"]}
    results.write_result(output_dir, "linear_eval", metrics, config=config, details=details)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
