"""SwAV, ResNet-50, ImageNet, 800 epochs, multi-crop 2 x 224 + 6 x 96 (Caron et al. 2020,
section 4 and appendix A).

LARS, learning rate 4.8 at batch 4096 (base 0.3 x B/256), weight decay 1e-6, 10 warm-up
epochs then cosine decay (the paper decays to 0.0048; here to 0), temperature 0.1, Sinkhorn
epsilon 0.05 with 3 iterations, 3000 prototypes, MLP head 2048 -> 128, synchronised batch
norm, prototypes frozen for the first epoch (313 steps at batch 4096). The queue is for small
batches (the paper: 3840 embeddings from epoch 15 at batch 256); at batch 4096 it is off.
"""

import ml_collections

from relicv2_tf import config as config_lib

IMAGENET_TRAIN_EXAMPLES = 1_281_167


def get_config():
    config = config_lib.get_default_config()
    config.method = "swav"
    config.data.source = "tfds"
    config.data.tfds_name = "imagenet2012"
    config.data.num_large_views = 2
    config.data.num_small_views = 6
    config.data.image_size = 224
    config.data.small_image_size = 96
    config.data.mask_apply_prob = 0.0
    config.model.depth = 50
    config.model.width_multiplier = 1
    config.model.synchronized_bn = True
    config.model.projector_hidden_dim = 2048
    config.model.projector_output_dim = 128
    config.training.batch_size = 4096
    steps_per_epoch = IMAGENET_TRAIN_EXAMPLES // config.training.batch_size
    config.loss = ml_collections.ConfigDict()
    config.loss.temperature = 0.1
    config.loss.epsilon = 0.05
    config.loss.sinkhorn_iterations = 3
    config.loss.num_prototypes = 3000
    config.loss.code_views = (0, 1)  # codes of the two large crops
    config.loss.queue_size = 0  # 3840 for batch 256
    config.loss.queue_start_steps = 15 * steps_per_epoch
    config.loss.freeze_prototypes_steps = steps_per_epoch + 1
    config.optimizer.base_learning_rate = 0.3
    config.optimizer.weight_decay = 1e-6
    config.optimizer.warmup_epochs = 10
    config.training.num_epochs = 800
    config.training.checkpoint_every_steps = 2500
    config.training.mixed_precision = "mixed_bfloat16"
    return config
