"""relicv2-saliency: the label-free saliency pipeline, one stage per call
(`relicv2_tf.saliency.pipeline.run_stage`).

    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=priors
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=refine
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=generate \\
        [--num_workers=2 --worker_index=0]
    relicv2-saliency --config=experiments/configs/saliency_demo.py --stage=evaluate

priors:   random subset of data.data_dir -> handcrafted maps -> <workdir>/priors.npz
refine:   DeepUSPS stages 1 + 2 -> <workdir>/saliency_network/, <workdir>/refined.npz
generate: masks for every image of generate.data_root/<split> -> TFRecord shards + a figure
evaluate: label-free foreground / background check of priors vs network -> evaluate.json
Every stage prints a JSON summary on its last line.
"""

import json

from absl import flags
from ml_collections import config_flags

from relicv2_tf.cli import common
from relicv2_tf.saliency import pipeline

COMMAND = "saliency"


def main():
    config = config_flags.DEFINE_config_file(
        "config", None, "Saliency config file (experiments/configs/saliency_*.py).",
        lock_config=True)
    stage = flags.DEFINE_enum("stage", None, list(pipeline.STAGES), "Pipeline stage to run.")
    num_workers = flags.DEFINE_integer("num_workers", None,
                                       "generate: number of workers (overrides the config).")
    worker_index = flags.DEFINE_integer("worker_index", None,
                                        "generate: this worker's index (overrides the config).")
    progress = common.define_progress_flag()

    def main_with_flags(argv):
        common.reject_arguments(COMMAND, argv[1:])
        if config.value is None or stage.value is None:
            common.fail(COMMAND, "needs --config=<file> and "
                        f"--stage=<{' | '.join(pipeline.STAGES)}>.")
        with common.exit_on_error(COMMAND):
            summary = pipeline.run_stage(config.value, stage.value, num_workers.value,
                                         worker_index.value,
                                         progress=common.progress_bar(progress))
        print(json.dumps(summary))
    common.run_app(COMMAND, main_with_flags, __doc__,
                   config_example="experiments/configs/saliency_demo.py")


if __name__ == "__main__":
    main()
