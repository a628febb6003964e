"""Blur as linear maps: 1-D kernels (Gaussian taps, Pillow's extended box filter) folded with
their border rule into an [n, n] matrix, applied to an image [H, W, C] as two GEMMs.

Deterministic functions of sigma; the random op that draws sigma and the coin (F.1 step 5) is
`augment.random_gaussian_blur`. Variants (docs/DATA.md): a truncated Gaussian with a kernel ~ 10 %
of the side (BYOL, SimCLR) or of fixed size (SwAV, OpenCV), or PIL's three-pass extended box
filter (MoCo-v2); borders padded with zeros (BYOL, SimCLR: 'SAME' convolutions), reflected
(OpenCV's default; ReLICv2 here) or edge-replicated (PIL).
"""

from __future__ import annotations

import math

import tensorflow as tf


def blur_kernel_radius(side: int, kernel_fraction: float = 0.1) -> int:
    """BYOL's rule: kernel ~ side * fraction, made odd: radius int(side * fraction / 2).

    224 -> 23 taps, 96 -> 9, 32 -> 3 (SimCLR's int(side // 10 / 2) is the same number). At least
    1 (3 taps) so the blur is not a no-op below 20 px, where BYOL's rule gives a single tap.
    """
    return max(1, int(side * kernel_fraction / 2))


def gaussian_taps(sigma, radius: int):
    """exp(-t^2 / 2 sigma^2) / Z for t = -radius..radius (sum 1)."""
    sigma = tf.cast(sigma, tf.float32)
    t = tf.range(-radius, radius + 1, dtype=tf.float32)
    taps = tf.exp(-tf.square(t) / (2.0 * tf.square(sigma)))
    return taps / tf.reduce_sum(taps)


def pil_box_radius(sigma, passes: int = 3):
    """Pillow's `_gaussian_blur_radius` (BoxBlur.c): the fractional box radius l + a whose
    `passes`-fold box filter has variance sigma^2 (Gwosdek et al. 2011)."""
    sigma2 = tf.square(tf.cast(sigma, tf.float32)) / passes
    length = tf.sqrt(12.0 * sigma2 + 1.0)
    whole = tf.floor((length - 1.0) / 2.0)
    fraction = ((2.0 * whole + 1.0) * (whole * (whole + 1.0) - 3.0 * sigma2)
                / (6.0 * (sigma2 - tf.square(whole + 1.0))))
    return whole + fraction


def pil_box_taps(sigma, max_radius: int, passes: int = 3):
    """One pass of Pillow's extended box filter (`ImagingHorizontalBoxBlur`) as taps
    t = -max_radius..max_radius: 1 / (2 r + 1) inside the integer radius int(r), the remainder
    split between the two taps at +-(int(r) + 1), zero beyond."""
    radius = pil_box_radius(sigma, passes)
    whole = tf.floor(radius)
    inner = 1.0 / (2.0 * radius + 1.0)
    outer = (1.0 - (2.0 * whole + 1.0) * inner) / 2.0
    t = tf.abs(tf.range(-max_radius, max_radius + 1, dtype=tf.float32))
    return tf.where(t <= whole, inner, tf.where(t == whole + 1.0, outer, 0.0))


def blur_matrix_from_taps(taps, radius: int, n: int, padding: str = "reflect"):
    """[n, n] matrix B such that B @ x is the 1-D convolution of x (first axis) with `taps`
    (offsets -radius..radius), the border `padding` folded in:
    "zeros": taps falling outside are dropped (a 'SAME' convolution of a zero-padded signal);
    "reflect": index -p -> p, n - 1 + p -> n - 1 - p (tf.pad REFLECT; needs radius < n);
    "edge": indices clamped to [0, n - 1] (Pillow's box blur).
    """
    taps = tf.cast(taps, tf.float32)
    i = tf.range(n)[:, None]
    j = tf.range(n)[None, :]

    def tap(offset):
        inside = tf.abs(offset) <= radius
        return tf.where(inside, tf.gather(taps, tf.clip_by_value(offset + radius, 0, 2 * radius)),
                        0.0)

    matrix = tap(j - i)
    if padding == "reflect":
        matrix += (tf.where(j >= 1, tap(-j - i), 0.0)
                   + tf.where(j <= n - 2, tap(2 * (n - 1) - j - i), 0.0))
    elif padding == "edge":
        # Column 0 collects the taps landing left of the signal (offsets <= -i - 1), column
        # n - 1 those landing right of it (offsets >= n - i).
        cumulative = tf.concat([[0.0], tf.cumsum(taps)], axis=0)  # cumulative[k] = sum taps[:k]
        rows = tf.range(n)
        below = tf.gather(cumulative, tf.clip_by_value(radius - rows, 0, 2 * radius + 1))
        above = cumulative[-1] - tf.gather(cumulative,
                                           tf.clip_by_value(n - rows + radius, 0, 2 * radius + 1))
        matrix += (tf.one_hot(tf.zeros([n], tf.int32), n) * below[:, None]
                   + tf.one_hot(tf.fill([n], n - 1), n) * above[:, None])
    return matrix


def separable_blur(image, column_matrix, row_matrix):
    """column_matrix @ image along the height, then row_matrix along the width, of [H, W, C].

    Each is one GEMM on the image viewed as [H, W * C] (rows after a transpose): on CPU faster
    than an einsum or a separable depthwise convolution (docs/DATA.md), and simpler to check.
    """
    height, width, channels = (int(d) for d in image.shape)
    columns = tf.matmul(column_matrix, tf.reshape(image, [height, width * channels]))
    rows_first = tf.transpose(tf.reshape(columns, [height, width, channels]), [1, 0, 2])
    rows = tf.matmul(row_matrix, tf.reshape(rows_first, [width, height * channels]))
    return tf.transpose(tf.reshape(rows, [width, height, channels]), [1, 0, 2])


def gaussian_blur(image, sigma, radius: int, padding: str = "reflect"):
    """Separable Gaussian blur of [H, W, C]: `radius` taps each side, `padding` at the borders
    (BYOL and SimCLR pad with zeros, which darkens the borders; OpenCV reflects)."""
    image = tf.convert_to_tensor(image)
    height, width = int(image.shape[0]), int(image.shape[1])
    if padding == "reflect":
        radius = min(radius, height - 1, width - 1)  # one reflection must suffice
    taps = gaussian_taps(sigma, radius)
    return separable_blur(image, blur_matrix_from_taps(taps, radius, height, padding),
                          blur_matrix_from_taps(taps, radius, width, padding))


def pil_box_blur(image, sigma, max_sigma: float = 2.0, passes: int = 3):
    """PIL's ImageFilter.GaussianBlur(radius=sigma) in float: `passes` extended box filters per
    axis with edge replication (Pillow's uint8 rounding after each pass is not reproduced).
    `max_sigma` bounds the static support of one pass."""
    image = tf.convert_to_tensor(image)
    height, width = int(image.shape[0]), int(image.shape[1])
    max_radius = int(math.ceil(max_sigma)) + 1  # int(l + a) <= sigma, plus the far taps
    taps = pil_box_taps(sigma, max_radius, passes)

    def passes_matrix(n):
        one = blur_matrix_from_taps(taps, max_radius, n, "edge")
        matrix = one
        for _ in range(passes - 1):
            matrix = tf.matmul(one, matrix)
        return matrix

    return separable_blur(image, passes_matrix(height), passes_matrix(width))
