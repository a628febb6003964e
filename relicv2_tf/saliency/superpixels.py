"""SLIC superpixels and the superpixel graphs shared by the four handcrafted priors.

One segmentation per image (Achanta et al., "SLIC superpixels", TPAMI 2012; scikit-image, CIE
Lab) summarised as mean colours, centroids, sizes, adjacency and the superpixels on each image
side; the priors work on these n x n matrices (n ~ 200), never per pixel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.spatial.distance
import skimage.color
import skimage.segmentation

N_SEGMENTS = 200  # MR / RBD / MC papers: about 200 superpixels
COMPACTNESS = 20.0  # the released MR, RBD and DSR (200-superpixel scale) code all use 20


@dataclasses.dataclass
class Superpixels:
    """Superpixel-level description of one image (n superpixels)."""

    labels: np.ndarray  # [H, W] int, values 0..n-1
    lab: np.ndarray  # [n, 3] CIE Lab of the mean RGB colour (L in 0..100)
    rgb: np.ndarray  # [n, 3] mean RGB in [0, 1]
    xy: np.ndarray  # [n, 2] centroid (row / H, col / W) in [0, 1]
    size: np.ndarray  # [n] pixel counts
    adjacency: np.ndarray  # [n, n] bool, symmetric, False on the diagonal
    sides: dict  # top / bottom / left / right -> [n] bool (superpixel touches that side)

    @property
    def n(self) -> int:
        return len(self.size)

    @property
    def boundary(self) -> np.ndarray:
        return self.sides["top"] | self.sides["bottom"] | self.sides["left"] | self.sides["right"]

    def to_pixels(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, np.float32)[self.labels]


def as_rgb_uint8(image) -> np.ndarray:
    """uint8 RGB [H, W, 3] from uint8/float-in-[0,1]/bool images, greyscale [H, W] or [H, W, 1],
    or RGBA; anything else raises ValueError naming what was received."""
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError(f"saliency prior: empty image of shape {image.shape}.")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(
            f"saliency prior: expected an RGB image [H, W, 3] (or greyscale [H, W], RGBA), "
            f"got shape {image.shape}.")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 1:
            raise ValueError(
                "saliency prior: float images must be finite and in [0, 1]; convert with "
                "np.clip(image, 0, 1) or pass uint8.")
        return np.round(image * 255).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        if image.min() < 0 or image.max() > 255:
            raise ValueError(
                f"saliency prior: integer image values must be in 0..255, got "
                f"{image.min()}..{image.max()} ({image.dtype}); rescale to uint8.")
        return image.astype(np.uint8)
    raise ValueError(f"saliency prior: unsupported image dtype {image.dtype}.")


def minmax(values: np.ndarray) -> np.ndarray:
    """Rescaled to [0, 1]; all zeros when the values are (numerically) constant."""
    values = np.asarray(values, np.float64)
    low, high = values.min(), values.max()
    if not np.isfinite(high - low) or high - low < 1e-9:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def superpixels(image, n_segments: int = N_SEGMENTS,
                compactness: float = COMPACTNESS) -> Superpixels:
    """SLIC in CIE Lab plus mean colours, centroids, adjacency and image sides.

    SLIC gets the RGB image and converts it to Lab itself: scikit-image min-max rescales
    whatever array it is given before clustering, so a Lab array passed in would be squashed to
    [0, 1] and `compactness` (calibrated for Lab units) would swamp the colour term - a regular
    grid instead of superpixels. The Lab colour of a superpixel is that of its mean RGB, as in
    the released MR / RBD code (n conversions instead of H x W)."""
    rgb = as_rgb_uint8(image)
    height, width = rgb.shape[:2]
    labels = skimage.segmentation.slic(
        rgb, n_segments=n_segments, compactness=compactness, convert2lab=True,
        start_label=0, channel_axis=-1)
    _, labels = np.unique(labels, return_inverse=True)  # contiguous 0..n-1
    labels = labels.reshape(height, width)
    n = int(labels.max()) + 1
    flat = labels.ravel()
    size = np.bincount(flat, minlength=n).astype(np.float64)

    def mean(channel):
        return np.bincount(flat, weights=channel.ravel(), minlength=n) / size

    rgb01 = np.stack([mean(rgb[..., c].astype(np.float64) / 255.0) for c in range(3)], axis=1)
    lab = skimage.color.rgb2lab(rgb01[None])[0]
    rows, cols = np.mgrid[0:height, 0:width]
    xy = np.stack([mean((rows + 0.5) / height), mean((cols + 0.5) / width)], axis=1)

    adjacency = np.zeros((n, n), bool)
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        differ = a != b
        adjacency[a[differ], b[differ]] = True
    adjacency |= adjacency.T
    np.fill_diagonal(adjacency, False)

    def side(indices):
        mask = np.zeros(n, bool)
        mask[np.unique(indices)] = True
        return mask

    sides = {"top": side(labels[0]), "bottom": side(labels[-1]),
             "left": side(labels[:, 0]), "right": side(labels[:, -1])}
    return Superpixels(labels, lab, rgb01, xy, size, adjacency, sides)


# ------------------------------------------------------------------------------ graphs
def two_ring(adjacency: np.ndarray) -> np.ndarray:
    """Neighbours and neighbours of neighbours, without self-links."""
    a = adjacency.astype(np.float32)
    ring = (a + a @ a) > 0
    np.fill_diagonal(ring, False)
    return ring


def with_boundary_clique(sp: Superpixels, edges: np.ndarray) -> np.ndarray:
    """`edges` plus links between every pair of boundary superpixels (the MR / MC / RBD
    "closed loop" around the image border)."""
    boundary = sp.boundary
    edges = edges | (boundary[:, None] & boundary[None, :])
    np.fill_diagonal(edges, False)
    return edges


def colour_distances(sp: Superpixels) -> np.ndarray:
    """[n, n] Euclidean distances of the mean Lab colours."""
    return scipy.spatial.distance.cdist(sp.lab, sp.lab)


def colour_affinity(sp: Superpixels, edges: np.ndarray, theta: float) -> np.ndarray:
    """w_ij = exp(-theta d_ij) on `edges`, 0 elsewhere; d = Lab distance min-max normalised over
    the edges (the released MR / MC code's `makeweights`: sigma^2 = 1 / theta = 0.1)."""
    distances = colour_distances(sp)
    values = distances[edges]
    if values.size and values.max() - values.min() > 1e-9:
        values = (values - values.min()) / (values.max() - values.min())
    else:
        values = np.zeros_like(values)
    weights = np.zeros_like(distances)
    weights[edges] = np.exp(-theta * values)
    return weights
