"""`relicv2-backgrounds` (= `relicv2-eval backgrounds`): ImageNet-9 background robustness and
BG-gap (`relicv2_tf.evaluation.backgrounds.run`).

  relicv2-backgrounds --config=experiments/configs/backgrounds_imagenet9.py \\
      --config.encoder_dir=runs/r50/encoder --config.imagenet9_root=data/bg_challenge \\
      --output_dir=runs/r50/backgrounds

Writes <output_dir>/backgrounds.json (accuracy per variant and bg_gap).
"""

from relicv2_tf.cli import common

run = common.protocol_command("backgrounds", "backgrounds")

if __name__ == "__main__":
    run()
