"""`relicv2-pretrain`: self-supervised pretraining from a config file.

  relicv2-pretrain --config=experiments/configs/demo.py --workdir=runs/demo
  relicv2-pretrain --config=experiments/configs/relicv2_r50_imagenet.py \\
      --config.data.data_dir='gs://bucket/imagenet_masks/train-*' \\
      --workdir=gs://bucket/relicv2 --strategy=tpu

On several machines: the same command on each with --strategy=multi_worker and its own
TF_CONFIG; only the chief (task 0) writes --workdir (docs/SCALING.md, "Multi-worker").

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
        "input_pipeline_per_replica": flags.DEFINE_bool(
            "input_pipeline_per_replica", False, "With --strategy=mirrored: one input pipeline "
            "per replica, so one machine reads exactly what --strategy=multi_worker with one "
            "replica per worker reads (reproduces a multi-worker run on one host)."),
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
    from relicv2_tf import distribute, train
    from relicv2_tf.evaluation import knn_report

    # config.validate and the batch check run in pretrain; a lost worker is one line too.
    errors = (ValueError, FileNotFoundError, distribute.WorkerLostError)
    with common.exit_on_error(COMMAND, errors):
        _, summary = train.pretrain(
            config, workdir, strategy, progress_bar=common.progress_bar(flag_values["progress"]),
            allow_config_changes=allow_changes,
            input_pipeline_per_replica=flag_values["input_pipeline_per_replica"].value)
    print(f"Pretraining done: {summary['steps']} steps in {summary['seconds']:.0f} s; "
          f"encoder written to {summary['encoder_dir']}")
    if flag_values["knn_eval"].value:
        with common.exit_on_error(COMMAND, errors):
            result = knn_report.report_end_of_run(config, workdir, summary["steps"],
                                                  summary["encoder_dir"], strategy)
        if result is not None:  # a labelled held-out split, on the chief
            print(knn_report.summary_line(result))


def run():
    flag_values = define_flags()
    common.run_app(COMMAND, lambda argv: main(flag_values, argv), __doc__,
                   config_example=EXAMPLE_CONFIG, start_tensorflow=False)


if __name__ == "__main__":
    run()
