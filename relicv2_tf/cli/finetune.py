"""`relicv2-finetune` (= `relicv2-eval finetune`): semi-supervised fine-tuning on a label subset
(ReLICv2 appendix B.2; `relicv2_tf.evaluation.finetune.run`).

  relicv2-finetune --config=experiments/configs/finetune_imagenet_1pct.py \\
      --config.encoder_dir=runs/r50/encoder --output_dir=runs/r50/semi_1pct
  # a list file of ids instead of the TFDS subset:
  relicv2-finetune --config=experiments/configs/finetune_imagenet_1pct.py \\
      --config.data.tfds_name=imagenet2012 --config.subset_file=1percent.txt ...

Writes <output_dir>/encoder (fine-tuned, encoder_io format), <output_dir>/linear_head.keras,
<output_dir>/finetune.json; rerunning resumes from <output_dir>/checkpoints.
"""

from relicv2_tf.cli import common

COMMAND = "finetune"
PROTOCOL = "finetune"


def define_flags():
    return common.define_protocol_flags(common.PROTOCOLS[PROTOCOL])


def main(flag_values, argv):
    common.reject_arguments(COMMAND, argv[1:])
    common.run_protocol(COMMAND, PROTOCOL, flag_values)


def run():
    flag_values = define_flags()
    common.run_app(COMMAND, lambda argv: main(flag_values, argv), __doc__,
                   config_example=common.PROTOCOLS[PROTOCOL])


if __name__ == "__main__":
    run()
