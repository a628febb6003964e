"""relicv2-saliency: the label-free saliency pipeline, one stage per call
(`relicv2_tf.saliency.pipeline.run_stage`).

    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=priors
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=refine
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=generate \\
        [--num_workers=2 --worker_index=0]
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=generate \\
        --beam_runner=DirectRunner \\
        --beam_options="--direct_num_workers=2 --direct_running_mode=multi_processing"
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=evaluate

priors:   random subset of data.data_dir -> handcrafted maps -> <workdir>/priors.npz
refine:   DeepUSPS stages 1 + 2 -> <workdir>/saliency_network/, <workdir>/refined.npz
generate: masks for every image of generate.data_root/<split> -> TFRecord shards + a figure
evaluate: label-free foreground / background check of priors vs network -> evaluate.json
--beam_runner runs generate as an Apache Beam pipeline on that runner (DirectRunner,
DataflowRunner, FlinkRunner, SparkRunner, ...; pip install -r requirements-beam.txt), with
--beam_options passed to Beam as its PipelineOptions flags (docs/SALIENCY.md).
Every stage prints a JSON summary on its last line.
"""

import json
import shlex

from absl import flags
from ml_collections import config_flags

from relicv2_tf.cli import common
from relicv2_tf.saliency import pipeline

COMMAND = "saliency"
EXAMPLE_CONFIG = "experiments/configs/saliency_demo.py"


def define_flags():
    return {
        "config": config_flags.DEFINE_config_file(
            "config", None, f"Saliency config file, e.g. {EXAMPLE_CONFIG}.", lock_config=True),
        "stage": flags.DEFINE_enum("stage", None, list(pipeline.STAGES),
                                   "Pipeline stage to run."),
        "num_workers": flags.DEFINE_integer(
            "num_workers", None, "generate: number of workers (overrides the config)."),
        "worker_index": flags.DEFINE_integer(
            "worker_index", None, "generate: this worker's index (overrides the config)."),
        "beam_runner": flags.DEFINE_string(
            "beam_runner", "", "generate: run as an Apache Beam pipeline on this runner "
            "(DirectRunner, DataflowRunner, FlinkRunner, SparkRunner, ...)."),
        "beam_options": flags.DEFINE_string(
            "beam_options", "", "With --beam_runner: Beam's PipelineOptions flags, separated by "
            "spaces, e.g. \"--direct_num_workers=2 --direct_running_mode=multi_processing\"."),
        "progress": common.define_progress_flag(),
    }


def main(flag_values, argv):
    common.reject_arguments(COMMAND, argv[1:])
    config, stage = flag_values["config"].value, flag_values["stage"].value
    if config is None or stage is None:
        common.fail(COMMAND, "needs --config=<file> and "
                    f"--stage=<{' | '.join(pipeline.STAGES)}>.")
    with common.exit_on_error(COMMAND):
        try:
            beam_options = shlex.split(flag_values["beam_options"].value)
        except ValueError as error:
            raise ValueError(f"--beam_options: {error} (quote the whole list once).") from error
        summary = pipeline.run_stage(
            config, stage, flag_values["num_workers"].value, flag_values["worker_index"].value,
            progress=common.progress_bar(flag_values["progress"]),
            beam_runner=flag_values["beam_runner"].value, beam_options=beam_options)
    print(json.dumps(summary))


def run():
    flag_values = define_flags()
    common.run_app(COMMAND, lambda argv: main(flag_values, argv), __doc__,
                   config_example=EXAMPLE_CONFIG)


if __name__ == "__main__":
    run()
