"""`relicv2-finetune`: semi-supervised fine-tuning on a label subset (ReLICv2 appendix B.2).

  relicv2-finetune --config=experiments/configs/finetune_imagenet_1pct.py \
      --config.encoder_dir=runs/r50/encoder --output_dir=runs/r50/semi_1pct
  # a list file of ids instead of the TFDS subset:
  relicv2-finetune --config=experiments/configs/finetune_imagenet_1pct.py \
      --config.data.tfds_name=imagenet2012 --config.subset_file=1percent.txt ...

Writes <output_dir>/encoder (fine-tuned, encoder_io format), <output_dir>/linear_head.keras,
<output_dir>/finetune.json; rerunning resumes from <output_dir>/checkpoints.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. experiments/configs/finetune_imagenet_1pct.py.",
    lock_config=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory for results and checkpoints.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def _model_config(config) -> dict:
    if config.get("random_init", False) or not config.encoder_dir:
        return config.model.to_dict()
    with open(os.path.join(config.encoder_dir, "model_config.json")) as f:
        return json.load(f)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, output_dir = _CONFIG.value, _OUTPUT_DIR.value
    if config is None or not output_dir:
        raise app.UsageError("relicv2-finetune needs --config=<file> and --output_dir=<dir>.")
    from relicv2_tf.data import sources
    from relicv2_tf.evaluation import finetune, linear, results
    from relicv2_tf.models import encoder_io

    try:
        encoder = linear.encoder_from_config(config)
        num_classes = linear.resolve_num_classes(config.num_classes, config.test_data,
                                                 config.test_split)
        train = sources.make_source(config.data, config.train_split, seed=config.seed,
                                    shuffle_files=False)
        if config.subset_file:
            train = finetune.filter_by_ids(train, finetune.read_id_list(config.subset_file))
    except (ValueError, FileNotFoundError) as error:
        print(f"relicv2-finetune: {error}", file=sys.stderr)
        sys.exit(2)
    train_examples = train.map(lambda ex: (ex["image"], ex["label"]))
    test_examples = linear.labelled_examples(config.test_data, config.test_split)
    head, metrics, info = finetune.finetune_eval(
        encoder, train_examples, test_examples, num_classes=num_classes, seed=config.seed,
        eval_batch_size=config.eval_batch_size, resize_size=config.resize_size,
        progress=_PROGRESS.value, checkpoint_dir=os.path.join(output_dir, "checkpoints"),
        **config.finetune.to_dict())
    encoder_dir = encoder_io.save_encoder(encoder, _model_config(config),
                                          os.path.join(output_dir, "encoder"))
    linear.save_head(head, output_dir)
    details = {"encoder": encoder_dir, "num_train_examples": info["num_train_examples"],
               "subset": config.subset_file or config.data.tfds_name}
    results.write_result(output_dir, "finetune", metrics, config=config, details=details)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
