"""relicv2_tf: ReLICv2 and background-invariant self-supervised ResNet pretraining in TF/Keras 3."""

__version__ = "0.1.0"
