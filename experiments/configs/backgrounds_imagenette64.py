"""Background robustness on Imagenette val, built like ImageNet-9 from the benchmark's own
saliency masks (experiments/configs/imagenette64.py): Original, Only-FG, Mixed-Same, Mixed-Rand,
Mixed-Next and BG-Gap = Mixed-Same - Mixed-Rand, with a linear head trained on the original
(unmasked) training images at the benchmark's 64 px.

  relicv2-backgrounds --config=experiments/configs/backgrounds_imagenette64.py \
      --config.encoder_dir=<workdir>/encoder --output_dir=<workdir>/backgrounds
"""

from experiments.configs import backgrounds_imagenet9, imagenette64, linear_eval_imagenette


def get_config():
    config = backgrounds_imagenet9.get_config()
    linear = linear_eval_imagenette.get_config()
    config.model = linear.model
    config.mode = "masks"
    config.head = "train"
    config.data.source = "image_folder"
    config.data.data_dir = imagenette64.imagenette_dir()
    config.data.mask_dir = imagenette64.MASK_DIR
    config.train_split = "train"
    config.test_split = "val"
    config.num_classes = 10
    config.image_size = linear.linear.image_size  # 64 px centre crops of 73 px (224 / 256)
    config.resize_size = linear.linear.resize_size
    for key in ("batch_size", "num_epochs", "learning_rate", "momentum", "nesterov",
                "schedule"):
        config.linear[key] = linear.linear[key]
    return config
