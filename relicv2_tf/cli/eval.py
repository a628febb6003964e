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


def run():
    protocol_flags = common.define_protocol_flags("experiments/configs/linear_eval_demo.py")

    def main(argv):
        if len(argv) != 2 or argv[1] not in common.PROTOCOLS:
            common.fail(COMMAND, f"usage: relicv2-eval <{' | '.join(common.PROTOCOLS)}> "
                        "--config=<file> --output_dir=<dir> (got arguments "
                        f"{argv[1:]}).")
        common.run_protocol(COMMAND, argv[1], protocol_flags)
    common.run_app(COMMAND, main, __doc__, config_example="experiments/configs/linear_eval_demo.py",
                   positional=f"<protocol>  one of {', '.join(common.PROTOCOLS)} (first argument)")


if __name__ == "__main__":
    run()
