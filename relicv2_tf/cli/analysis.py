"""`relicv2-analysis`: class concentration (Figure 4) and nearest-neighbour confusion (appendix C).

  relicv2-analysis --config=experiments/configs/linear_eval_imagenette.py \
      --encoders=relicv2=runs/demo/encoder,supervised=runs/sup/encoder \
      --output_dir=runs/analysis

Uses the data section, `test_split` and the linear config's image / resize sizes of any linear-eval
config. Writes class_concentration.png, nn_confusion_<name>.png and analysis.json (mean ratio and
nearest-neighbour label agreement per encoder).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A linear-eval config (data, test_split, linear.image_size).",
    lock_config=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory for figures and results.")
_ENCODERS = flags.DEFINE_string(
    "encoders", None, "Comma-separated name=encoder_dir pairs to compare "
    "(name=random for a random-init encoder of config.model).")
_CLASSES = flags.DEFINE_string("classes", "0,1,2,3",
                               "Class indices shown in the nearest-neighbour figure.")
_PER_CLASS = flags.DEFINE_integer("per_class", 50, "Images per class in the neighbour figure.")
_NEIGHBOURS = flags.DEFINE_integer("num_neighbours", 5, "Nearest neighbours per image.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def _parse_encoders(value: str) -> dict:
    pairs = {}
    for item in [v for v in (value or "").split(",") if v.strip()]:
        if "=" not in item:
            raise app.UsageError(f"--encoders item {item!r} is not name=encoder_dir.")
        name, path = item.split("=", 1)
        pairs[name.strip()] = path.strip()
    if not pairs:
        raise app.UsageError("--encoders needs at least one name=encoder_dir pair.")
    return pairs


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, output_dir = _CONFIG.value, _OUTPUT_DIR.value
    if config is None or not output_dir:
        raise app.UsageError("relicv2-analysis needs --config=<file> and --output_dir=<dir>.")
    encoders = _parse_encoders(_ENCODERS.value)
    classes = [int(c) for c in _CLASSES.value.split(",") if c.strip()]
    import keras
    import numpy as np

    from relicv2_tf.evaluation import analysis, linear, results
    from relicv2_tf.models import encoder_io

    os.makedirs(output_dir, exist_ok=True)
    examples = linear.labelled_examples(config.data, config.test_split)
    ratios, metrics, details = {}, {}, {}
    for name, path in encoders.items():
        try:
            if path == "random":
                keras.utils.set_random_seed(config.seed)
                encoder = encoder_io.build_encoder(encoder_io.encoder_config(config.model))
            else:
                encoder = encoder_io.load_encoder(path)
        except FileNotFoundError as error:
            print(f"relicv2-analysis: {error}", file=sys.stderr)
            sys.exit(2)
        features, labels = linear.extract_features(
            encoder, linear.eval_batches(examples, config.eval_batch_size,
                                         config.linear.image_size, config.linear.resize_size),
            progress=_PROGRESS.value, description=name)
        ratios[name] = analysis.class_concentration_ratios(features, labels)
        chosen = analysis.select_contiguous(labels, classes, _PER_CLASS.value, config.seed)
        index, distances = analysis.nearest_neighbours(features[chosen], _NEIGHBOURS.value)
        figure = analysis.plot_neighbour_confusion(
            index, distances, labels[chosen],
            os.path.join(output_dir, f"nn_confusion_{name}.png"),
            class_names=[str(c) for c in classes])
        metrics[f"{name}/mean_ratio"] = float(ratios[name].mean())
        metrics[f"{name}/nn_label_agreement"] = analysis.neighbour_label_agreement(
            index, labels[chosen])
        details[name] = {"encoder_dir": path, "nn_figure": figure,
                         "ratio_quantiles_0_25_50_75_100": np.quantile(
                             ratios[name], [0.0, 0.25, 0.5, 0.75, 1.0]).tolist()}
    details["concentration_figure"] = analysis.plot_concentration(
        ratios, os.path.join(output_dir, "class_concentration.png"))
    results.write_result(output_dir, "analysis", metrics, config=config, details=details)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
