"""Linear evaluation on Imagenette (10 ImageNet classes, $RELICV2_DATA_ROOT/imagenette, default
../shared/data/imagenette) on a CPU.

  relicv2-linear-eval --config=experiments/configs/linear_eval_imagenette.py \
      --config.encoder_dir=runs/demo/encoder --output_dir=runs/linear_imagenette

Same protocol as linear_eval_imagenet.py at a reduced resolution (64 px crops from 73 px, the
224 / 256 ratio) and fewer epochs; `augment=False` trains on centre-crop features computed once,
so the encoder runs once over the data (minutes on 2 CPU cores).
"""

from experiments.configs import common, linear_eval_imagenet


def get_config():
    config = linear_eval_imagenet.get_config()
    config.model.depth = 18
    config.model.width_multiplier = 0.25
    config.num_classes = 10
    config.data.source = "image_folder"
    config.data.tfds_name = ""
    config.data.data_dir = common.data_path("imagenette")
    config.data.num_examples = -1
    config.train_split = "train"
    config.test_split = "val"
    config.eval_batch_size = 128
    config.linear.batch_size = 128
    config.linear.num_epochs = 30
    config.linear.learning_rate = 0.5
    config.linear.augment = False
    config.linear.image_size = 64
    config.linear.resize_size = 73
    config.linear.checkpoint_every_steps = 200
    return config
