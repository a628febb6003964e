"""`relicv2-supervised` (= `relicv2-eval supervised`): the supervised baseline, the same ResNet
trained with labels (`relicv2_tf.evaluation.supervised.run`).

  relicv2-supervised --config=experiments/configs/supervised_imagenette.py \\
      --output_dir=runs/imagenette/supervised

Writes <output_dir>/encoder (encoder_io format, evaluate it with relicv2-linear-eval like any
pretrained encoder), <output_dir>/linear_head.keras (its own classifier) and
<output_dir>/supervised.json (accuracy of the supervised classifier on the test split).
Rerunning resumes from <output_dir>/checkpoints.
"""

from relicv2_tf.cli import common

COMMAND = "supervised"
PROTOCOL = "supervised"


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
