"""The per-image val predictions of a finished Imagenette run, for the image-level tests of the
page (experiments/imagenette64_stats.py: McNemar, paired bootstrap).

  python experiments/imagenette64_predictions.py runs/imagenette64/byol/seed0
  python experiments/imagenette64_predictions.py runs/imagenette64/byol/seed0 --random_init

Writes <run_dir>/predictions.json (atomically): {"ids_digest", "num_images", "labels", "knn",
"knn_top1", "linear", "linear_top1"}, the label and prediction arrays encoded by
`imagenette64_stats.encode_predictions`, in the val split's fixed order, which `ids_digest`
names. The predictions are recomputed with the run's own protocols, not approximated:
  * knn: relicv2-pretrain's end-of-run kNN (`knn_report.compare_with_random_init`, which
    writes knn_eval.json): weighted kNN, k = 20, T = 0.07, every train image in the bank, val
    images as queries, centre crops at the pretraining resolution;
  * linear: the head relicv2-linear-eval saved (<run_dir>/linear/linear_head.keras) on the
    centre-crop val features that `linear_head.evaluate_head` scored
    (experiments/configs/linear_eval_imagenette.py).
Each top-1 recomputed from the predictions must equal the run's recorded one (knn_eval.json
`pretrained_top1`, linear/linear_eval.json `metrics.top1`), or nothing is written.
`--random_init`: the kNN predictions of the random-init encoder of the same architecture and
seed (`random_init_top1` of the same file) into <run_dir>/predictions_random_init.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from experiments import imagenette64_stats as stats  # noqa: E402  (no TensorFlow)
from experiments.configs import imagenette64  # noqa: E402

OUTPUT = {False: "predictions.json", True: "predictions_random_init.json"}
# Where a run's end-of-run kNN lives: relicv2-pretrain's, else the runner's `knn_of` (the
# supervised baseline).
KNN_RECORDS = ("knn_eval.json", os.path.join("knn", "knn.json"))


def knn_config(run_dir: str):
    """The config whose data, evaluation, model and seed define a run's end-of-run kNN, from its
    directory (experiments/imagenette64.py `run_dir`: .../<cell, ',' as '_'>/seed<k>): the
    protocol's `get_config(cell)` at that seed; for the supervised cell, what the runner's
    `knn_of` uses (`get_config("byol")`, its seed unchanged)."""
    cell_dir, seed_dir = os.path.normpath(run_dir).split(os.sep)[-2:]
    match = re.fullmatch(r"seed(\d+)", seed_dir)
    if not match:
        raise ValueError(f"{run_dir}: not a run directory of experiments/imagenette64.py "
                         "(expected .../<cell>/seed<k>).")
    if cell_dir == "supervised":
        return imagenette64.get_config("byol")
    spec = cell_dir
    for variant in imagenette64.VARIANTS:
        if cell_dir.endswith("_" + variant):
            spec = f"{cell_dir[:-len(variant) - 1]},{variant}"
    config = imagenette64.get_config(spec)
    config.seed = int(match.group(1))
    return config


def _read_json(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: {what}.")
    with open(path) as f:
        return json.load(f)


def knn_predictions(config, encoder):
    """(predicted class [N], label [N]) of the val queries under the end-of-run kNN protocol of
    `config` (`knn_report.compare_with_random_init`: its batches, features and scores)."""
    from relicv2_tf.evaluation import features, knn, knn_report

    data = knn_report.labelled_data_config(config)
    train_split, test_split = knn_report.EVAL_SPLITS[data.source]
    e = config.evaluation
    bank, queries = (knn_report.image_batches(data, split, config.data.image_size,
                                              e.knn_max_examples)
                     for split in (train_split, test_split))
    train_x, train_y = features.extract_features(encoder, bank, progress=False)
    test_x, test_y = features.extract_features(encoder, queries, progress=False)
    scores = knn.knn_predict(train_x, train_y, test_x, knn.num_classes_of(train_y, test_y),
                             e.knn_k, e.knn_temperature)
    return np.argmax(scores, axis=1), test_y


def linear_predictions(linear_config, encoder, head):
    """(predicted class [N], label [N]) of the test split of a relicv2-linear-eval config:
    `linear_head.evaluate_head`'s centre-crop features and top-1 (`predict_top_k`)."""
    from relicv2_tf.evaluation import features, inputs, linear_head

    c = linear_config
    test_examples = inputs.labelled_examples(c.data, c.test_split, seed=c.seed)
    test_x, test_y = features.centre_crop_features(
        encoder, test_examples, batch_size=c.eval_batch_size or c.linear.batch_size,
        image_size=c.linear.image_size, resize_size=c.linear.resize_size, progress=False)
    return linear_head.predict_top_k(head, test_x, 1)[:, 0], test_y


def example_ids(data_config, split: str, max_examples: int = -1) -> list:
    """The example ids of a split in the fixed order every protocol reads
    (`inputs.labelled_examples`), at most `max_examples` (<= 0: all)."""
    from relicv2_tf.data import sources

    dataset = sources.make_source(data_config, split, shuffle_files=False)
    if max_examples > 0:
        dataset = dataset.take(max_examples)
    return [example_id.decode() for example_id in
            dataset.map(lambda example: example["id"]).as_numpy_iterator()]


def _check_top1(name: str, predictions, labels, recorded: float, source: str) -> float:
    top1 = float(np.mean(predictions == labels))
    if top1 != recorded:
        raise RuntimeError(f"{name} top-1 recomputed from the predictions is {top1!r}, the run "
                           f"recorded {recorded!r} ({source}): the predictions would not be the "
                           "run's, nothing written.")
    return top1


def run_predictions(run_dir: str, config, linear_config, *, linear_dir: str | None = None,
                    random_init: bool = False, output_dir: str | None = None) -> dict:
    """The predictions of the run in `run_dir` (its encoder/ and end-of-run kNN record; the
    linear evaluation in `linear_dir`, default <run_dir>/linear), written to
    <output_dir or run_dir>/predictions.json, or, with `random_init`, the kNN predictions of the
    random-init encoder of `config.model` and `config.seed` to predictions_random_init.json.
    `config`: the run's pretraining config (`knn_config`); `linear_config`: its linear
    evaluation's (experiments/configs/linear_eval_imagenette.py). Raises RuntimeError, naming
    both numbers, when a top-1 recomputed from the predictions differs from the recorded one."""
    from relicv2_tf.evaluation import inputs, knn_report, linear_head
    from relicv2_tf.models import encoder_io

    knn_path = next((os.path.join(run_dir, name) for name in KNN_RECORDS
                     if os.path.isfile(os.path.join(run_dir, name))),
                    os.path.join(run_dir, KNN_RECORDS[0]))
    knn_record = _read_json(knn_path, "the run's end-of-run kNN (relicv2-pretrain)")
    if random_init:
        encoder = inputs.random_init_encoder(config.model, config.seed)
    else:
        encoder = encoder_io.load_encoder(os.path.join(run_dir, "encoder"))
    knn, labels = knn_predictions(config, encoder)
    name = "random_init" if random_init else "pretrained"
    result = {"knn_top1": _check_top1(f"kNN ({name})", knn, labels,
                                      knn_record[f"{name}_top1"], knn_path)}
    if not random_init:
        linear_dir = linear_dir or os.path.join(run_dir, "linear")
        linear_path = os.path.join(linear_dir, "linear_eval.json")
        linear_record = _read_json(linear_path, "the run's linear evaluation "
                                                "(relicv2-linear-eval --output_dir=<run>/linear)")
        head = linear_head.load_head(os.path.join(linear_dir, linear_head.HEAD_FILE))
        linear, linear_labels = linear_predictions(linear_config, encoder, head)
        if not np.array_equal(linear_labels, labels):
            raise RuntimeError("the kNN and linear protocols read different val examples "
                               f"({config.data.data_dir} vs {linear_config.data.data_dir}).")
        result["linear_top1"] = _check_top1("linear", linear, labels,
                                            linear_record["metrics"]["top1"], linear_path)
        result["linear"] = stats.encode_predictions(linear)
    data = knn_report.labelled_data_config(config)
    ids = example_ids(data, knn_report.EVAL_SPLITS[data.source][1],
                      config.evaluation.knn_max_examples)
    if len(ids) != len(labels):
        raise RuntimeError(f"{len(ids)} example ids for {len(labels)} predictions.")
    result = {"ids_digest": stats.ids_digest(ids), "num_images": len(ids),
              "labels": stats.encode_predictions(labels), "knn": stats.encode_predictions(knn),
              **result}
    output_dir = output_dir or run_dir
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, OUTPUT[random_init])
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished run: runs/imagenette64/<cell>/seed<k>")
    parser.add_argument("--random_init", action="store_true",
                        help="kNN predictions of the random-init encoder instead")
    parser.add_argument("--linear_dir", default=None,
                        help="the run's linear evaluation (default <run_dir>/linear)")
    parser.add_argument("--output_dir", default=None, help="default: <run_dir>")
    args = parser.parse_args()
    from experiments.configs import linear_eval_imagenette

    result = run_predictions(args.run_dir, knn_config(args.run_dir),
                             linear_eval_imagenette.get_config(), linear_dir=args.linear_dir,
                             random_init=args.random_init, output_dir=args.output_dir)
    print(json.dumps({k: v for k, v in result.items() if k.endswith(("top1", "digest"))}))


if __name__ == "__main__":
    main()
