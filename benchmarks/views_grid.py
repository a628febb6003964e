"""Figure: the views `relicv2_tf.data.views` makes from a few Imagenette images.

Per image (one row): the source, its mask, the 4 large (224 px) and 2 small (96 px) views, then
the first large view again with saliency masking, BG_RM, BG_Random, and BG_Swaps' positive (second
large view) and hard negative, each forced to probability 1 so that it shows. The mask is a
STAND-IN, a centred ellipse covering ~40 % of the image (the caption says so), so the figure needs
no mask set.

    python benchmarks/views_grid.py [--out docs/figures/views_grid.png]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from relicv2_tf import config as config_lib  # noqa: E402
from relicv2_tf.data import normalize, readers, views  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from experiments.configs import common  # noqa: E402  (no TensorFlow)

DEFAULT_DATA = pathlib.Path(common.data_path("imagenette"))
FILES = ("val/n01440764", "val/n02102040", "val/n03394916")  # tench, springer, French horn


def stand_in_mask(height, width):
    """Centred ellipse, semi-axes 0.36 H and 0.36 W: a clearly-labelled stand-in saliency mask."""
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy - height / 2) / (0.36 * height)) ** 2 + ((xx - width / 2) / (0.36 * width)) ** 2
    return ((inside <= 1).astype(np.uint8) * 255)[..., None]


def load_example(path, label):
    image = readers.decode_image(tf.io.read_file(str(path)))
    mask = stand_in_mask(int(image.shape[0]), int(image.shape[1]))
    return {"image": image, "mask": tf.constant(mask), "label": tf.constant(label),
            "id": tf.constant(path.stem)}


def data_config(**overrides):
    config = config_lib.get_default_config().data
    config.mask_apply_prob = 0.0
    config.mask_min_fraction = 0.05
    for key, value in overrides.items():
        config[key] = value
    return config


def to_rgb(normalised):
    return np.clip(normalize.denormalize_images(normalised).numpy(), 0, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(REPO / "docs" / "figures" / "views_grid.png"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    root = pathlib.Path(args.data_dir)
    paths = [sorted((root / folder).glob("*.JPEG"))[0] for folder in FILES]
    examples = [load_example(p, i) for i, p in enumerate(paths)]
    configs = {
        "plain": data_config(),
        "saliency": data_config(mask_apply_prob=1.0),
        "bg_rm": data_config(bg_rm_prob=1.0),
        "bg_random": data_config(bg_random_prob=1.0),
        "bg_swaps": data_config(bg_swaps_prob=1.0),
    }
    titles = (["source", "mask (stand-in)"] + [f"large {i + 1}" for i in range(4)]
              + [f"small {j + 1}" for j in range(2)]
              + ["large 1 +\nsaliency mask", "large 1 +\nBG_RM", "large 1 +\nBG_Random",
                 "BG_Swaps\npositive (large 2)", "BG_Swaps\nhard negative"])
    figure, axes = plt.subplots(len(examples), len(titles),
                                figsize=(1.25 * len(titles), 1.45 * len(examples)))
    for row, example in enumerate(examples):
        other = examples[(row + 1) % len(examples)]  # "another image" for BG_Random / BG_Swaps
        seed = tf.constant([args.seed, row], tf.int64)
        out = {name: views.make_views(example, seed, config, other)
               for name, config in configs.items()}
        panels = [example["image"].numpy(), example["mask"].numpy()[..., 0]]
        panels += [to_rgb(v) for v in out["plain"]["large"]]
        panels += [to_rgb(v) for v in out["plain"]["small"]]
        panels += [to_rgb(out["saliency"]["large"][0]), to_rgb(out["bg_rm"]["large"][0]),
                   to_rgb(out["bg_random"]["large"][0]), to_rgb(out["bg_swaps"]["large"][1]),
                   to_rgb(out["bg_swaps"]["hard_negative"])]
        for col, panel in enumerate(panels):
            axis = axes[row, col]
            axis.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0,
                        vmax=255 if panel.dtype == np.uint8 else 1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(titles[col], fontsize=7)
    figure.suptitle("ReLICv2 views (Table 16; odd = large 1, 3 and small 1). Masks are a "
                    "STAND-IN centred ellipse: Imagenette has no saliency masks yet. "
                    "Background ops forced to p = 1.", fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=72)
    try:  # a 256-colour palette keeps the PNG well under 400 KB
        from PIL import Image
        Image.open(args.out).convert("RGB").quantize(colors=256).save(args.out, optimize=True)
    except ImportError:
        pass
    print(f"wrote {args.out} ({os.path.getsize(args.out) // 1024} KB)")


if __name__ == "__main__":
    main()
