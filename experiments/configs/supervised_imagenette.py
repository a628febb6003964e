"""Supervised baseline on Imagenette at 64 px ($RELICV2_DATA_ROOT/imagenette, default
../shared/data/imagenette), for the comparison table in docs/RESULTS.md: the same ResNet as the
demo encoders, trained with labels.

  relicv2-supervised --config=experiments/configs/supervised_imagenette.py \
      --output_dir=runs/imagenette/supervised

Standard supervised recipe (SGD Nesterov 0.9, weight decay 1e-4, cosine), random resized crop
64 + flip. The budget matches the demo pretraining on Imagenette (the 2,000-image evenly spread
subset, batch 64, about 150 steps = 5 epochs), so the comparison in docs/RESULTS.md is like for
like; the learning rate is raised (0.4 x 64 / 256 = 0.1) for such a short schedule.
"""

from experiments.configs import common, supervised_demo


def get_config():
    config = supervised_demo.get_config()
    config.num_classes = 10
    config.data.source = "image_folder"
    config.data.data_dir = common.data_path("imagenette")
    config.data.num_examples = 2000
    config.train_split = "train"
    config.test_split = "val"
    config.eval_batch_size = 128
    config.resize_size = 73
    config.supervised.batch_size = 64
    config.supervised.num_epochs = 5
    config.supervised.base_learning_rate = 0.4  # short schedule: 0.1 x 64/256 x 4
    config.supervised.image_size = 64
    config.supervised.shuffle_buffer = 2000
    config.supervised.checkpoint_every_steps = 50
    return config
