"""The saliency development set (../shared/data/saliency_dev) and a content-free baseline map.

Layout of every folder: `manifest.csv` (id, image, mask, ...), `images/<id>.jpg`,
`masks/<id>.png` (8-bit, 0 = background, 255 = foreground). DAVIS ids are `<video>_<frame>`;
frames of one video are correlated, so comparisons there are made per video.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np
from PIL import Image

FOLDERS = ("davis2016_val_every10", "salbenchmark_set1", "salbenchmark_set2")
CENTRE_SIGMA = 0.25  # centre-Gaussian baseline: std as a fraction of the image height / width


@dataclasses.dataclass
class Example:
    id: str
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # bool [H, W]
    group: str  # independent unit: the video for DAVIS, the image itself otherwise


def group_of(folder: str, example_id: str) -> str:
    return example_id.rsplit("_", 1)[0] if folder.startswith("davis") else example_id


def load_folder(root: str, limit: int = 0) -> list:
    """[Example] of one dev-set folder in manifest order (the first `limit` when > 0)."""
    manifest = os.path.join(root, "manifest.csv")
    if not os.path.exists(manifest):
        raise FileNotFoundError(f"{manifest} not found: pass a folder of "
                                "../shared/data/saliency_dev (one of {FOLDERS}).")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    if limit > 0:
        rows = rows[:limit]
    folder = os.path.basename(os.path.normpath(root))
    examples = []
    for row in rows:
        image = np.asarray(Image.open(os.path.join(root, row["image"])).convert("RGB"))
        mask = np.asarray(Image.open(os.path.join(root, row["mask"])).convert("L")) > 127
        examples.append(Example(row["id"], image, mask, group_of(folder, row["id"])))
    return examples


def centre_gaussian(height: int, width: int, sigma: float = CENTRE_SIGMA) -> np.ndarray:
    """exp(-(dy^2 + dx^2) / 2 sigma^2) with dy, dx the offsets from the image centre as fractions
    of the height / width: a map that knows nothing about the image (float32 [H, W], peak 1)."""
    dy = (np.arange(height) + 0.5) / height - 0.5
    dx = (np.arange(width) + 0.5) / width - 0.5
    return np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2 * sigma ** 2)).astype(np.float32)
