"""`relicv2-pretrain`: self-supervised pretraining from a config file.

  relicv2-pretrain --config=experiments/configs/demo.py --workdir=runs/demo
  relicv2-pretrain --config=experiments/configs/relicv2_r50_imagenet.py \
      --config.data.tfds_name=imagenet2012 --workdir=gs://bucket/relicv2 --strategy=tpu

Rerunning the same command resumes from the latest checkpoint in --workdir. When the data
source has labels (the demo's digits, ImageFolder, TFDS), the run ends with a kNN evaluation of
the pretrained encoder next to a random-init encoder of the same architecture.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. experiments/configs/demo.py.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and encoder.")
_STRATEGY = flags.DEFINE_enum("strategy", "default",
                              ["default", "mirrored", "multi_worker", "tpu"],
                              "tf.distribute strategy.")
_TPU = flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
_CPU_REPLICAS = flags.DEFINE_integer(
    "num_cpu_replicas", 0, "Split the CPU into N logical devices (with --strategy=mirrored).")
_KNN = flags.DEFINE_bool("knn_eval", True, "kNN-evaluate pretrained vs random-init encoder.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("Both --config and --workdir are required, e.g. "
                             "--config=experiments/configs/demo.py --workdir=runs/demo")
    # Imports after flag parsing so that --help and flag errors are instant.
    from relicv2_tf import config as config_lib
    from relicv2_tf import distribute, train
    from relicv2_tf.evaluation import knn_report

    config = _CONFIG.value
    try:
        config_lib.validate(config)
        strategy = distribute.get_strategy(_STRATEGY.value, _TPU.value, _CPU_REPLICAS.value)
        distribute.per_replica_batch_size(config.training.batch_size, strategy)
    except (ValueError, RuntimeError) as error:
        print(f"relicv2-pretrain: {error}", file=sys.stderr)
        sys.exit(2)
    logging.info("Strategy %s with %d replicas.", type(strategy).__name__,
                 strategy.num_replicas_in_sync)
    _, summary = train.pretrain(config, _WORKDIR.value, strategy)
    print(f"Pretraining done: {summary['steps']} steps in {summary['seconds']:.0f} s; "
          f"encoder written to {summary['encoder_dir']}")
    if _KNN.value and config.data.source in ("digits", "synthetic", "image_folder", "tfds"):
        result = knn_report.compare_with_random_init(config, summary["encoder_dir"])
        with open(os.path.join(_WORKDIR.value, "knn_eval.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(f"kNN top-1 (k={result['k']}, {result['num_train']} train / {result['num_test']} "
              f"test images): pretrained {result['pretrained_top1']:.4f} vs random-init "
              f"{result['random_init_top1']:.4f}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
