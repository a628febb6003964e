"""The demo and test data, as numpy arrays: real digits and procedural shapes, both with masks.

digits     scikit-learn's 1,797 real 8x8 digit scans, upsampled to 32x32 RGB; mask = ink; fixed
           80 / 20 train / test split.
synthetic  procedural discs (label 0) and squares (label 1) of one flat colour on a smooth
           two-colour texture, with their exact masks; a pure function of (index, split).
Both give (images uint8 [N, H, W, 3], masks uint8 [N, H, W, 1] (255 = foreground),
labels int32 [N], ids [N]); `readers` serves them from memory.
"""

from __future__ import annotations

import numpy as np

DIGITS_SIZE = 32  # the 8x8 digits are upsampled to this side
DIGITS_MASK_THRESHOLD = 4.0  # ink when the 0-16 digit value exceeds a quarter of the range
DIGITS_TEST_FRACTION = 0.2  # fixed 80 / 20 train / test split
DIGITS_NUM_CLASSES = 10
SYNTHETIC_DEFAULT_NUM_EXAMPLES = 256  # when data_config.num_examples <= 0
SYNTHETIC_MIN_SIZE = 32
SYNTHETIC_NUM_CLASSES = 2  # disc, square


def digits_arrays(split):
    from sklearn.datasets import load_digits
    digits = load_digits()
    order = np.random.RandomState(0).permutation(len(digits.target))
    num_test = int(round(len(order) * DIGITS_TEST_FRACTION))
    if split == "train":
        index = order[num_test:]
    elif split in ("test", "validation", "val"):
        index = order[:num_test]
    else:
        raise ValueError(f"digits has splits 'train' and 'test', not {split!r}.")
    index = np.sort(index)
    values = digits.images[index].astype(np.float32)  # [N, 8, 8] in 0..16
    scale = DIGITS_SIZE // 8
    values = np.kron(values, np.ones((1, scale, scale), np.float32))  # nearest upsampling
    # A light 3x3 box blur softens the 4x4 blocks into strokes; the mask uses the same values.
    padded = np.pad(values, ((0, 0), (1, 1), (1, 1)), mode="edge")
    values = sum(padded[:, i:i + DIGITS_SIZE, j:j + DIGITS_SIZE]
                 for i in range(3) for j in range(3)) / 9.0
    images = np.repeat(np.round(values * 255.0 / 16.0).astype(np.uint8)[..., None], 3, axis=-1)
    masks = ((values > DIGITS_MASK_THRESHOLD).astype(np.uint8) * 255)[..., None]
    labels = digits.target[index].astype(np.int32)
    ids = np.array([f"digits/{i:04d}" for i in index])
    return images, masks, labels, ids


def synthetic_count(num_examples: int) -> int:
    """Examples of the synthetic source for `data.num_examples` (<= 0: the default)."""
    return num_examples if num_examples > 0 else SYNTHETIC_DEFAULT_NUM_EXAMPLES


def synthetic_example(index: int, size: int, split_offset: int = 0):
    """One procedural example: a disc (label 0) or square (label 1) of a random colour over a
    smooth two-colour texture. Returns (image uint8 [size, size, 3], mask uint8 [size, size, 1])
    and the label; fully determined by (index, split_offset)."""
    rng = np.random.RandomState(1_000_003 * split_offset + index)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    colours = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    freq = rng.uniform(2, 6, size=2)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    weight = 0.5 + 0.5 * np.sin(2 * np.pi * freq[0] * xx + phase[0]) * np.cos(
        2 * np.pi * freq[1] * yy + phase[1])
    background = weight[..., None] * colours[0] + (1 - weight[..., None]) * colours[1]
    background += rng.normal(0, 8, size=background.shape)
    label = int(rng.randint(2))
    radius = rng.uniform(0.18, 0.32)
    cy, cx = rng.uniform(radius, 1 - radius, size=2)
    if label == 0:
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    else:
        inside = (np.abs(yy - cy) <= radius * 0.9) & (np.abs(xx - cx) <= radius * 0.9)
    colour = rng.uniform(0, 255, size=3)
    image = np.where(inside[..., None], colour, background)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    mask = (inside.astype(np.uint8) * 255)[..., None]
    return image, mask, label


def synthetic_arrays(count: int, image_size: int, split: str):
    """`count` synthetic examples of side max(image_size, SYNTHETIC_MIN_SIZE); the train split
    and every other split are disjoint."""
    size = max(int(image_size), SYNTHETIC_MIN_SIZE)
    split_offset = 0 if split == "train" else 1
    examples = [synthetic_example(i, size, split_offset) for i in range(count)]
    images = np.stack([e[0] for e in examples])
    masks = np.stack([e[1] for e in examples])
    labels = np.array([e[2] for e in examples], np.int32)
    ids = np.array([f"synthetic/{split}/{i:06d}" for i in range(count)])
    return images, masks, labels, ids
