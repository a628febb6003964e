"""The statistics of the Imagenette benchmark page (docs/results/imagenette64.md): paired
comparisons of two cells, over seeds and over images, corrected for multiplicity.

Two kinds of evidence, reported side by side and never mixed:
  * over seeds (`paired_t`): the two cells of a comparison share a seed's initial weights and
    data order, so each seed gives one difference per metric; the Student-t interval of their
    mean says how much the difference varies with the training seed (3 seeds: 2 degrees of
    freedom, wide intervals).
  * over images (`mcnemar`, `paired_bootstrap`): kNN and linear predictions of both cells on the
    same val images (`encode_predictions`, written by experiments/imagenette64_predictions.py);
    they say how much the difference varies with the sample of test images, for the seeds run.
Every p-value on the page belongs to a family corrected with Holm's step-down method (`holm`).

numpy / scipy only (no TensorFlow): the runner imports this module to write the page.
"""

from __future__ import annotations

import base64
import hashlib
import math
import zlib

import numpy as np
from scipy import stats

# The page's metrics (record keys), with their names on the page; the first two have
# per-image predictions (the background metrics are made from composed images, not kept).
METRICS = {"knn": "kNN", "linear": "linear", "bg_gap": "BG-Gap", "only_fg": "Only-FG",
           "mixed_same": "Mixed-Same", "mixed_rand": "Mixed-Rand",
           "bg_gap_grey": "BG-Gap (grey)", "only_fg_grey": "Only-FG (grey)"}
IMAGE_METRICS = ("knn", "linear")


# ------------------------------------------------------------------------ over seeds
def paired_t(differences, confidence: float = 0.95) -> dict:
    """The paired Student-t analysis of per-seed differences d_1..d_n (cell a - cell b).

    mean = sum(d) / n, std = the sample standard deviation (n - 1 in the denominator),
    t = mean / (std / sqrt(n)) with n - 1 degrees of freedom, p = 2 P(T_{n-1} >= |t|) (two-sided),
    interval = mean -/+ t_{n-1, (1 + confidence) / 2} std / sqrt(n) (e.g. Wasserman, All of
    Statistics, 10.5; scipy.stats.ttest_rel on the two cells' values gives the same t, p and
    interval). Returns dict(mean, std, low, high, t, p, n, per_seed); std, low, high, t and p are
    None for fewer than two seeds (no spread to estimate), mean is None for none. When every
    difference is the same (accuracies are multiples of 1 / 3,925, so two seeds can tie), std = 0
    and the t statistic is undefined: low, high, t and p stay None, as for one seed, and the
    row is left out of the Holm family (scipy returns NaN / inf with a warning there; a p of 0
    would claim certainty from a tie).
    """
    d = np.asarray(differences, np.float64).reshape(-1)
    n = int(d.size)
    result = {"mean": float(np.mean(d)) if n else None, "std": None, "low": None, "high": None,
              "t": None, "p": None, "n": n, "per_seed": d.tolist()}
    if n < 2:
        return result
    if np.all(d == d[0]):  # exactly: np.std of equal floats can be a rounding error, not 0
        result.update(mean=float(d[0]), std=0.0)
        return result
    mean, std = result["mean"], float(np.std(d, ddof=1))
    standard_error = std / math.sqrt(n)
    half_width = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * standard_error
    t = mean / standard_error
    p = float(2 * stats.t.sf(abs(t), n - 1))
    result.update(std=std, low=mean - half_width, high=mean + half_width, t=float(t), p=p)
    return result


# ------------------------------------------------------------------------ multiplicity
def holm(p_values: dict) -> dict:
    """Holm-Bonferroni adjusted p-values (Holm 1979, "A simple sequentially rejective multiple
    test procedure"): with the m p-values sorted, p_(1) <= ... <= p_(m),
    adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)) (step-down, monotone, capped at 1);
    rejecting where adjusted p <= alpha controls the family-wise error rate at alpha.
    `p_values`: {key: p}; keys whose p is None (no test: fewer than two seeds) are not part of
    the family and map to None. Ties keep the order of `p_values`; their adjusted values are
    equal anyway."""
    tested = {key: float(p) for key, p in p_values.items() if p is not None}
    bad = {key: p for key, p in tested.items() if not 0.0 <= p <= 1.0}
    if bad:
        raise ValueError(f"holm: p-values must lie in [0, 1]; got {bad}.")
    m = len(tested)
    adjusted, running = {}, 0.0
    for rank, key in enumerate(sorted(tested, key=tested.get)):
        running = max(running, min(1.0, (m - rank) * tested[key]))
        adjusted[key] = running
    return {key: adjusted.get(key) for key in p_values}


# ------------------------------------------------------------------------ over images
def _paired_correctness(correct_a, correct_b):
    a = np.asarray(correct_a).reshape(-1)
    b = np.asarray(correct_b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired per-image correctness needs arrays of one length; got "
                         f"{a.size} and {b.size} (the two arms must score the same images).")
    return a.astype(bool), b.astype(bool)


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test of paired per-image correctness (McNemar 1947; Agresti, Categorical
    Data Analysis, 11.1): b = images a classifies right and b wrong, c = the reverse. Under the
    null (both arms equally accurate) b ~ Binomial(b + c, 1/2) given b + c, so
    p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2) (two-sided exact; p = 1 when
    b + c = 0). Exact only: neither the chi-square approximation (with or without continuity
    correction) nor the mid-p variant. Pairs are treated as independent: images pooled over
    several seeds repeat, so the test is over (seed, image) pairs, not over images."""
    a, b = _paired_correctness(correct_a, correct_b)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else min(
        1.0, float(2 * stats.binom.cdf(min(only_a, only_b), discordant, 0.5)))
    return {"b": only_a, "c": only_b, "p": p, "num_pairs": int(a.size)}


def paired_bootstrap(correct_a, correct_b, groups=None, num_samples: int = 10_000,
                     seed: int = 0, confidence: float = 0.95, images=None) -> dict:
    """Difference in accuracy (a - b, fractions) of two arms scored on the same images, and its
    percentile bootstrap interval (Efron & Tibshirani, An Introduction to the Bootstrap, 13.3).

    What is resampled: images, with replacement, within each group (`groups`: one label per
    entry, e.g. the seed; None = one group). A bootstrap sample draws, for each group of n_g
    entries, n_g entry indices of that group uniformly with replacement and uses the SAME
    indices for both arms, so the pairing is by (group, image); groups keep their sizes and are
    resampled independently of each other; the two arms are never resampled separately. The
    statistic of a sample is the pooled accuracy difference over all its entries; the interval
    is the (1 - confidence) / 2 and (1 + confidence) / 2 percentiles of `num_samples` such
    statistics (numpy's linear interpolation). Resampling images says nothing about the
    variation between training seeds (that is `paired_t`'s) and, with images drawn
    independently in each seed, nothing about an image's correlation across seeds either.

    `images` (one image index per entry; the page passes it): resample IMAGES instead, the same
    draw for every seed, i.e. a cluster bootstrap whose clusters are the val images with all
    their (seed, arm) outcomes (Davison & Hinkley 1997, section 3.8). The same val images are
    scored in every seed, so an image's outcomes are correlated across seeds; resampling the
    image as a whole carries that correlation, where the within-group draw above would not.
    `groups` is then ignored.

    A draw only matters through how many times it picks an entry of each paired outcome
    (d = a - b in {-1, 0, +1}), so the counts are drawn directly: multinomial(n_g, shares of
    each outcome in the group), which is the same distribution as drawing indices, at a fraction
    of the cost. Returns dict(difference, low, high, num_samples, num_pairs).
    """
    a, b = _paired_correctness(correct_a, correct_b)
    groups = np.zeros(a.size, np.int64) if groups is None else np.asarray(groups).reshape(-1)
    if groups.size != a.size:
        raise ValueError(f"paired_bootstrap: {groups.size} group labels for {a.size} pairs.")
    if a.size == 0:
        raise ValueError("paired_bootstrap: no pairs to resample.")
    outcome = a.astype(np.int64) - b.astype(np.int64)
    rng = np.random.default_rng(seed)
    resampled_sum = np.zeros(num_samples, np.int64)
    if images is not None:  # clusters: each image's outcomes summed over the seeds
        images = np.asarray(images).reshape(-1)
        if images.size != a.size:
            raise ValueError(f"paired_bootstrap: {images.size} image labels for {a.size} pairs.")
        _, index = np.unique(images, return_inverse=True)
        outcome = np.bincount(index, weights=outcome).astype(np.int64)  # [num images]
        groups = np.zeros(outcome.size, np.int64)
    for group in np.unique(groups):
        values, counts = np.unique(outcome[groups == group], return_counts=True)
        draws = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=num_samples)
        resampled_sum += draws @ values
    resampled = resampled_sum / a.size
    low, high = np.percentile(resampled, [50 * (1 - confidence), 50 * (1 + confidence)])
    return {"difference": float(outcome.sum() / a.size), "low": float(low), "high": float(high),
            "num_samples": int(num_samples), "num_pairs": int(a.size)}


# ------------------------------------------------------------------------ predictions on disk
_ENCODINGS = {"uint8": "<u1", "uint16": "<u2"}


def encode_predictions(labels) -> str:
    """Class indices [N] as one JSON-safe string: "<dtype>.zlib.b64:" + base64(zlib(bytes)),
    dtype uint8 when every index is below 256, else uint16 (little-endian). 3,925 Imagenette
    predictions take about 2.5 kB (BYOL seed 0: kNN 2,463 characters, linear 2,483; the labels,
    sorted by class, 79), against 1.6 kB of information (log2 10 bits per image)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"encode_predictions takes a 1-D array of class indices; got dtype "
                         f"{labels.dtype}, shape {labels.shape}.")
    top = int(labels.max()) if labels.size else 0
    if labels.size and int(labels.min()) < 0 or top >= 2 ** 16:
        raise ValueError(f"encode_predictions: class indices must lie in [0, 65535]; got "
                         f"[{int(labels.min())}, {top}].")
    dtype = "uint8" if top < 2 ** 8 else "uint16"
    packed = zlib.compress(labels.astype(_ENCODINGS[dtype]).tobytes(), 9)
    return f"{dtype}.zlib.b64:" + base64.b64encode(packed).decode("ascii")


def decode_predictions(encoded: str) -> np.ndarray:
    """The int64 class indices [N] of `encode_predictions(...)`."""
    header, _, payload = encoded.partition(":")
    dtype, _, codec = header.partition(".")
    if dtype not in _ENCODINGS or codec != "zlib.b64":
        raise ValueError(f"decode_predictions: unknown encoding {header!r}; expected "
                         f"'uint8.zlib.b64' or 'uint16.zlib.b64' (encode_predictions).")
    raw = zlib.decompress(base64.b64decode(payload.encode("ascii"), validate=True))
    return np.frombuffer(raw, _ENCODINGS[dtype]).astype(np.int64)


def ids_digest(ids) -> str:
    """The first 16 hex digits of sha256 over the example ids in order (each UTF-8, followed by
    a NUL byte): equal digests mean the same images in the same order."""
    digest = hashlib.sha256()
    for example_id in ids:
        digest.update(example_id if isinstance(example_id, bytes) else str(example_id).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------ the page's rows
def _image_level(records_a: dict, records_b: dict, seeds: list, metric: str, cells: tuple,
                 num_samples: int, seed: int) -> dict:
    """McNemar and the paired bootstrap of `metric` over the (seed, image) pairs of the seeds
    whose two records both carry predictions (record key `predictions`, the content of a run's
    predictions.json)."""
    correct_a, correct_b, groups, used = [], [], [], []
    for s in seeds:
        pa, pb = records_a[s].get("predictions"), records_b[s].get("predictions")
        if not (pa and pb and metric in pa and metric in pb):
            continue
        if pa["ids_digest"] != pb["ids_digest"]:
            raise ValueError(f"{cells[0]} and {cells[1]} seed {s}: predictions on different "
                             f"images (ids digest {pa['ids_digest']} vs {pb['ids_digest']}); "
                             "recompute both with experiments/imagenette64_predictions.py.")
        labels = decode_predictions(pa["labels"])
        if not np.array_equal(labels, decode_predictions(pb["labels"])):
            raise ValueError(f"{cells[0]} and {cells[1]} seed {s}: same ids digest, different "
                             "labels; the predictions files are inconsistent.")
        for cell, record, prediction, correct in (
                (cells[0], records_a[s], pa, correct_a), (cells[1], records_b[s], pb, correct_b)):
            right = decode_predictions(prediction[metric]) == labels
            if not math.isclose(float(right.mean()), record[metric], abs_tol=1e-9):
                raise ValueError(f"{cell} seed {s}: its {metric} predictions give top-1 "
                                 f"{right.mean():.6f}, its record {record[metric]:.6f}: the "
                                 "predictions are not this run's.")
            correct.append(right)
        groups.append(np.arange(labels.size))  # the image index: the same images every seed
        used.append(s)
    if not used:
        return {"image_seeds": [], "mcnemar": None, "bootstrap": None}
    a, b = np.concatenate(correct_a), np.concatenate(correct_b)
    bootstrap = paired_bootstrap(a, b, num_samples=num_samples, seed=seed,
                                 images=np.concatenate(groups))
    for key in ("difference", "low", "high"):
        bootstrap[key] *= 100
    return {"image_seeds": used, "mcnemar": mcnemar(a, b), "bootstrap": bootstrap}


def comparison_rows(records_by_cell: dict, comparisons: list, *, confidence: float = 0.95,
                    num_samples: int = 10_000, seed: int = 0) -> list:
    """One row per (comparison, metric) of the page, differences in percentage points (a - b).

    `records_by_cell`: {cell: {seed: record}} (the committed records of
    docs/results/imagenette64/); `comparisons`: [(name, cell_a, cell_b)]. For each comparison
    the seeds both cells have are paired by seed; for each metric of `METRICS` the row holds the
    per-seed differences and their `paired_t` (mean, std, low, high, t, p, n, per_seed). For kNN
    and linear, when both records of a seed carry `predictions` (a run's predictions.json) with
    the same ids digest, `mcnemar` and `paired_bootstrap` over the (seed, image) pairs of those
    seeds, concatenated (`image_seeds`, `mcnemar`, `bootstrap` with difference / low / high in
    points; [] / None without predictions, and for the background metrics).

    The bootstrap resamples whole val images (the same draw for every seed: `images=` of
    `paired_bootstrap`); McNemar pools the (seed, image) pairs as if independent, which is
    optimistic when an image's outcome repeats across seeds: read it with the bootstrap.

    Multiplicity: `p_holm` is Holm over the t-test p-values of ALL rows returned (every
    comparison and metric on the page), `mcnemar_p_holm` Holm over all McNemar p-values (the
    image-level tests are a second family: they test another null, on other units).

    Raises ValueError when two paired records were evaluated on different mask sets (record key
    `masks`): the background test sets are made from the masks, so their differences would
    mix two test sets; or when paired predictions are on different images.
    """
    rows = []
    for name, cell_a, cell_b in comparisons:
        records_a, records_b = records_by_cell.get(cell_a, {}), records_by_cell.get(cell_b, {})
        seeds = sorted(set(records_a) & set(records_b))
        mixed = {s: (records_a[s].get("masks"), records_b[s].get("masks")) for s in seeds
                 if records_a[s].get("masks") != records_b[s].get("masks")}
        if mixed:
            raise ValueError(f"{name}: {cell_a} and {cell_b} were evaluated on different mask "
                             "sets (" + ", ".join(f"seed {s}: {a} vs {b}"
                                                  for s, (a, b) in mixed.items())
                             + "); the background test sets are made from the masks, so "
                             "pairing them is wrong. Re-evaluate one cell on the other's set.")
        for metric in METRICS:
            if any(metric not in records[s] for records in (records_a, records_b)
                   for s in seeds):
                continue  # e.g. the grey variants, absent from records made before them
            differences = [100 * (records_a[s][metric] - records_b[s][metric]) for s in seeds]
            row = {"comparison": name, "cell_a": cell_a, "cell_b": cell_b, "metric": metric,
                   "seeds": seeds, **paired_t(differences, confidence)}
            row.update({"image_seeds": [], "mcnemar": None, "bootstrap": None}
                       if metric not in IMAGE_METRICS else
                       _image_level(records_a, records_b, seeds, metric, (cell_a, cell_b),
                                    num_samples, seed))
            rows.append(row)
    adjusted = holm({i: row["p"] for i, row in enumerate(rows)})
    adjusted_mcnemar = holm({i: row["mcnemar"]["p"] for i, row in enumerate(rows)
                             if row.get("mcnemar")})
    for i, row in enumerate(rows):
        row["p_holm"] = adjusted[i]
        row["mcnemar_p_holm"] = adjusted_mcnemar.get(i)
    return rows


def _p(p) -> str:
    if p is None:
        return "-"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def markdown_table(rows: list) -> str:
    """The page's table of `comparison_rows`: per-seed differences, their mean with the 95 %
    t interval, p and Holm-adjusted p over seeds; and, where predictions exist, the images only
    a / only b classifies right (pooled over the seeds listed), McNemar's exact p with its
    Holm-adjusted p, and the bootstrap difference with its 95 % percentile interval."""
    lines = ["| comparison | metric | seeds | per seed | mean [95 % t interval] | p | p (Holm) "
             "| images: only a / only b right | McNemar p (Holm) | bootstrap [95 %] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        per_seed = " / ".join(f"{d:+.1f}" for d in row["per_seed"]) or "-"
        mean = "-" if row["mean"] is None else f"{row['mean']:+.1f}"
        if row["low"] is not None:
            mean += f" [{row['low']:+.1f}, {row['high']:+.1f}]"
        images = mcnemar_p = bootstrap = "-"
        if row.get("mcnemar"):
            test = row["mcnemar"]
            seeds = ", ".join(str(s) for s in row["image_seeds"])
            images = f"{test['b']} / {test['c']} (seeds {seeds})"
            mcnemar_p = f"{_p(test['p'])} ({_p(row['mcnemar_p_holm'])})"
            boot = row["bootstrap"]
            bootstrap = f"{boot['difference']:+.1f} [{boot['low']:+.1f}, {boot['high']:+.1f}]"
        lines.append(f"| {row['cell_a']} - {row['cell_b']} | {METRICS[row['metric']]} | "
                     f"{len(row['seeds'])} | {per_seed} | {mean} | {_p(row['p'])} | "
                     f"{_p(row['p_holm'])} | {images} | {mcnemar_p} | {bootstrap} |")
    return "\n".join(lines)
