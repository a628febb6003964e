"""SwAV, ResNet-50, ImageNet, 800 epochs, multi-crop 2 x 224 + 6 x 96 (Caron et al. 2020,
section 4 and appendix A).

LARS, learning rate 4.8 at batch 4096 (base 0.3 x B/256), weight decay 1e-6, 10 warm-up
epochs then cosine decay (the paper decays to 0.0048; here to 0), temperature 0.1, Sinkhorn
epsilon 0.05 with 3 iterations, 3000 prototypes, MLP head 2048 -> 128, synchronised batch
norm, prototypes frozen for the first epoch (313 steps at batch 4096: the method turns epochs
into steps for the run's batch). The queue is for small batches (the paper: 3840 embeddings
from epoch 15 at batch 256); at batch 4096 it is off. The loss section (temperature, Sinkhorn,
prototypes, code views, queue, frozen prototypes) is the method's default
(relicv2_tf/methods/__init__.py METHODS["swav"]), with these values.
Views: SwAV's own augmentations (`data.augmentation = "swav"`: 224 px crops of 14-100 %, 96 px
crops of 5-14 %, colour strength 1.0, OpenCV blur p 0.5; sources in
relicv2_tf/data/augment_tables.py).
"""

from experiments.configs import common


def get_config():
    config = common.imagenet_pretraining("swav", num_small_views=6)
    config.model.projector_hidden_dim = 2048
    config.model.projector_output_dim = 128
    config.optimizer.base_learning_rate = 0.3
    config.optimizer.weight_decay = 1e-6
    config.optimizer.exclude_from_weight_decay = ()  # main_swav.py: SGD(model.parameters(), wd)
    config.optimizer.exclude_from_layer_adaptation = ()  # main_swav.py: LARC on every parameter
    config.training.num_epochs = 800
    return config
