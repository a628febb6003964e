"""`relicv2-robustness` (= `relicv2-eval robustness`): zero-shot robustness / OOD evaluation
(ReLICv2 section 4.1, B.4; `relicv2_tf.evaluation.robustness.run`).

  relicv2-robustness --config=experiments/configs/robustness.py \\
      --config.encoder_dir=runs/r50/encoder --config.head_path=runs/r50/linear/linear_head.keras \\
      --output_dir=runs/r50/robustness

Writes <output_dir>/robustness.json (top-1 per set, ImageNet-C mean and per corruption).
"""

from relicv2_tf.cli import common

COMMAND = "robustness"
PROTOCOL = "robustness"


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
