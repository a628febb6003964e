"""Linear evaluation on scikit-learn's digits (the demo data; no download, seconds on a CPU).

  relicv2-linear-eval --config=experiments/configs/linear_eval_demo.py \
      --config.encoder_dir=runs/demo/encoder --output_dir=runs/demo/linear
"""

from experiments.configs import linear_eval_imagenette


def get_config():
    """linear_eval_imagenette.py (ResNet-18 x0.25, 10 classes, features computed once) on the
    digits at their 32 px."""
    config = linear_eval_imagenette.get_config()
    config.data.source = "digits"
    config.data.data_dir = ""
    config.test_split = "test"
    config.eval_batch_size = 256
    config.linear.image_size = 32
    config.linear.resize_size = 32  # the digits are 32 px already: no crop at test time
    config.linear.shuffle_buffer = 2048
    config.linear.checkpoint_every_steps = 100
    return config
