"""Handcrafted saliency priors on SLIC superpixels: RBD, MR, DSR and MC (ReLICv2 section 2.2).

ReLICv2 starts its label-free saliency pipeline from the maps of four classical bottom-up
methods, all of which assume that the image boundary is mostly background:

* RBD  - Zhu et al., "Saliency optimization from robust background detection", CVPR 2014:
         boundary connectivity (geodesic) -> background probability, background-weighted
         contrast -> foreground weight, then a least-squares saliency optimisation.
* MR   - Yang et al., "Saliency detection via graph-based manifold ranking", CVPR 2013:
         ranking f = (D - alpha W)^-1 y from each image side as queries, then a second ranking
         from the thresholded first-stage map as foreground queries.
* DSR  - Li et al., "Saliency detection via dense and sparse reconstruction", ICCV 2013:
         reconstruction errors of each region from the boundary templates with a PCA basis
         (dense) and an l1-sparse code (sparse), context propagation over K-means clusters,
         object-biased Gaussian weighting and Bayesian integration of the two maps.
* MC   - Jiang et al., "Saliency detection via absorbing Markov chain", ICCV 2013: boundary
         superpixels are duplicated as absorbing nodes; saliency is the expected absorption
         time of each transient node, y = (I - Q)^-1 1.

All four run on one SLIC segmentation (scikit-image, Lab colour) computed by `superpixels`, with
vectorised numpy / scipy on superpixel-level matrices (a few hundred nodes), never per pixel.
Simplifications against the papers are listed in docs/SALIENCY.md (single scale; MC without the
equilibrium-distribution refinement; RBD/MR/MC parameters from the papers' released settings).
Every function returns float32 [H, W] in [0, 1]; a map with no contrast at all (a single-colour
image) is all zeros.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.cluster.vq
import scipy.sparse
import scipy.sparse.csgraph
import scipy.spatial.distance
import skimage.color
import skimage.segmentation
import skimage.transform
import threadpoolctl

PRIOR_NAMES = ("rbd", "mr", "dsr", "mc")
MIN_SIDE = 32  # smaller images are upsampled to this side, their maps resized back
_EPS = 1e-12


@dataclasses.dataclass
class Superpixels:
    """Superpixel-level description of one image (n superpixels)."""

    labels: np.ndarray  # [H, W] int, values 0..n-1
    lab: np.ndarray  # [n, 3] mean CIE Lab (L in 0..100)
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


# ------------------------------------------------------------------------------ input handling
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


def _minmax(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64)
    low, high = values.min(), values.max()
    if not np.isfinite(high - low) or high - low < 1e-9:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def superpixels(image, n_segments: int = 200, compactness: float = 10.0) -> Superpixels:
    """SLIC in CIE Lab (Achanta et al. 2012) plus mean colours, centroids, adjacency, sides."""
    rgb = as_rgb_uint8(image)
    height, width = rgb.shape[:2]
    lab_image = skimage.color.rgb2lab(rgb)
    labels = skimage.segmentation.slic(
        lab_image, n_segments=n_segments, compactness=compactness, convert2lab=False,
        start_label=0, channel_axis=-1)
    _, labels = np.unique(labels, return_inverse=True)  # contiguous 0..n-1
    labels = labels.reshape(height, width)
    n = int(labels.max()) + 1
    flat = labels.ravel()
    size = np.bincount(flat, minlength=n).astype(np.float64)

    def mean(channel):
        return np.bincount(flat, weights=channel.ravel(), minlength=n) / size

    lab = np.stack([mean(lab_image[..., c]) for c in range(3)], axis=1)
    rgb01 = np.stack([mean(rgb[..., c].astype(np.float64) / 255.0) for c in range(3)], axis=1)
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


def _with_min_side(prior_fn):
    """Runs a superpixel-level prior; tiny images are upsampled first and the map resized back."""

    def run(image, sp: Superpixels | None = None, **kwargs) -> np.ndarray:
        if sp is None:
            rgb = as_rgb_uint8(image)
            height, width = rgb.shape[:2]
            if min(height, width) < MIN_SIDE:
                scale = MIN_SIDE / min(height, width)
                big = skimage.transform.resize(
                    rgb, (int(np.ceil(height * scale)), int(np.ceil(width * scale))), order=1,
                    preserve_range=True, anti_aliasing=False).round().astype(np.uint8)
                small = run(big, **kwargs)
                out = skimage.transform.resize(small, (height, width), order=1,
                                               anti_aliasing=True)
                return np.clip(out, 0, 1).astype(np.float32)
            sp = superpixels(rgb)
        if sp.n < 2 or np.ptp(sp.lab, axis=0).max() < 1e-3:  # nothing stands out
            return np.zeros(sp.labels.shape, np.float32)
        return sp.to_pixels(np.clip(prior_fn(sp, **kwargs), 0.0, 1.0))

    run.__name__ = prior_fn.__name__
    run.__doc__ = prior_fn.__doc__
    return run


def _two_ring(adjacency: np.ndarray) -> np.ndarray:
    """Neighbours and neighbours of neighbours (the MR / MC graph)."""
    a = adjacency.astype(np.float32)
    ring = (a + a @ a) > 0
    np.fill_diagonal(ring, False)
    return ring


def _colour_affinity(sp: Superpixels, edges: np.ndarray, theta: float) -> np.ndarray:
    """w_ij = exp(-theta * d_ij) on edges, d = Lab distance min-max normalised over the edges
    (the released MR / MC code's `makeweights`, i.e. sigma^2 = 1 / theta = 0.1)."""
    dist = scipy.spatial.distance.cdist(sp.lab, sp.lab)
    values = dist[edges]
    if values.size and values.max() - values.min() > 1e-9:
        values = (values - values.min()) / (values.max() - values.min())
    else:
        values = np.zeros_like(values)
    weights = np.zeros_like(dist)
    weights[edges] = np.exp(-theta * values)
    return weights


# ------------------------------------------------------------------------------ RBD
def _rbd(sp: Superpixels, sigma_clr: float = 10.0, sigma_bndcon: float = 1.0,
         sigma_spa: float = 0.25, mu: float = 0.1) -> np.ndarray:
    """Robust Background Detection (Zhu et al. 2014, eqs. 1-9).

    Geodesic distance d_geo on the adjacency graph (plus links between all boundary superpixels,
    as in the authors' code) weighted by Lab distance minus a clip value (the mean distance of
    each superpixel to its most similar neighbour); span area A(p) = sum_i exp(-d_geo^2 /
    2 sigma_clr^2), boundary length L(p) = the same sum over boundary superpixels; BndCon =
    L / sqrt(A); w_bg = 1 - exp(-BndCon^2 / 2 sigma_bndcon^2); wCtr(p) = sum_i d_app(p, i)
    w_spa(p, i) w_bg(i); saliency s minimises sum w_bg s^2 + sum w_fg (s - 1)^2 +
    sum_adjacent w_ij (s_i - s_j)^2 with w_fg = wCtr, w_ij = exp(-d_app^2 / 2 sigma_clr^2) + mu.
    """
    d_app = scipy.spatial.distance.cdist(sp.lab, sp.lab)
    boundary = sp.boundary
    links = sp.adjacency | (boundary[:, None] & boundary[None, :])
    np.fill_diagonal(links, False)
    # As in the authors' code, edge costs below the typical nearest-neighbour colour distance
    # are clipped to zero, so fine texture does not accumulate into a long geodesic path.
    neighbour = np.where(sp.adjacency, d_app, np.inf).min(axis=1)
    clip = neighbour[np.isfinite(neighbour)].mean() if np.isfinite(neighbour).any() else 0.0
    cost = np.maximum(d_app - clip, 0.0) + 1e-6  # + 1e-6: a stored 0 would mean "no edge"
    graph = scipy.sparse.csr_matrix(np.where(links, cost, 0.0))
    d_geo = scipy.sparse.csgraph.shortest_path(graph, method="D", directed=False)
    d_geo[~np.isfinite(d_geo)] = d_geo[np.isfinite(d_geo)].max() * 10
    similarity = np.exp(-d_geo ** 2 / (2 * sigma_clr ** 2))
    area = similarity.sum(axis=1)
    length = similarity[:, boundary].sum(axis=1)
    bndcon = length / np.sqrt(area)
    w_bg = 1.0 - np.exp(-bndcon ** 2 / (2 * sigma_bndcon ** 2))
    d_spa = scipy.spatial.distance.cdist(sp.xy, sp.xy)
    w_spa = np.exp(-d_spa ** 2 / (2 * sigma_spa ** 2))
    w_ctr = (d_app * w_spa * w_bg[None, :]).sum(axis=1)
    w_fg = _minmax(w_ctr)
    smooth = np.where(sp.adjacency, np.exp(-d_app ** 2 / (2 * sigma_clr ** 2)) + mu, 0.0)
    laplacian = np.diag(smooth.sum(axis=1)) - smooth
    system = np.diag(w_bg + w_fg) + laplacian
    saliency = np.linalg.solve(system + 1e-9 * np.eye(sp.n), w_fg)
    return _minmax(saliency)


# ------------------------------------------------------------------------------ MR
def _ranking_matrix(sp: Superpixels, alpha: float, theta: float) -> np.ndarray:
    edges = _two_ring(sp.adjacency)
    boundary = sp.boundary
    edges |= boundary[:, None] & boundary[None, :]  # closed-loop graph over the image border
    np.fill_diagonal(edges, False)
    weights = _colour_affinity(sp, edges, theta)
    degree = weights.sum(axis=1)
    ranking = np.linalg.inv(np.diag(degree) - alpha * weights + 1e-9 * np.eye(sp.n))
    np.fill_diagonal(ranking, 0.0)  # as the released code: a node does not rank itself
    return ranking


def _mr(sp: Superpixels, alpha: float = 0.99, theta: float = 10.0) -> np.ndarray:
    """Graph-based Manifold Ranking (Yang et al. 2013, eqs. 3-6).

    Stage 1: for each side, rank all nodes against that side's superpixels as queries,
    S_side = 1 - normalised(f); S_bq = product of the four. Stage 2: binarise S_bq at its mean
    and rank against those foreground queries: S_fq = normalised(f).
    """
    ranking = _ranking_matrix(sp, alpha, theta)
    queries = np.stack([sp.sides[k] for k in ("top", "bottom", "left", "right")], 1)
    scores = ranking @ queries.astype(np.float64)  # [n, 4]
    stage1 = np.prod([1.0 - _minmax(scores[:, k]) for k in range(4)], axis=0)
    foreground = (stage1 >= stage1.mean()).astype(np.float64)
    if foreground.sum() == 0 or np.ptp(stage1) < 1e-9:
        return np.zeros(sp.n)
    return _minmax(ranking @ foreground)


# ------------------------------------------------------------------------------ MC
def _mc(sp: Superpixels, theta: float = 10.0) -> np.ndarray:
    """Absorbing Markov chain (Jiang et al. 2013, eqs. 1-7).

    Transient nodes: all n superpixels on the two-ring graph; absorbing nodes: copies of the
    boundary superpixels, each linked to the neighbours of its original (and to the original
    with weight exp(0) = 1). With P = D^-1 A in canonical form, Q the transient block, the
    absorbed time is y = (I - Q)^-1 1; saliency = normalised y.
    """
    edges = _two_ring(sp.adjacency)
    weights = _colour_affinity(sp, edges, theta)
    boundary = np.flatnonzero(sp.boundary)
    to_absorbing = weights[:, boundary].copy()
    to_absorbing[boundary, np.arange(len(boundary))] = 1.0
    degree = weights.sum(axis=1) + to_absorbing.sum(axis=1)
    transient = weights / degree[:, None]
    absorbed_time = np.linalg.solve(np.eye(sp.n) - transient + 1e-12 * np.eye(sp.n),
                                    np.ones(sp.n))
    return _minmax(absorbed_time)


# ------------------------------------------------------------------------------ DSR
def _region_features(sp: Superpixels) -> np.ndarray:
    """[x, y, L, a, b, R, G, B] per region, each roughly in [0, 1] (DSR section 3)."""
    lab = (sp.lab + np.array([0.0, 128.0, 128.0])) / np.array([100.0, 255.0, 255.0])
    return np.concatenate([sp.xy, lab, sp.rgb], axis=1)


def _sparse_codes(templates: np.ndarray, features: np.ndarray, lam: float,
                  iterations: int) -> np.ndarray:
    """min_a ||x - T^T a||^2 + lam ||a||_1 for every x at once (ISTA, step 1 / Lipschitz)."""
    gram = templates @ templates.T  # [r, r]
    lipschitz = 2 * max(np.linalg.eigvalsh(gram).max(), 1e-9)
    correlation = templates @ features.T  # [r, n]
    codes = np.zeros_like(correlation)
    step = 1.0 / lipschitz
    for _ in range(iterations):
        grad = 2 * (gram @ codes - correlation)
        codes = codes - step * grad
        codes = np.sign(codes) * np.maximum(np.abs(codes) - lam * step, 0.0)
    return codes.T  # [n, r]


def _bayes_integration(prior: np.ndarray, observed: np.ndarray, weights: np.ndarray,
                       bins: int = 20) -> np.ndarray:
    """Posterior p(F | observed) with `prior` as the prior map (DSR eq. 14): foreground F is
    where prior >= its mean, likelihoods are pixel-weighted histograms of `observed`."""
    foreground = prior >= prior.mean()
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(observed, edges) - 1, 0, bins - 1)
    hist_f = np.bincount(index[foreground], weights[foreground], bins)
    hist_b = np.bincount(index[~foreground], weights[~foreground], bins)
    like_f = hist_f[index] / max(hist_f.sum(), _EPS)
    like_b = hist_b[index] / max(hist_b.sum(), _EPS)
    numerator = prior * like_f
    return numerator / np.maximum(numerator + (1 - prior) * like_b, _EPS)


def _dsr(sp: Superpixels, energy: float = 0.95, lam: float = 0.01, ista_iterations: int = 100,
         num_clusters: int = 8, tau: float = 0.5, sigma_x: float = 0.25, seed: int = 0,
         ) -> np.ndarray:
    """Dense and Sparse Reconstruction (Li et al. 2013, sections 3-5).

    Background templates B = features of the boundary regions. Dense error: residual of
    x - mean(B) outside the PCA subspace of B keeping `energy` of its variance. Sparse error:
    residual of the l1 code of x over B (lambda = 0.01). Each error is propagated within
    K-means clusters of the features (e~_i = tau e_i + (1 - tau) sum_j w_ij e_j, w from the
    feature distance), weighted by an object-biased Gaussian centred at the error-weighted
    centroid, and the two maps are fused by Bayesian integration S_B(S_d, S_s) + S_B(S_s, S_d).
    """
    features = _region_features(sp)
    templates = features[sp.boundary]
    # dense: PCA of the background templates
    mean = templates.mean(axis=0)
    centred = templates - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular ** 2
    if variance.sum() < 1e-12:
        basis = np.zeros((0, features.shape[1]))
    else:
        keep = int(np.searchsorted(np.cumsum(variance) / variance.sum(), energy) + 1)
        basis = vt[:keep]
    residual = (features - mean) - ((features - mean) @ basis.T) @ basis
    dense = (residual ** 2).sum(axis=1)
    # sparse: l1 codes over the templates
    codes = _sparse_codes(templates, features, lam, ista_iterations)
    sparse = ((features - codes @ templates) ** 2).sum(axis=1)

    # context-based propagation within K-means clusters of the features
    k = int(min(num_clusters, sp.n))
    rng = np.random.default_rng(seed)
    _, assignment = scipy.cluster.vq.kmeans2(features, k, minit="++", seed=rng)
    same_cluster = assignment[:, None] == assignment[None, :]
    np.fill_diagonal(same_cluster, False)
    feature_dist = scipy.spatial.distance.cdist(features, features, "sqeuclidean")
    context = np.where(same_cluster, np.exp(-feature_dist / (2 * features.var(0).sum() + _EPS)),
                       0.0)
    norm = context.sum(axis=1, keepdims=True)
    context = np.divide(context, norm, out=np.zeros_like(context), where=norm > 0)
    has_context = norm[:, 0] > 0

    def propagate(error):
        error = _minmax(error)
        mixed = tau * error + (1 - tau) * context @ error
        return np.where(has_context, mixed, error)

    def object_bias(error):
        weights = error * sp.size
        if weights.sum() < _EPS:
            return error
        centre = (sp.xy * weights[:, None]).sum(0) / weights.sum()
        gauss = np.exp(-((sp.xy - centre) ** 2).sum(1) / (2 * sigma_x ** 2))
        return _minmax(error * gauss)

    dense_map = object_bias(propagate(dense))
    sparse_map = object_bias(propagate(sparse))
    fused = (_bayes_integration(dense_map, sparse_map, sp.size)
             + _bayes_integration(sparse_map, dense_map, sp.size))
    return _minmax(fused)


# ------------------------------------------------------------------------------ public API
rbd = _with_min_side(_rbd)
mr = _with_min_side(_mr)
dsr = _with_min_side(_dsr)
mc = _with_min_side(_mc)
PRIORS = {"rbd": rbd, "mr": mr, "dsr": dsr, "mc": mc}


def all_priors(image, names=PRIOR_NAMES, n_segments: int = 200,
               compactness: float = 10.0) -> dict:
    """{name: float32 [H, W] map in [0, 1]} for the requested priors, sharing one SLIC."""
    unknown = set(names) - set(PRIORS)
    if unknown:
        raise ValueError(f"unknown saliency priors {sorted(unknown)}; choose from {PRIOR_NAMES}.")
    rgb = as_rgb_uint8(image)
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        return {name: PRIORS[name](rgb) for name in names}
    sp = superpixels(rgb, n_segments=n_segments, compactness=compactness)
    return {name: PRIORS[name](rgb, sp=sp) for name in names}


def _priors_as_uint8(args):
    image, names, n_segments, compactness = args
    maps = all_priors(image, names, n_segments, compactness)
    return {k: np.round(v * 255).astype(np.uint8) for k, v in maps.items()}


_BLAS_LIMIT = []


def _single_threaded_blas():
    """The matrices here are a few hundred wide: multi-threaded BLAS only spins (8x the CPU
    time for the same result on 2 cores), so each worker runs single-threaded."""
    _BLAS_LIMIT.append(threadpoolctl.threadpool_limits(limits=1))


def priors_for_images(images, names=PRIOR_NAMES, n_segments: int = 200,
                      compactness: float = 10.0, num_workers: int = 1,
                      progress: bool = True) -> dict:
    """{name: uint8 [N, H, W] maps (0-255)} for equally sized images [N, H, W, 3], optionally in
    `num_workers` processes (spawned, so no TensorFlow state is forked), with a progress bar."""
    import tqdm

    jobs = [(image, tuple(names), n_segments, compactness) for image in images]
    if num_workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(
                num_workers, initializer=_single_threaded_blas) as pool:
            results = list(tqdm.tqdm(pool.imap(_priors_as_uint8, jobs, chunksize=4),
                                     total=len(jobs), desc="priors", disable=not progress))
    else:
        with threadpoolctl.threadpool_limits(limits=1):
            results = [_priors_as_uint8(job) for job in
                       tqdm.tqdm(jobs, desc="priors", disable=not progress)]
    return {name: np.stack([r[name] for r in results]) for name in names}
