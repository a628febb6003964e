"""SimCLR, ResNet-50, ImageNet, 1000 epochs (Chen et al. 2020, section 4 and appendix B.6).

LARS, learning rate 0.3 x B/256 (4.8 at batch 4096; the square-root rule 0.075 sqrt(B) is the
paper's alternative for small batches), weight decay 1e-6, 10 warm-up epochs then cosine decay,
batch 4096, NT-Xent temperature 0.1 (0.5 in the paper's shorter ablations), global batch norm,
MLP head 2048 -> 128, two 224 px views with SimCLR's augmentations (`data.augmentation =
"simclr"`: crop 8-100 %, colour strength 1.0, blur p 0.5; sources in
relicv2_tf/data/augment_tables.py). No target network. The temperature is the method's default
loss section (relicv2_tf/methods/__init__.py METHODS["simclr"]).
"""

from experiments.configs import common


def get_config():
    config = common.imagenet_pretraining("simclr")
    config.model.projector_hidden_dim = 2048
    config.model.projector_output_dim = 128
    config.optimizer.base_learning_rate = 0.3
    config.optimizer.weight_decay = 1e-6
    return config
