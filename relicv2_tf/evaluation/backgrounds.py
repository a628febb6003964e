"""Background robustness: the ImageNet-9 Backgrounds Challenge (Xiao et al. 2020).

Five test variants of the same images: `original`, `only_fg` (background black), `mixed_same`
(foreground on the background of another image of the same class), `mixed_rand` (background of a
random image) and `mixed_next` (background of an image of the next class). BG-gap =
acc(mixed_same) - acc(mixed_rand): how much accuracy depends on the background being the right
one. Composed from masks, three more variants fill with one random grey level per image
(uniform in [0, 1]) instead: `only_fg_grey` (the background), `mixed_same_grey` / `mixed_rand_grey`
(the hole a donor's own object leaves, same donors as `mixed_same` / `mixed_rand`), and
`bg_gap_grey` = their difference. ReLICv2's masked training views have a flat grey background,
so a masked encoder has seen flat backgrounds before: the grey variants tell that familiarity
apart from using the foreground (a black Only-FG or a mean-filled hole is a flat colour too).
Two sources:
  * an ImageNet-9 ImageFolder root laid out as published: `<root>/<variant>/val/<class>/...`;
  * any dataset with foreground masks (TFRecord `mask`, tfrecord_format.py), from which the
    variants are composed here. Approximation: ImageNet-9 fills the removed foreground of a
    donor background by tiling background patches; here it is filled with the donor's mean
    background colour. Masks are binarised at 0.5, as ImageNet-9's GrabCut masks are binary.

A classifier over ImageNet's 1000 classes is scored on the 9 super-classes through a mapping
(the challenge's `in_to_in9.json`: 1000 integers, the super-class of each ImageNet class or -1):
logits are restricted to the mapped classes and the best one's super-class is the prediction.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from relicv2_tf.data import eval_preprocess, normalize
from relicv2_tf.evaluation import features as features_lib
from relicv2_tf.evaluation import inputs, linear, linear_head, results

VARIANTS = ("original", "only_fg", "mixed_same", "mixed_rand", "mixed_next")
GREY_VARIANTS = ("only_fg_grey", "mixed_same_grey", "mixed_rand_grey")  # composed from masks
MODES = ("imagenet9", "masks")  # config.mode: the published folders | composed from masks
HEADS = ("train", "imagenet")  # config.head: a probe on original/train | the ImageNet head


def bg_gap(accuracies: dict) -> float:
    """BG-gap = accuracy on mixed_same - accuracy on mixed_rand."""
    return float(accuracies["mixed_same"] - accuracies["mixed_rand"])


def read_in_to_in9(path: str) -> np.ndarray:
    """The challenge's mapping file: a JSON list (or {"0": k, ...} dict) of 1000 super-classes."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"--config.in_to_in9={path!r} is not a file; head=imagenet needs "
                                "the Backgrounds Challenge's in_to_in9.json.")
    with open(path) as f:
        mapping = json.load(f)
    if isinstance(mapping, dict):
        mapping = [mapping[str(i)] for i in range(len(mapping))]
    mapping = np.asarray(mapping, np.int64)
    if mapping.ndim != 1 or mapping.max() < 0:
        raise ValueError(f"{path}: expected a list of 1000 super-class indices (-1 = none).")
    return mapping


def superclass_top1(head, features, labels, superclass_of) -> float:
    """Top-1 on super-classes of a fine-grained head (restricted to mapped classes)."""
    superclass_of = np.asarray(superclass_of)
    subset = np.flatnonzero(superclass_of >= 0)
    top = linear_head.predict_top_k(head, features, 1, class_subset=subset)
    return float(np.mean(superclass_of[top[:, 0]] == np.asarray(labels)))


# --------------------------------------------------------------------------- variants from masks
def resize_with_mask(image, mask, image_size: int, resize_size: int):
    """Eval geometry (resize shorter side bicubic, centre crop) applied to image and mask together.
    Returns (image float [S, S, 3] in [0, 1], mask float [S, S, 1] in [0, 1])."""
    stacked = tf.concat([normalize.to_unit_float(image), normalize.to_unit_float(mask)],
                        axis=-1)
    stacked = eval_preprocess.resize_shorter_side(stacked, resize_size)
    stacked = tf.clip_by_value(eval_preprocess.center_crop(stacked, image_size), 0.0, 1.0)
    return stacked[..., :3], stacked[..., 3:]


def donor_backgrounds(images, masks, fill=None):
    """Each image with its foreground replaced by its mean background colour, or by `fill`
    ([N] grey levels) when given: [N, S, S, 3]."""
    if fill is not None:
        return images * (1.0 - masks) + np.asarray(fill, np.float32)[:, None, None, None] * masks
    background = 1.0 - masks
    weight = background.sum(axis=(1, 2))  # [N, 1]
    mean = (images * background).sum(axis=(1, 2)) / np.maximum(weight, 1.0)
    mean = np.where(weight > 0, mean, 0.5)  # an all-foreground donor gives a grey background
    return images * background + mean[:, None, None, :] * masks


def choose_donors(labels, rule: str, rng: np.random.Generator) -> np.ndarray:
    """Index of the background donor of each image: same class | random | next class.

    `same`: another image of the same class (itself when it is alone in its class);
    `random`: another image of any class; `next`: an image of the next class present (cyclic).
    """
    labels = np.asarray(labels)
    n = len(labels)
    classes = np.unique(labels)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    donors = np.empty(n, np.int64)
    for i, label in enumerate(labels):
        if rule == "same":
            pool = members[label][members[label] != i]
            donors[i] = rng.choice(pool) if len(pool) else i
        elif rule == "random":
            donors[i] = rng.choice(np.delete(np.arange(n), i)) if n > 1 else i
        elif rule == "next":
            next_class = classes[(np.searchsorted(classes, label) + 1) % len(classes)]
            donors[i] = rng.choice(members[next_class])
        else:
            raise ValueError(f"donor rule must be same | random | next, got {rule!r}.")
    return donors


def make_variants(images, masks, labels, seed: int = 0) -> dict:
    """The five ImageNet-9 variants of images [N, S, S, 3] in [0, 1] with masks [N, S, S, 1],
    and the three GREY_VARIANTS (module docstring)."""
    images = np.asarray(images, np.float32)
    masks = (np.asarray(masks, np.float32) >= 0.5).astype(np.float32)
    rng = np.random.default_rng(seed)
    backgrounds = donor_backgrounds(images, masks)
    variants = {"original": images, "only_fg": images * masks}
    donors = {}
    for name, rule in (("mixed_same", "same"), ("mixed_rand", "random"), ("mixed_next", "next")):
        donors[name] = choose_donors(labels, rule, rng)
        variants[name] = images * masks + backgrounds[donors[name]] * (1.0 - masks)
    grey = rng.uniform(0.0, 1.0, len(images)).astype(np.float32)  # drawn after the donors
    variants["only_fg_grey"] = images * masks + grey[:, None, None, None] * (1.0 - masks)
    grey_backgrounds = donor_backgrounds(images, masks, grey)
    for name in ("mixed_same", "mixed_rand"):
        variants[f"{name}_grey"] = (images * masks
                                    + grey_backgrounds[donors[name]] * (1.0 - masks))
    return variants


def load_masked_examples(examples, image_size: int = 224, resize_size: int = 256):
    """(image, mask, label) examples -> numpy images [N,S,S,3], masks [N,S,S,1], labels [N]."""
    def prepare(image, mask, label):
        image, mask = resize_with_mask(image, mask, image_size, resize_size)
        return image, mask, tf.cast(label, tf.int32)
    images, masks, labels = [], [], []
    for image, mask, label in examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE):
        images.append(image.numpy())
        masks.append(mask.numpy())
        labels.append(int(label))
    if not images:
        raise ValueError("No masked examples: the dataset is empty or has no `mask` feature.")
    return np.stack(images), np.stack(masks), np.asarray(labels, np.int32)


def evaluate_variants(encoder, head, variant_examples: dict, *, num_classes: int,
                      superclass_of=None, batch_size: int = 256, image_size: int = 224,
                      resize_size: int = 256, progress: bool = True, strategy=None) -> dict:
    """Accuracy per variant + BG-gap, from {variant: (image, label) dataset} (ImageFolder root)
    or {variant: (images01 array, labels)} (composed from masks)."""
    accuracies = {}
    for name in VARIANTS + GREY_VARIANTS:
        if name not in variant_examples:
            continue
        data = variant_examples[name]
        if isinstance(data, tuple):
            features = features_lib.image_array_features(
                encoder, data[0], batch_size=batch_size, progress=progress, description=name,
                strategy=strategy)
            labels = data[1]
        else:
            features, labels = features_lib.centre_crop_features(
                encoder, data, batch_size=batch_size, image_size=image_size,
                resize_size=resize_size, progress=progress, description=name,
                strategy=strategy)
        if superclass_of is not None:
            accuracies[name] = superclass_top1(head, features, labels, superclass_of)
        else:
            top = linear_head.predict_top_k(head, features, 1)
            accuracies[name] = results.top_k_accuracy(top, labels, 1)
    metrics = dict(accuracies)
    if "mixed_same" in accuracies and "mixed_rand" in accuracies:
        metrics["bg_gap"] = bg_gap(accuracies)
    if "mixed_same_grey" in accuracies and "mixed_rand_grey" in accuracies:
        metrics["bg_gap_grey"] = accuracies["mixed_same_grey"] - accuracies["mixed_rand_grey"]
    metrics["num_classes"] = int(num_classes)
    return metrics


# --------------------------------------------------------------------------- the protocol
def imagenet9_folders(root: str, split: str = "val") -> dict:
    """{variant: ImageFolder data config} of a Backgrounds Challenge root laid out as published
    (`<root>/<variant>/<split>/<class>/`); variants without a folder are left out."""
    if not root or not os.path.isdir(root):
        raise ValueError(f"--config.imagenet9_root={root!r} is not a directory (the Backgrounds "
                         "Challenge root, holding <variant>/val/<class>/).")
    variants = {name: inputs.data_section(source="image_folder", split="",
                                          data_dir=os.path.join(root, name, split))
                for name in VARIANTS if os.path.isdir(os.path.join(root, name, split))}
    if "original" not in variants:
        raise ValueError(f"{root}/original/{split} is missing.")
    return variants


def run(config, output_dir: str, *, strategy=None, progress: bool = True) -> dict:
    """`relicv2-backgrounds`: accuracy of the config's encoder + head on the five ImageNet-9
    variants (`config.mode`: the published folders, or composed from masks of `config.data`) and
    BG-gap; writes `backgrounds.json` to `output_dir`."""
    if config.mode not in MODES or config.head not in HEADS:
        raise ValueError(f"--config.mode must be one of {MODES} (got {config.mode!r}) and "
                         f"--config.head one of {HEADS} (got {config.head!r}).")
    strategy = strategy or tf.distribute.get_strategy()
    size = dict(image_size=config.image_size, resize_size=config.resize_size)
    if config.mode == "imagenet9":
        folders = imagenet9_folders(config.imagenet9_root, config.imagenet9_split)
        train_data = train_split = None
        if config.head == "train":
            train_root = os.path.join(config.imagenet9_root, "original", "train")
            if not os.path.isdir(train_root):
                raise ValueError(f"{train_root} is missing: head=train needs the original "
                                 "training images (or use --config.head=imagenet).")
            train_data = inputs.data_section(source="image_folder", data_dir=train_root, split="")
            train_split = ""
        num_classes = inputs.resolve_num_classes(config.num_classes, folders["original"], "")
        variants = {name: inputs.labelled_examples(data, "") for name, data in folders.items()}
    else:
        train_data, train_split = config.data, config.train_split
        num_classes = inputs.resolve_num_classes(config.num_classes, config.data,
                                                 config.train_split)
        images, masks, labels = load_masked_examples(
            inputs.labelled_examples(config.data, config.test_split, with_masks=True), **size)
        variants = {name: (composed, labels) for name, composed in
                    make_variants(images, masks, labels, config.seed).items()}
    superclass_of = read_in_to_in9(config.in_to_in9) if config.head == "imagenet" else None
    with strategy.scope():
        encoder = inputs.encoder_from_config(config)
        if config.head == "imagenet":
            head = linear_head.load_head(config.head_path)
    if config.head == "train":
        head, _ = linear.train_linear_head(
            encoder, inputs.labelled_examples(train_data, train_split), num_classes=num_classes,
            augment=False, seed=config.seed, progress=progress, strategy=strategy, **size,
            **config.linear.to_dict())
    metrics = evaluate_variants(encoder, head, variants, num_classes=num_classes,
                                superclass_of=superclass_of, batch_size=config.batch_size,
                                progress=progress, strategy=strategy, **size)
    results.write_result(output_dir, "backgrounds", metrics, config=config)
    return metrics
