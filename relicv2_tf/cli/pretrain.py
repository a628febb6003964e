"""`relicv2-pretrain`: self-supervised pretraining from a config file.

  relicv2-pretrain --config=experiments/configs/demo.py --workdir=runs/demo
  relicv2-pretrain --config=experiments/configs/relicv2_r50_imagenet.py \\
      --config.data.data_dir='gs://bucket/imagenet_masks/train-*' \\
      --workdir=gs://bucket/relicv2 --strategy=tpu

Rerunning the same command resumes from the latest checkpoint in --workdir. When the data
source has labels and a held-out split (the demo's digits, ImageFolder, TFDS; or the source
named by config.evaluation.knn_source), the run ends with a kNN evaluation of the pretrained
encoder next to a random-init encoder of the same architecture; config.evaluation.
knn_every_steps also monitors it during training.

Progress goes to stdout (a bar on a terminal, else one line per training.log_every_steps) and
to <workdir>/train.log; TensorBoard: <workdir>/tensorboard. A rerun with a config that changes
the model, data or optimisation stops (the resume guard) and names the keys.
"""

from __future__ import annotations

import importlib
import json
import os

from absl import flags
from ml_collections import config_flags

from relicv2_tf.cli import common

COMMAND = "pretrain"
EXAMPLE_CONFIG = "experiments/configs/demo.py"


def define_flags():
    importlib.import_module("relicv2_tf.cli.strategy_flags")  # importing it defines --strategy
    return {
        "config": config_flags.DEFINE_config_file(
            "config", None, f"Pretraining config file, e.g. {EXAMPLE_CONFIG}.", lock_config=True),
        "workdir": flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, "
                                       "TensorBoard and the encoder; rerun to resume."),
        "knn_eval": flags.DEFINE_bool("knn_eval", True, "At the end, kNN-evaluate the pretrained "
                                      "vs a random-init encoder (labelled sources)."),
        "progress": common.define_progress_flag(),
        "allow_config_change": flags.DEFINE_list(
            "allow_config_change", [], "Config keys allowed to differ from the workdir's saved "
            "config on resume, e.g. training.max_steps (the resume guard names them)."),
    }


def check_arguments(config, workdir, allow_changes):
    """Every check that needs no TensorFlow: raises ValueError naming the fix."""
    from relicv2_tf import config as config_lib
    from relicv2_tf import config_tools

    missing = config_tools.missing_sections(config, config_lib.get_default_config().keys())
    if missing:
        raise ValueError(
            f"--config is not a pretraining config: it has no {', '.join(missing)} field(s). "
            f"relicv2-pretrain takes a config like {EXAMPLE_CONFIG}; evaluation configs "
            "(encoder_dir, ...) go to relicv2-eval <protocol>.")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir={workdir} is a file; give a directory (new, or a run's "
                         "to resume it).")
    saved = os.path.join(workdir, "config.json")
    if "://" not in workdir and os.path.isfile(saved) and os.path.isfile(
            os.path.join(workdir, "checkpoints", "checkpoint")):
        with open(saved) as f:
            config_tools.check_resume(json.load(f), config, workdir, allow_changes)


def main(flag_values, argv):
    common.reject_arguments(COMMAND, argv[1:])
    config, workdir = flag_values["config"].value, flag_values["workdir"].value
    if config is None or not workdir:
        common.fail(COMMAND, f"needs --config=<file> and --workdir=<dir>, e.g. "
                    f"--config={EXAMPLE_CONFIG} --workdir=runs/demo (--help for more).")
    allow_changes = tuple(flag_values["allow_config_change"].value)
    with common.exit_on_error(COMMAND):
        check_arguments(config, workdir, allow_changes)
    if config.training.mixed_precision == "mixed_bfloat16":
        from relicv2_tf import distribute
        if distribute.avoid_onednn_bfloat16():  # before TensorFlow starts
            print("relicv2-pretrain: CPU with bfloat16 units: TF_ENABLE_ONEDNN_OPTS=0 for "
                  "bfloat16 (docs/SCALING.md, 'bfloat16 on CPUs').")
    common.quiet_tensorflow_startup()
    from relicv2_tf.cli import strategy_flags

    with common.exit_on_error(COMMAND, (ValueError, RuntimeError)):  # e.g. no TPU, no CPU split
        strategy = strategy_flags.strategy_from_flags()  # before any other TensorFlow call
    from relicv2_tf import config as config_lib
    from relicv2_tf import distribute, train
    from relicv2_tf.evaluation import knn_report

    with common.exit_on_error(COMMAND):
        config_lib.validate(config)
        distribute.per_replica_batch_size(config.training.batch_size, strategy)
        _, summary = train.pretrain(config, workdir, strategy,
                                    progress_bar=common.progress_bar(flag_values["progress"]),
                                    allow_config_changes=allow_changes)
    print(f"Pretraining done: {summary['steps']} steps in {summary['seconds']:.0f} s; "
          f"encoder written to {summary['encoder_dir']}")
    if flag_values["knn_eval"].value and (
            knn_report.labelled_data_config(config).source in knn_report.EVAL_SPLITS):
        e = config.evaluation
        result = knn_report.compare_with_random_init(
            config, summary["encoder_dir"], k=e.knn_k, temperature=e.knn_temperature,
            max_examples=e.knn_max_examples)
        with open(os.path.join(workdir, "knn_eval.json"), "w") as f:
            json.dump(result, f, indent=2)
        from relicv2_tf import train_logging

        train_logging.write_scalars(os.path.join(workdir, "tensorboard", "train"),
                                    summary["steps"],
                                    {"final_knn_top1": result["pretrained_top1"],
                                     "final_knn_top1_random_init": result["random_init_top1"]})
        line = (f"kNN top-1 (k={result['k']}, {result['num_train']} train / "
                f"{result['num_test']} test images): pretrained {result['pretrained_top1']:.4f} "
                f"vs random-init {result['random_init_top1']:.4f}")
        print(line)
        with open(os.path.join(workdir, "train.log"), "a") as f:
            f.write(line + "\n")


def run():
    flag_values = define_flags()
    common.run_app(COMMAND, lambda argv: main(flag_values, argv), __doc__,
                   config_example=EXAMPLE_CONFIG, start_tensorflow=False)


if __name__ == "__main__":
    run()
