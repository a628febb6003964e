"""`relicv2-linear-eval` (= `relicv2-eval linear`): linear evaluation of a frozen encoder
(ReLICv2 appendix B.1; `relicv2_tf.evaluation.linear.run`).

  relicv2-linear-eval --config=experiments/configs/linear_eval_imagenet.py \\
      --config.encoder_dir=runs/r50/encoder --output_dir=runs/r50/linear
  relicv2-linear-eval --config=experiments/configs/linear_eval_imagenette.py \\
      --config.random_init=True --output_dir=runs/imagenette/linear_random

Writes <output_dir>/linear_head.keras (the head serving exports next to the encoder),
<output_dir>/linear_eval.json and prints a one-line summary. Rerunning the same command resumes
from the latest checkpoint in <output_dir>/checkpoints.
"""

from relicv2_tf.cli import common

COMMAND = "linear-eval"
PROTOCOL = "linear"


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
