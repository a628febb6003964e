"""What a protocol reads: the encoder to evaluate and labelled examples, from its config.

Every protocol's config names its encoder the same way (`encoder_dir`, or `random_init` with
`model` and `seed`) and its data as a `data` section of the shared data config
(`relicv2_tf/data/defaults.py`) plus split names; this module turns them into an encoder and
(uint8 image, label) datasets, and raises ValueError / FileNotFoundError naming the setting to fix.
"""

from __future__ import annotations

import copy

import keras
import tensorflow as tf

from relicv2_tf.data import defaults
from relicv2_tf.models import encoder_io


# --------------------------------------------------------------------------- the encoder
def random_init_encoder(model_config, seed: int) -> keras.Model:
    """A random-init encoder of `model_config` (depth, width_multiplier, ...), the same one for
    the same seed: the baseline every protocol can evaluate."""
    keras.utils.set_random_seed(seed)
    return encoder_io.build_encoder(encoder_io.encoder_config(model_config))


def encoder_from_config(config) -> keras.Model:
    """The encoder to evaluate: `config.encoder_dir` (encoder_io format), or a random-init encoder
    of `config.model` (seeded by `config.seed`) when `config.random_init` is set."""
    if config.get("random_init", False):
        return random_init_encoder(config.model, config.seed)
    if not config.encoder_dir:
        raise ValueError("--config.encoder_dir is empty; pass the encoder directory written by "
                         "relicv2-pretrain (<workdir>/encoder), or --config.random_init=True.")
    return encoder_io.load_encoder(config.encoder_dir)


def encoder_model_config(config) -> dict:
    """The architecture (`resnet()` arguments) of the encoder `encoder_from_config` builds, to
    save a trained copy of it with `encoder_io.save_encoder`."""
    if config.get("random_init", False) or not config.encoder_dir:
        return encoder_io.encoder_config(config.model)
    model_config, _ = encoder_io.read_model_directory(
        config.encoder_dir, encoder_io.WEIGHTS_FILE, encoder_io.CONFIG_FILE,
        "`relicv2-pretrain` (<workdir>/encoder) or `relicv2-import`")
    return model_config


# --------------------------------------------------------------------------- labelled data
def data_section(base=None, **fields):
    """A data section: a copy of `base` (default: the shared default data config) with `fields`
    replaced, e.g. `data_section(source="image_folder", data_dir=root, split="")`."""
    data = copy.deepcopy(base) if base is not None else defaults.data_config()
    with data.unlocked():
        for key, value in fields.items():
            data[key] = value
    return data


def read_id_list(path: str) -> list[str]:
    """One example id or file name per line (SimCLR's `1percent.txt` format); blanks ignored."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"--config.subset_file={path!r} does not exist; pass a file "
                                "with one example id or file name per line.")
    with tf.io.gfile.GFile(path) as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise ValueError(f"{path} lists no example ids; expected one id or file name per line.")
    return ids


def filter_by_ids(examples, ids):
    """Keeps the examples (dicts with an `id` string) whose id, or id's last path component,
    is listed in `ids` (so `n01440764/n01440764_10026.JPEG` matches `n01440764_10026.JPEG`)."""
    keys = tf.constant(list(ids), tf.string)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, tf.int32)), default_value=0)

    def keep(example):
        example_id = example["id"]
        basename = tf.strings.split(example_id, "/")[-1]
        return tf.logical_or(table.lookup(example_id) > 0, table.lookup(basename) > 0)
    return examples.filter(keep)


def labelled_examples(data_config, split: str, *, with_masks: bool = False, seed: int = 0,
                      ids=None):
    """(image, label) or (image, mask, label) examples of a split, in a fixed order (evaluation
    never relies on file shuffling; training shuffles per epoch under its own seed).

    `ids` (a list of example ids or file names) keeps only the listed examples: a label subset.
    """
    from relicv2_tf.data import sources
    dataset = sources.make_source(data_config, split, seed=seed, shuffle_files=False)
    if ids is not None:
        dataset = filter_by_ids(dataset, ids)
    if with_masks:
        if not sources.has_masks(dataset):
            raise ValueError(f"data.source={data_config.source!r} split {split!r} has no masks; "
                             "use a TFRecord with masks or set data.mask_dir (ImageFolder).")
        return dataset.map(lambda ex: (ex["image"], ex["mask"], ex["label"]))
    return dataset.map(lambda ex: (ex["image"], ex["label"]))


def infer_num_classes(data_config, split: str) -> int:
    """Number of classes of a source: class folders, TFDS metadata, or 10 for digits."""
    from relicv2_tf.data import sources
    source = sources.SOURCES.get(data_config.source)
    if source is not None and source.num_classes is not None:
        return source.num_classes(data_config, split)
    raise ValueError(f"cannot infer the number of classes of data.source={data_config.source!r}; "
                     "set --config.num_classes.")


def resolve_num_classes(num_classes: int, data_config, split: str) -> int:
    """`num_classes` when positive, otherwise inferred from the source."""
    return int(num_classes) if num_classes > 0 else infer_num_classes(data_config, split)
