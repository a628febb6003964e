"""`relicv2-pretrain`: self-supervised pretraining from a config file.

  relicv2-pretrain --config=experiments/configs/demo.py --workdir=runs/demo
  relicv2-pretrain --config=experiments/configs/relicv2_r50_imagenet.py \
      --config.data.data_dir='gs://bucket/imagenet_masks/train-*' \
      --workdir=gs://bucket/relicv2 --strategy=tpu

Rerunning the same command resumes from the latest checkpoint in --workdir. When the data
source has labels and a held-out split (the demo's digits, ImageFolder, TFDS; or the source
named by config.evaluation.knn_source), the run ends with a kNN evaluation of the pretrained
encoder next to a random-init encoder of the same architecture; config.evaluation.
knn_every_steps also monitors it during training.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from relicv2_tf.cli import strategy_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. experiments/configs/demo.py.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and encoder.")
_KNN = flags.DEFINE_bool("knn_eval", True, "kNN-evaluate pretrained vs random-init encoder.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("Both --config and --workdir are required, e.g. "
                             "--config=experiments/configs/demo.py --workdir=runs/demo")
    config = _CONFIG.value
    if config.training.mixed_precision == "mixed_bfloat16":
        from relicv2_tf import distribute
        if distribute.avoid_onednn_bfloat16():  # before TensorFlow starts
            print("relicv2-pretrain: CPU with bfloat16 units: TF_ENABLE_ONEDNN_OPTS=0 for "
                  "bfloat16 (docs/SCALING.md, 'bfloat16 on CPUs').")
    # Imports after flag parsing so that --help and flag errors are instant.
    from relicv2_tf import config as config_lib
    from relicv2_tf import distribute, train
    from relicv2_tf.evaluation import knn_report
    from relicv2_tf.optim import guard

    try:
        config_lib.validate(config)
        strategy = strategy_flags.strategy_from_flags()
        distribute.per_replica_batch_size(config.training.batch_size, strategy)
    except (ValueError, RuntimeError) as error:
        print(f"relicv2-pretrain: {error}", file=sys.stderr)
        sys.exit(2)
    try:
        _, summary = train.pretrain(config, _WORKDIR.value, strategy)
    except guard.NonFiniteError as error:
        print(f"relicv2-pretrain: {error}", file=sys.stderr)
        sys.exit(3)
    except ValueError as error:  # bad data found while building the input (names the fix)
        logging.debug("Traceback:", exc_info=True)
        print(f"relicv2-pretrain: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"Pretraining done: {summary['steps']} steps in {summary['seconds']:.0f} s; "
          f"encoder written to {summary['encoder_dir']}")
    if _KNN.value and knn_report.labelled_data_config(config).source in knn_report.EVAL_SPLITS:
        e = config.evaluation
        result = knn_report.compare_with_random_init(
            config, summary["encoder_dir"], k=e.knn_k, temperature=e.knn_temperature,
            max_examples=e.knn_max_examples)
        with open(os.path.join(_WORKDIR.value, "knn_eval.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(f"kNN top-1 (k={result['k']}, {result['num_train']} train / {result['num_test']} "
              f"test images): pretrained {result['pretrained_top1']:.4f} vs random-init "
              f"{result['random_init_top1']:.4f}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
