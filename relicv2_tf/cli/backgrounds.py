"""`relicv2-backgrounds` (= `relicv2-eval backgrounds`): ImageNet-9 background robustness and
BG-gap (`relicv2_tf.evaluation.backgrounds.run`).

  relicv2-backgrounds --config=experiments/configs/backgrounds_imagenet9.py \\
      --config.encoder_dir=runs/r50/encoder --config.imagenet9_root=data/bg_challenge \\
      --output_dir=runs/r50/backgrounds

Writes <output_dir>/backgrounds.json (accuracy per variant and bg_gap).
"""

from relicv2_tf.cli import common

COMMAND = "backgrounds"
PROTOCOL = "backgrounds"


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
