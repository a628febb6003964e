"""`relicv2-transfer` (= `relicv2-eval transfer`): linear / fine-tuned transfer to other datasets
(ReLICv2 appendix B.3; `relicv2_tf.evaluation.transfer.run`).

  relicv2-transfer --config=experiments/configs/transfer.py \\
      --config.encoder_dir=runs/r50/encoder --config.datasets=cifar10,dtd \\
      --output_dir=runs/r50/transfer

Writes <output_dir>/transfer.json (the paper's metric per dataset, chosen hyper-parameters and
the validation sweep) and prints a one-line summary.
"""

from relicv2_tf.cli import common

COMMAND = "transfer"
PROTOCOL = "transfer"


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
