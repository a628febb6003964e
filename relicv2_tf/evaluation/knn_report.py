"""kNN evaluation of a pretraining run: the end-of-run check (pretrained vs random-init encoder)
and the monitor that `train.pretrain` runs during training (`config.evaluation.knn_*`).

Both encoders see the same centre-cropped images (`preprocess_for_eval` at the pretraining
resolution), so the gap measures what pretraining learned, not the preprocessing.
"""

from __future__ import annotations

import os

from relicv2_tf import atomic, distribute, train_logging
from relicv2_tf.data import eval_preprocess, sources
from relicv2_tf.evaluation import batches, features, inputs, knn
from relicv2_tf.models import encoder_io

# Sources with labels and a held-out split: (train split, held-out split).
EVAL_SPLITS = {name: source.eval_splits for name, source in sources.SOURCES.items()
               if source.eval_splits}


def check_config(config, fail):
    """`evaluation.knn_*`: the kNN monitor needs a labelled train / held-out split pair."""
    e, t = config.evaluation, config.training
    if e.knn_every_steps < 0:
        fail(f"evaluation.knn_every_steps={e.knn_every_steps} must be >= 0 (0 = off).")
    if e.knn_every_steps == 0:
        return
    if e.knn_every_steps % t.checkpoint_every_steps:
        fail(f"evaluation.knn_every_steps={e.knn_every_steps} must be a multiple of "
             f"training.checkpoint_every_steps={t.checkpoint_every_steps} (the monitor runs "
             "at the end of checkpoint intervals).")
    source = e.knn_source or config.data.source
    if source not in EVAL_SPLITS:
        fail(f"evaluation.knn_every_steps={e.knn_every_steps} needs labelled train and held-out "
             f"splits, which source {source!r} does not have; set --config.evaluation."
             f"knn_source to one of {sorted(EVAL_SPLITS)} (with knn_data_dir / "
             "knn_tfds_name), or --config.evaluation.knn_every_steps=0.")
    if e.knn_source == "tfds" and not e.knn_tfds_name:
        fail("evaluation.knn_source='tfds' needs evaluation.knn_tfds_name (e.g. imagenet2012).")


def labelled_data_config(config):
    """The data config of kNN evaluation: `config.data`, or, when `config.evaluation.knn_source`
    is set, `config.data` with source / data_dir / tfds_name from `knn_source`, `knn_data_dir`
    and `knn_tfds_name`."""
    evaluation = config.get("evaluation")
    if evaluation is None or not evaluation.knn_source:
        return inputs.data_section(config.data)
    return inputs.data_section(config.data, source=evaluation.knn_source,
                               data_dir=evaluation.knn_data_dir,
                               tfds_name=evaluation.knn_tfds_name)


def image_batches(data_config, split, image_size, max_examples, batch_size=256):
    """(normalised centre crops, labels) batches of a split, at most `max_examples` (<= 0: all)."""
    examples = inputs.labelled_examples(data_config, split)
    if max_examples > 0:
        examples = examples.take(max_examples)
    return batches.eval_batches(examples, batch_size, image_size,
                                eval_preprocess.eval_resize_size(image_size))


def _split_batches(config, max_examples):
    data = labelled_data_config(config)
    train_split, test_split = EVAL_SPLITS[data.source]
    size = config.data.image_size
    return (image_batches(data, train_split, size, max_examples),
            image_batches(data, test_split, size, max_examples), train_split, test_split)


def monitor(config, every_n_epochs: int) -> knn.KNNMonitor:
    """The KNNMonitor of `config.evaluation` for `train.pretrain` (one Keras epoch = one
    checkpoint interval)."""
    e = config.evaluation
    train_batches, test_batches, _, _ = _split_batches(config, e.knn_max_examples)
    return knn.KNNMonitor(train_batches, test_batches, num_classes=None,
                          every_n_epochs=every_n_epochs, k=e.knn_k, temperature=e.knn_temperature)


def compare_with_random_init(config, encoder_dir: str, k: int = 20, temperature: float = 0.07,
                             max_examples: int = 5000) -> dict:
    """kNN top-1 on the source's held-out split for the trained and a random-init encoder."""
    train_batches, test_batches, train_split, test_split = _split_batches(config, max_examples)
    pretrained = encoder_io.load_encoder(encoder_dir)
    random_init = inputs.random_init_encoder(config.model, config.seed)
    result = {"k": k, "temperature": temperature, "train_split": train_split,
              "test_split": test_split, "image_size": config.data.image_size}
    for name, encoder in (("pretrained", pretrained), ("random_init", random_init)):
        train_x, train_y = features.extract_features(encoder, train_batches, progress=False)
        test_x, test_y = features.extract_features(encoder, test_batches, progress=False)
        result[f"{name}_top1"] = knn.knn_accuracy(train_x, train_y, test_x, test_y,
                                                  knn.num_classes_of(train_y, test_y), k,
                                                  temperature)
        result["num_train"], result["num_test"] = len(train_y), len(test_y)
    return result


def report_end_of_run(config, workdir: str, step: int, encoder_dir: str,
                      strategy=None) -> dict | None:
    """The end-of-run check of the pretraining run in `workdir`: `compare_with_random_init` with
    `config.evaluation`'s k, temperature and example limit, written to
    `<workdir>/knn_eval.json`, as the TensorBoard scalars `final_knn_top1` and
    `final_knn_top1_random_init` at `step`, and as a line of train.log (`summary_line`).

    Only the chief of `strategy` (`distribute.WorkerRole`) runs it; returns None on another
    worker (which waits for the chief: `distribute.wait_for_workers`) and when the labelled
    data has no held-out split (`EVAL_SPLITS`)."""
    if labelled_data_config(config).source not in EVAL_SPLITS:
        return None
    try:
        return _report_on_chief(config, workdir, step, encoder_dir, strategy)
    finally:
        distribute.wait_for_workers(strategy)


def _report_on_chief(config, workdir, step, encoder_dir, strategy):
    if not distribute.worker_role(strategy).is_chief:
        return None
    e = config.evaluation
    result = compare_with_random_init(config, encoder_dir, k=e.knn_k,
                                      temperature=e.knn_temperature,
                                      max_examples=e.knn_max_examples)
    atomic.write_json(os.path.join(workdir, "knn_eval.json"), result, indent=2)
    train_logging.write_scalars(os.path.join(workdir, "tensorboard", "train"), step,
                                {"final_knn_top1": result["pretrained_top1"],
                                 "final_knn_top1_random_init": result["random_init_top1"]})
    with open(os.path.join(workdir, "train.log"), "a") as f:
        f.write(summary_line(result) + "\n")
    return result


def summary_line(result: dict) -> str:
    """One line of a `report_end_of_run` result (console and train.log)."""
    return (f"kNN top-1 (k={result['k']}, {result['num_train']} train / {result['num_test']} "
            f"test images): pretrained {result['pretrained_top1']:.4f} vs random-init "
            f"{result['random_init_top1']:.4f}")
