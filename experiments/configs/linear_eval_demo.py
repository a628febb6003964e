"""Linear evaluation on scikit-learn's digits (the demo data; no download, seconds on a CPU).

  relicv2-linear-eval --config=experiments/configs/linear_eval_demo.py \
      --config.encoder_dir=runs/demo/encoder --output_dir=runs/demo/linear
"""

from experiments.configs import linear_eval_imagenet


def get_config():
    config = linear_eval_imagenet.get_config()
    config.model.depth = 18
    config.model.width_multiplier = 0.25
    config.num_classes = 10
    config.data.source = "digits"
    config.data.tfds_name = ""
    config.train_split = "train"
    config.test_split = "test"
    config.eval_batch_size = 256
    config.linear.batch_size = 128
    config.linear.num_epochs = 30
    config.linear.learning_rate = 0.5
    config.linear.augment = False
    config.linear.image_size = 32
    config.linear.resize_size = 32  # the digits are 32 px already: no crop at test time
    config.linear.shuffle_buffer = 2048
    config.linear.checkpoint_every_steps = 100
    return config
