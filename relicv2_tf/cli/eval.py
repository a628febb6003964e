"""`relicv2-eval <protocol>`: every evaluation protocol behind one command.

  relicv2-eval linear --config=experiments/configs/linear_eval_imagenet.py \\
      --config.encoder_dir=runs/r50/encoder --output_dir=runs/r50/linear
  relicv2-eval transfer --config=experiments/configs/transfer.py ... --strategy=mirrored

<protocol> is linear, finetune, supervised, transfer, robustness or backgrounds: it runs
`relicv2_tf.evaluation.<protocol>.run` with the config, exactly as its alias command does
(`relicv2-linear-eval`, `relicv2-finetune`, ...). docs/EVALUATION.md describes each protocol.
"""

from relicv2_tf.cli import common

COMMAND = "eval"
EXAMPLE_CONFIG = "experiments/configs/linear_eval_demo.py"


def define_flags():
    return common.define_protocol_flags(EXAMPLE_CONFIG)


def main(flag_values, argv):
    if len(argv) != 2 or argv[1] not in common.PROTOCOLS:
        common.fail(COMMAND, f"usage: relicv2-eval <{' | '.join(common.PROTOCOLS)}> "
                    f"--config=<file> --output_dir=<dir> (got arguments {argv[1:]}).")
    common.run_protocol(COMMAND, argv[1], flag_values)


def run():
    flag_values = define_flags()
    common.run_app(COMMAND, lambda argv: main(flag_values, argv), __doc__,
                   config_example=EXAMPLE_CONFIG,
                   positional=f"<protocol>  one of {', '.join(common.PROTOCOLS)} (first argument)")


if __name__ == "__main__":
    run()
