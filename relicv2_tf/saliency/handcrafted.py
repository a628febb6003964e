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
         time of each transient node, y = (I - Q)^-1 1, re-weighted by the equilibrium
         distribution when the map is undecided.

All four run on one SLIC segmentation (`superpixels.superpixels`) with vectorised numpy / scipy
on superpixel-level matrices (a few hundred nodes), never per pixel. Where a paper leaves a
choice open, the authors' released code decides; what differs from the papers (one SLIC scale
for DSR, ...) is listed in docs/SALIENCY.md. Every function returns float32 [H, W] in [0, 1]; a
map with no contrast at all (a single-colour image) is all zeros.
"""

from __future__ import annotations

import numpy as np
import scipy.cluster.vq
import scipy.sparse
import scipy.sparse.csgraph
import scipy.spatial.distance
import skimage.filters
import skimage.transform
import threadpoolctl

from relicv2_tf.saliency.superpixels import (
    COMPACTNESS,
    N_SEGMENTS,
    Superpixels,
    as_rgb_uint8,
    colour_affinity,
    colour_distances,
    minmax,
    superpixels,
    two_ring,
    with_boundary_clique,
)

PRIOR_NAMES = ("rbd", "mr", "dsr", "mc")
MIN_SIDE = 32  # smaller images are upsampled to this side, their maps resized back
_EPS = 1e-12


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


def _mean_nearest(distances: np.ndarray, links: np.ndarray) -> float:
    """Mean over superpixels of the distance to the closest linked superpixel."""
    nearest = np.where(links, distances, np.inf).min(axis=1)
    return float(nearest[np.isfinite(nearest)].mean()) if np.isfinite(nearest).any() else 0.0


# ------------------------------------------------------------------------------ RBD
def _rbd(sp: Superpixels, sigma_clr: float = 10.0, sigma_bndcon: float = 1.0,
         sigma_spa: float = 0.25, mu: float = 0.1, background_weight: float = 5.0,
         ) -> np.ndarray:
    """Robust Background Detection (Zhu et al. 2014, eqs. 1-9).

    Geodesic distance d_geo on the adjacency graph plus links between all boundary superpixels,
    edge cost = Lab distance minus a clip value; span area A(p) = sum_i exp(-d_geo^2 /
    2 sigma_geo^2), boundary length L(p) = the same sum over boundary superpixels,
    BndCon = L / sqrt(A), w_bg = 1 - exp(-BndCon^2 / 2 sigma_bndcon^2);
    wCtr(p) = sum_i d_app(p, i) w_spa(p, i) w_bg(i) (eq. 8) with
    sigma_spa = 0.25, cleaned by an Otsu threshold; saliency s minimises (eq. 9)
    sum lambda w_bg s^2 + sum wCtr (s - 1)^2 + sum_adjacent w_ij (s_i - s_j)^2,
    w_ij = exp(-d_app^2 / 2 sigma_clr^2) + mu. From the authors' code: the clip value is the
    mean distance to the closest 2-ring neighbour, sigma_geo the typical neighbour distance
    limited to [5, 10], the Otsu cleaning, and lambda = `background_weight` = 5.
    """
    d_app = colour_distances(sp)
    adjacency = sp.adjacency
    boundary = sp.boundary
    nearest = _mean_nearest(d_app, adjacency)
    adjacent = np.sort(d_app[np.triu(adjacency, 1)])[::-1]
    top = adjacent[:max(1, int(round(0.01 * adjacent.size)))].mean() if adjacent.size else 0.0
    clip = _mean_nearest(d_app, two_ring(adjacency))
    sigma_geo = max(min(sigma_clr, 3 * nearest, top / 10), 5.0)
    # Costs below the typical colour step are clipped to zero, so fine texture does not add up
    # into a long geodesic path (+ 1e-9: a stored 0 would mean "no edge").
    links = with_boundary_clique(sp, adjacency)
    cost = np.where(links, np.maximum(d_app - clip, 0.0) + 1e-9, 0.0)
    d_geo = scipy.sparse.csgraph.shortest_path(scipy.sparse.csr_matrix(cost), method="D",
                                               directed=False)
    d_geo[~np.isfinite(d_geo)] = np.inf
    similarity = np.exp(-d_geo ** 2 / (2 * sigma_geo ** 2))
    bndcon = similarity[:, boundary].sum(axis=1) / np.sqrt(similarity.sum(axis=1))
    w_bg = 1.0 - np.exp(-bndcon ** 2 / (2 * sigma_bndcon ** 2))
    d_spa = scipy.spatial.distance.cdist(sp.xy, sp.xy)
    w_ctr = minmax((d_app * np.exp(-d_spa ** 2 / (2 * sigma_spa ** 2))) @ w_bg)
    if np.ptp(w_ctr) > 0:  # the authors' "cleaner foreground cue"
        w_ctr[w_ctr < skimage.filters.threshold_otsu(w_ctr, nbins=256)] = 0.0
    smooth = np.where(adjacency, np.exp(-d_app ** 2 / (2 * sigma_clr ** 2)) + mu, 0.0)
    system = (np.diag(smooth.sum(axis=1)) - smooth
              + np.diag(background_weight * w_bg + w_ctr) + 1e-9 * np.eye(sp.n))
    return minmax(np.linalg.solve(system, w_ctr))


# ------------------------------------------------------------------------------ MR
def _ranking_matrix(sp: Superpixels, alpha: float, theta: float) -> np.ndarray:
    """A = (D - alpha W)^-1 (eq. 3) on the MR graph: the 2-ring of the adjacency closed by a
    loop through all boundary superpixels (the released code takes the 2-ring after closing
    the loop, so a neighbour of one boundary superpixel reaches all of them)."""
    edges = two_ring(with_boundary_clique(sp, sp.adjacency))
    weights = colour_affinity(sp, edges, theta)
    ranking = np.linalg.inv(np.diag(weights.sum(axis=1)) - alpha * weights
                            + 1e-9 * np.eye(sp.n))
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
    stage1 = minmax(np.prod([1.0 - minmax(scores[:, k]) for k in range(4)], axis=0))
    foreground = (stage1 >= stage1.mean()).astype(np.float64)
    if foreground.sum() == 0 or np.ptp(stage1) < 1e-9:
        return np.zeros(sp.n)
    return minmax(ranking @ foreground)


# ------------------------------------------------------------------------------ MC
def _mc(sp: Superpixels, theta: float = 10.0, weight_floor: float = 1e-5,
        undecided_entropy: float = 2.0) -> np.ndarray:
    """Absorbing Markov chain (Jiang et al. 2013; graph construction, saliency measure and the
    equilibrium-distribution optimisation of the method section).

    Transient nodes: all n superpixels, linked to their 2-ring and, along the border, all
    boundary superpixels to each other; w_ij = exp(-theta d_ij) (+ `weight_floor` and a
    self-link of weight 1, as the released code); absorbing nodes: copies of the boundary
    superpixels, each linked as its original. With P = D^-1 A in canonical form and Q the
    transient block, the absorbed time is y = N 1, N = (I - Q)^-1. When y is undecided - the
    code's histogram "entropy" sum_b p_b min(b, 11 - b) over 10 bins of y is >= 2 - the
    long-range smooth background is suppressed by weighting with the inverse equilibrium
    distribution pi_i ∝ d_i of the transient graph: y = N u, u ∝ 1 / pi.
    """
    edges = with_boundary_clique(sp, two_ring(sp.adjacency))
    weights = np.where(edges, colour_affinity(sp, edges, theta) + weight_floor, 0.0)
    np.fill_diagonal(weights, 1.0)
    transient_degree = weights.sum(axis=1)
    degree = transient_degree + weights[:, sp.boundary].sum(axis=1)  # + links to absorbing
    fundamental = np.eye(sp.n) - weights / degree[:, None]  # I - Q
    absorbed_time = minmax(np.linalg.solve(fundamental, np.ones(sp.n)))
    histogram = np.bincount(np.minimum((absorbed_time * 10).astype(int), 9),
                            minlength=10) / sp.n
    entropy = (histogram * np.minimum(np.arange(1, 11), np.arange(10, 0, -1))).sum()
    if entropy < undecided_entropy:
        return absorbed_time
    inverse_equilibrium = transient_degree.sum() / transient_degree
    return minmax(np.linalg.solve(fundamental,
                                  inverse_equilibrium / inverse_equilibrium.sum()))


# ------------------------------------------------------------------------------ DSR
def _region_features(sp: Superpixels) -> np.ndarray:
    """[R, G, B, L, a, b, x, y] per region: RGB in [0, 1], each Lab channel
    min-max normalised over the image (released code), x = column / W, y = row / H."""
    lab = sp.lab - sp.lab.min(axis=0)
    lab = lab / np.where(lab.max(axis=0) > 1e-9, lab.max(axis=0), 1.0)
    return np.concatenate([sp.rgb, lab, sp.xy[:, ::-1]], axis=1)


def _sparse_codes(templates: np.ndarray, features: np.ndarray, lam: float,
                  iterations: int) -> np.ndarray:
    """min_a 0.5 ||x - T^T a||^2 + lam ||a||_1 for every row x at once (ISTA, step 1 / L)."""
    gram = templates @ templates.T  # [r, r]
    lipschitz = max(np.linalg.eigvalsh(gram).max(), 1e-9)
    correlation = templates @ features.T  # [r, n]
    codes = np.zeros_like(correlation)
    for _ in range(iterations):
        codes = codes - (gram @ codes - correlation) / lipschitz
        codes = np.sign(codes) * np.maximum(np.abs(codes) - lam / lipschitz, 0.0)
    return codes.T  # [n, r]


def _unit_rows(values: np.ndarray) -> np.ndarray:
    return values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), _EPS)


def _bayes_integration(prior: np.ndarray, observed: np.ndarray, weights: np.ndarray,
                       bins: int = 60) -> np.ndarray:
    """Posterior p(F | observed) with `prior` as the prior map (DSR's Bayesian integration):
    foreground F is where prior > its mean, the likelihoods are pixel-weighted 60-bin
    histograms of `observed` inside / outside F."""
    foreground = prior > prior.mean()
    index = np.clip((observed * bins).astype(int), 0, bins - 1)
    hist_f = np.bincount(index[foreground], weights[foreground], bins)
    hist_b = np.bincount(index[~foreground], weights[~foreground], bins)
    like_f = hist_f[index] / max(hist_f.sum(), _EPS)
    like_b = hist_b[index] / max(hist_b.sum(), _EPS)
    numerator = prior * like_f
    return minmax(numerator / np.maximum(numerator + (1 - prior) * like_b, _EPS))


def _dsr(sp: Superpixels, energy: float = 0.95, lam: float = 0.01, ista_iterations: int = 100,
         num_clusters: int = 8, tau: float = 0.5, sigma_ratio: float = 0.25, seed: int = 0,
         ) -> np.ndarray:
    """Dense and Sparse Reconstruction (Li et al. 2013): reconstruction errors, context-based
    propagation, object-biased Gaussian refinement and Bayesian integration.

    Background templates B = features of the boundary regions. Dense error: residual of
    x - mean(X) outside the PCA subspace of B (the components reaching `energy` of its
    variance, plus one as in the released code). Sparse error: residual of the l1 code
    (lambda = 0.01) of x over B, rows scaled to unit length as in the released code. Each error
    is propagated within K-means (K = 8) clusters from the largest error down,
    e~_i = (1 - tau) e_i + tau sum_j w_ij e~_j / sum_j w_ij, w_ij = exp(-||x_i - x_j||^2 /
    2 sigma^2) with sigma^2 the mean feature variance; weighted by an object-biased Gaussian
    (sigma = 0.25 of the image sides) centred at the error-weighted centroid; the two maps are
    fused by Bayesian integration S_B(S_d, S_s) + S_B(S_s, S_d). One SLIC scale instead of the
    paper's eight.
    """
    features = _region_features(sp)
    templates = features[sp.boundary]
    centred = templates - templates.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular ** 2
    # The released code keeps one component more than needed to reach `energy` (its counting
    # loop runs one past); that extra direction is part of its published results.
    keep = (min(int(np.searchsorted(np.cumsum(variance) / variance.sum(), energy)) + 2, len(vt))
            if variance.sum() > 1e-12 else 0)
    offsets = features - features.mean(axis=0)
    residual = offsets - (offsets @ vt[:keep].T) @ vt[:keep]
    dense = (residual ** 2).sum(axis=1)
    unit_features, unit_templates = _unit_rows(features), _unit_rows(templates)
    codes = _sparse_codes(unit_templates, unit_features, lam, ista_iterations)
    sparse = ((unit_features - codes @ unit_templates) ** 2).sum(axis=1)

    k = int(min(num_clusters, sp.n))
    _, assignment = scipy.cluster.vq.kmeans2(features, k, minit="++",
                                             seed=np.random.default_rng(seed))
    sigma2 = features.var(axis=0).mean() + _EPS
    context = np.exp(-scipy.spatial.distance.cdist(features, features, "sqeuclidean")
                     / (2 * sigma2))
    context = np.where(assignment[:, None] == assignment[None, :], context, 0.0)
    np.fill_diagonal(context, 0.0)
    context_sum = context.sum(axis=1)

    def propagate(error):
        error = minmax(error)
        for i in np.argsort(error)[::-1]:  # sequential: later regions see updated errors
            if context_sum[i] > 0:
                error[i] = (1 - tau) * error[i] + tau * context[i] @ error / context_sum[i]
        return minmax(error)

    def object_bias(error):
        weights = error * sp.size
        if weights.sum() < _EPS:
            return error
        centre = (sp.xy * weights[:, None]).sum(0) / weights.sum()
        gauss = np.exp(-((sp.xy - centre) ** 2).sum(1) / (2 * sigma_ratio ** 2))
        return minmax(error * gauss)

    dense_map = object_bias(propagate(dense))
    sparse_map = object_bias(propagate(sparse))
    return minmax(_bayes_integration(dense_map, sparse_map, sp.size)
                  + _bayes_integration(sparse_map, dense_map, sp.size))


# ------------------------------------------------------------------------------ public API
rbd = _with_min_side(_rbd)
mr = _with_min_side(_mr)
dsr = _with_min_side(_dsr)
mc = _with_min_side(_mc)
PRIORS = {"rbd": rbd, "mr": mr, "dsr": dsr, "mc": mc}


def all_priors(image, names=PRIOR_NAMES, n_segments: int = N_SEGMENTS,
               compactness: float = COMPACTNESS) -> dict:
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


def priors_for_image_list(images, names=PRIOR_NAMES, n_segments: int = N_SEGMENTS,
                          compactness: float = COMPACTNESS, num_workers: int = 1,
                          progress: bool = True) -> list:
    """[{name: uint8 [H, W] map (0-255)}] for images of any sizes, optionally in `num_workers`
    processes (spawned, so no TensorFlow state is forked), with a progress bar."""
    import tqdm

    jobs = [(image, tuple(names), n_segments, compactness) for image in images]
    if num_workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(
                num_workers, initializer=_single_threaded_blas) as pool:
            return list(tqdm.tqdm(pool.imap(_priors_as_uint8, jobs, chunksize=4),
                                  total=len(jobs), desc="priors", disable=not progress))
    with threadpoolctl.threadpool_limits(limits=1):
        return [_priors_as_uint8(job) for job in
                tqdm.tqdm(jobs, desc="priors", disable=not progress)]


def priors_for_images(images, names=PRIOR_NAMES, n_segments: int = N_SEGMENTS,
                      compactness: float = COMPACTNESS, num_workers: int = 1,
                      progress: bool = True) -> dict:
    """{name: uint8 [N, H, W] maps (0-255)} for equally sized images [N, H, W, 3]."""
    results = priors_for_image_list(images, names, n_segments, compactness, num_workers,
                                    progress)
    return {name: np.stack([r[name] for r in results]) for name in names}


def fused_priors(images, names=PRIOR_NAMES, n_segments: int = N_SEGMENTS,
                 compactness: float = COMPACTNESS, num_workers: int = 1) -> np.ndarray:
    """The pixel-wise mean of the priors' uint8 maps / 255, float32 [N, H, W] in [0, 1], for
    equally sized images [N, H, W, 3]: exactly the `fused` method that
    benchmarks/saliency_quality.py scores (and `refine.fuse` of the unrefined priors), used as
    a mask source by `generate.source = "fused_priors"`."""
    maps = priors_for_images(images, names, n_segments, compactness, num_workers,
                             progress=False)
    return np.mean(np.stack([maps[n].astype(np.float32) / 255.0 for n in names]), axis=0)
