"""`relicv2-transfer` (= `relicv2-eval transfer`): linear / fine-tuned transfer to other datasets
(ReLICv2 appendix B.3; `relicv2_tf.evaluation.transfer.run`).

  relicv2-transfer --config=experiments/configs/transfer.py \\
      --config.encoder_dir=runs/r50/encoder --config.datasets=cifar10,dtd \\
      --output_dir=runs/r50/transfer

Writes <output_dir>/transfer.json (the paper's metric per dataset, chosen hyper-parameters and
the validation sweep) and prints a one-line summary.
"""

from relicv2_tf.cli import common

run = common.protocol_command("transfer", "transfer")

if __name__ == "__main__":
    run()
