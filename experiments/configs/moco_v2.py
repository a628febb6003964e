"""MoCo-v2, ResNet-50, ImageNet, 200 epochs (Chen et al. 2020b, "Improved baselines with momentum
contrastive learning"; He et al. 2020, "Momentum contrast for unsupervised visual representation
learning"; code: facebookresearch/moco, main_moco.py run with --mlp --moco-t 0.2 --aug-plus --cos,
and moco/builder.py). Method details (loss, queue, Shuffle-BN): relicv2_tf/methods/moco_v2.py.

Hyperparameters and where they come from:
  optimizer       SGD, momentum 0.9, weight decay 1e-4 on every parameter (He et al. section 4
                  "Training"; main_moco.py `--momentum`, `--wd`, `torch.optim.SGD(model.parameters
                  (), ...)`). Here `relicv2_tf.optim.lars.LARS` with layer adaptation off for every
                  variable and nothing excluded from weight decay: v <- m v + lr (g + wd w),
                  w <- w - v, i.e. PyTorch's SGD with coupled L2 weight decay.
  learning rate   0.03 for batch 256 (He et al. section 4; main_moco.py `--lr`), scaled linearly
                  as 0.03 x B/256 (the moco README's rule for other batch sizes); no warm-up.
  schedule        cosine decay to 0 (Chen et al. 2020b, "cosine learning rate schedule";
                  main_moco.py `--cos`, `adjust_learning_rate`).
  batch           256 over 8 GPUs (He et al. section 4; main_moco.py `--batch-size`).
  epochs          200 (Chen et al. 2020b, Table 1 and 2; main_moco.py `--epochs`).
  m               key-encoder momentum 0.999, constant (He et al. section 3.2 eq. 2 and section
                  4.1 "Ablation: momentum"; main_moco.py `--moco-m`).
  K               queue of 65,536 keys (He et al. section 4; main_moco.py `--moco-k`).
  T               InfoNCE temperature 0.2 (Chen et al. 2020b, Table 1 with the MLP head;
                  README's MoCo-v2 command `--moco-t 0.2`; MoCo v1 used 0.07).
  head            fc 2048 -> ReLU -> fc 128, no batch norm, on query and key encoders (Chen et
                  al. 2020b "MLP head"; builder.py `mlp`: Linear(dim_mlp, dim_mlp), ReLU, fc).
The loss section (T, K, the direction, Shuffle-BN groups) is the method's default
(relicv2_tf/methods/__init__.py METHODS["moco_v2"]), with the values and sources above.
  loss            one direction, q1 . k2, keys of view 2 enqueued (He et al. Algorithm 1;
                  builder.py `forward`); `loss.symmetric = True` is the CIFAR demo's option.
  Shuffle-BN      the key batch in 8 random groups, the query batch-normalised per replica
                  (He et al. section 3.3; builder.py `_batch_shuffle_ddp`; the CIFAR demo's
                  `--bn-splits 8` "to simulate 8 GPUs"); `loss.shuffle_bn_splits` must be a
                  multiple of the replica count (8 GPUs: 8, one group per GPU as in builder.py;
                  16 GPUs: 16).
  views           two 224 px crops of the same image (main_moco.py `TwoCropsTransform`), with
                  MoCo-v2's `--aug-plus` augmentation (main_moco.py): set by `data.augmentation`.

Remaining deviations:
  * The cosine schedule decays per step; main_moco.py's `adjust_learning_rate` sets it once
    per epoch.
  * On one device the query encoder's batch norm sees the whole batch (256); on 8 GPUs MoCo's
    sees 32 (the CIFAR demo splits queries too). Keys are grouped as in the paper on any device
    count.
  * The key encoder's batch-norm moving statistics are updated by each of its groups in turn
    (the demo's SplitBatchNorm averages them); they are never used.
  * The MoCo queue is a ring buffer with a pointer, here a FIFO shift: the same set of keys.
"""

from experiments.configs import common


def get_config():
    config = common.imagenet_pretraining("moco_v2")
    config.model.synchronized_bn = False  # per-replica batch norm (Shuffle-BN, section 3.3)
    config.model.projector_hidden_dim = 2048
    config.model.projector_output_dim = 128
    common.set_fields(config.optimizer, {
        "base_learning_rate": 0.03, "weight_decay": 1e-4, "momentum": 0.9, "warmup_epochs": 0,
        "exclude_from_weight_decay": (),
        "exclude_from_layer_adaptation": (".",)})  # every variable: plain SGD
    common.set_fields(config.training, {
        "batch_size": 256, "num_epochs": 200, "checkpoint_every_steps": 5000,
        "target_ema_schedule": "constant",  # MoCo's momentum m does not change
        "base_target_ema": 0.999,  # key-encoder momentum m
        "mixed_precision": ""})
    return config
