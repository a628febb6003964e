"""Built-in demo: ReLICv2 on scikit-learn's digits (1,797 real 8x8 scans upsampled to 32 px).

No download, minutes on a CPU: a ResNet-18 at quarter width, 4 large (32 px) + 2 small (16 px)
views, saliency masking from the digits' ink masks, then kNN top-1 vs a random-init encoder.

Two departures from the ImageNet recipe, both forced by the data, not the method:
  * crop areas: Table 16's 5-14 % small crops of an 8x8 scan are 2-3 source pixels, so positives
    carry no shared content; large crops use 35-100 % and small crops 15-35 % of the image;
  * learning rate: LARS scales each layer's step to lr * eeta * ||w||; with the linear rule
    lr = base * B / 256 a batch of 128 makes that step 32x smaller than BYOL's at B = 4096, so the
    base rate is raised to 6.4 (lr * eeta = 3.2e-3, BYOL's value).

Another method on the same data: `--config=experiments/configs/demo.py:byol` (the method's own
loss section, `relicv2_tf.methods.METHODS`; its views as the method needs them are still set by
flags, e.g. --config.data.num_large_views=2 --config.data.num_small_views=0).
"""

from relicv2_tf import config as config_lib


def get_config(method: str = "relicv2"):
    config = config_lib.get_default_config(method)
    config.data.source = "digits"
    config.data.split = "train"
    config.data.image_size = 32
    config.data.small_image_size = 16
    config.data.shuffle_buffer = 2048
    config.data.cache = True
    config.data.large_crop_area_range = (0.35, 1.0)
    config.data.small_crop_area_range = (0.15, 0.35)
    config.model.depth = 18
    config.model.width_multiplier = 0.25
    config.model.synchronized_bn = False
    config.model.projector_hidden_dim = 256
    config.model.projector_output_dim = 64
    config.model.predictor_hidden_dim = 256
    if method == "relicv2":
        config.loss.num_negatives = 10
    config.optimizer.base_learning_rate = 6.4
    config.optimizer.warmup_epochs = 2
    config.training.batch_size = 128
    config.training.num_epochs = 25
    config.training.checkpoint_every_steps = 100
    config.training.log_every_steps = 10
    config.training.deterministic = True  # the Quickstart prints the same kNN figure every run
    config.training.image_summary_every_steps = 100  # TensorBoard grid of the views trained on
    # Online linear probe on the digits' labels; it leaves the encoder's trajectory unchanged.
    config.evaluation.online_probe = True
    return config
