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

run = common.protocol_command("linear-eval", "linear")

if __name__ == "__main__":
    run()
