"""`relicv2-robustness` (= `relicv2-eval robustness`): zero-shot robustness / OOD evaluation
(ReLICv2 section 4.1, B.4; `relicv2_tf.evaluation.robustness.run`).

  relicv2-robustness --config=experiments/configs/robustness.py \\
      --config.encoder_dir=runs/r50/encoder --config.head_path=runs/r50/linear/linear_head.keras \\
      --output_dir=runs/r50/robustness

Writes <output_dir>/robustness.json (top-1 per set, ImageNet-C mean and per corruption).
"""

from relicv2_tf.cli import common

run = common.protocol_command("robustness", "robustness")

if __name__ == "__main__":
    run()
