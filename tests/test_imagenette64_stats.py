"""The page's statistics (experiments/imagenette64_stats.py) against independent references:
scipy's paired t-test, statsmodels' Holm correction and exact McNemar test (test-only
dependency), hand-worked bootstrap cases and a naive index-resampling bootstrap."""

import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar
from statsmodels.stats.multitest import multipletests

from experiments import imagenette64_stats as st


# ------------------------------------------------------------------------ paired t
@pytest.mark.parametrize("with_, without", [([0.31, 0.35, 0.33], [0.33, 0.34, 0.30]),
                                            ([0.1, 0.4, 0.2, 0.25], [0.12, 0.3, 0.21, 0.2]),
                                            ([0.5, 0.52], [0.49, 0.48])])
def test_paired_t_matches_scipy_ttest_rel(with_, without):
    result = st.paired_t([a - b for a, b in zip(with_, without)])
    reference = scipy_stats.ttest_rel(with_, without)
    interval = reference.confidence_interval(0.95)
    assert result["t"] == pytest.approx(reference.statistic, rel=1e-9)
    assert result["p"] == pytest.approx(reference.pvalue, rel=1e-9)
    assert (result["low"], result["high"]) == pytest.approx((interval.low, interval.high))
    assert result["n"] == len(with_)
    assert result["mean"] == pytest.approx(np.mean(np.subtract(with_, without)))


def test_paired_t_interval_is_scipy_t_interval_and_hand_worked():
    differences = [-0.3, -0.9, -1.0]
    result = st.paired_t(differences, confidence=0.9)
    sem = scipy_stats.sem(differences)
    low, high = scipy_stats.t.interval(0.9, len(differences) - 1, loc=np.mean(differences),
                                       scale=sem)
    assert (result["low"], result["high"]) == pytest.approx((low, high), rel=1e-12)
    # Differences 1, 2, 3: mean 2, sd 1, t(0.975, 2 dof) = 4.3027, half-width 4.3027 / sqrt 3.
    worked = st.paired_t([1.0, 2.0, 3.0])
    assert (worked["mean"], worked["std"]) == (2.0, 1.0)
    assert (worked["low"], worked["high"]) == pytest.approx((2 - 2.48417, 2 + 2.48417), abs=1e-4)
    assert st.paired_t(differences)["per_seed"] == differences


def test_paired_t_without_spread():
    assert st.paired_t([0.5]) == {"mean": 0.5, "std": None, "low": None, "high": None,
                                  "t": None, "p": None, "n": 1, "per_seed": [0.5]}
    assert st.paired_t([])["mean"] is None
    for tie in ([0.4, 0.4, 0.4], [0.0, 0.0]):  # no spread: the t statistic is undefined
        assert st.paired_t(tie) == {"mean": tie[0], "std": 0.0, "low": None, "high": None,
                                    "t": None, "p": None, "n": len(tie), "per_seed": tie}


# ------------------------------------------------------------------------ Holm
def test_holm_matches_statsmodels():
    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 12):
        p = rng.uniform(0, 0.2, m) ** 2
        p[:2] = p[0]  # a tie
        expected = multipletests(p, method="holm")[1]
        adjusted = st.holm({f"row{i}": value for i, value in enumerate(p)})
        assert [adjusted[f"row{i}"] for i in range(m)] == pytest.approx(expected, rel=1e-12)


def test_holm_hand_worked_and_untested_rows_are_outside_the_family():
    # sorted 0.01, 0.02, 0.04, 0.5 with m = 4: 0.04, 0.06, 0.08, then min(1, 0.5) = 0.5
    adjusted = st.holm({"a": 0.04, "b": 0.01, "c": None, "d": 0.5, "e": 0.02})
    assert adjusted == pytest.approx({"a": 0.08, "b": 0.04, "c": None, "d": 0.5, "e": 0.06})
    # monotone: a larger raw p never gets a smaller adjusted p; capped at 1
    assert st.holm({"a": 0.3, "b": 0.31}) == {"a": 0.6, "b": 0.6}
    assert st.holm({"a": 0.6, "b": 0.9}) == {"a": 1.0, "b": 1.0}
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        st.holm({"a": float("nan")})


# ------------------------------------------------------------------------ McNemar
def test_mcnemar_matches_statsmodels_exact():
    rng = np.random.default_rng(0)
    for size, p_a, p_b in [(3925, 0.37, 0.35), (200, 0.5, 0.5), (40, 0.9, 0.2), (7, 0.5, 0.5)]:
        a, b = rng.random(size) < p_a, rng.random(size) < p_b
        result = st.mcnemar(a, b)
        table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
        reference = statsmodels_mcnemar(table, exact=True)
        assert (result["b"], result["c"]) == (table[0][1], table[1][0])
        assert result["p"] == pytest.approx(float(reference.pvalue), rel=1e-12)
        assert result["num_pairs"] == size


def test_mcnemar_edge_cases():
    same = np.array([True, False, True])
    assert st.mcnemar(same, same) == {"b": 0, "c": 0, "p": 1.0, "num_pairs": 3}
    # b = 5, c = 0: p = 2 / 2^5
    a = np.array([True] * 5 + [False] * 3)
    b = np.array([False] * 5 + [False] * 3)
    assert st.mcnemar(a, b)["p"] == pytest.approx(2 / 32)
    assert st.mcnemar([True, False], [False, True])["p"] == 1.0  # b = c: capped at 1
    with pytest.raises(ValueError, match="same images"):
        st.mcnemar([True], [True, False])


# ------------------------------------------------------------------------ bootstrap
def test_bootstrap_identical_arms_give_exactly_zero():
    correct = np.random.default_rng(1).random(500) < 0.4
    result = st.paired_bootstrap(correct, correct, groups=np.repeat([0, 1], 250))
    assert (result["difference"], result["low"], result["high"]) == (0.0, 0.0, 0.0)


def test_bootstrap_known_shift_and_resampling_within_groups():
    """a right everywhere, b wrong everywhere: difference 1, degenerate interval. Seed 0: a
    right and b wrong on all 300 images, seed 1: both right on all 100: every resample that
    keeps the groups' sizes gives exactly 300 / 400 (pooled resampling would not)."""
    result = st.paired_bootstrap(np.ones(50, bool), np.zeros(50, bool), num_samples=200)
    assert (result["difference"], result["low"], result["high"]) == (1.0, 1.0, 1.0)
    a = np.ones(400, bool)
    b = np.r_[np.zeros(300, bool), np.ones(100, bool)]
    groups = np.r_[np.zeros(300), np.ones(100)]
    within = st.paired_bootstrap(a, b, groups)
    assert (within["difference"], within["low"], within["high"]) == (0.75, 0.75, 0.75)
    pooled = st.paired_bootstrap(a, b)
    assert pooled["low"] < 0.75 < pooled["high"]


def naive_bootstrap(a, b, groups, num_samples, seed):
    """Resampling image indices literally: the same indices for both arms, within each group."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    differences = []
    for _ in range(num_samples):
        index = np.concatenate([rng.choice(m, m.size, replace=True) for m in members])
        differences.append(a[index].mean() - b[index].mean())
    return np.percentile(differences, [2.5, 97.5])


def test_bootstrap_matches_resampling_indices_and_the_normal_approximation():
    rng = np.random.default_rng(7)
    a = rng.random(1200) < 0.40
    b = np.where(rng.random(1200) < 0.7, a, rng.random(1200) < 0.35)  # correlated arms
    groups = np.repeat([0, 1, 2], 400)
    result = st.paired_bootstrap(a, b, groups, num_samples=20_000, seed=1)
    low, high = naive_bootstrap(a, b, groups, 4000, seed=2)
    assert result["difference"] == pytest.approx(a.mean() - b.mean())
    assert result["low"] == pytest.approx(low, abs=0.006)
    assert result["high"] == pytest.approx(high, abs=0.006)
    # within-group resampling: var = sum_g n_g var_g(d) / N^2 (population variances)
    d = a.astype(float) - b
    standard_error = math.sqrt(sum(d[groups == g].var() * 400 for g in range(3))) / 1200
    half = (result["high"] - result["low"]) / 2
    assert half == pytest.approx(1.96 * standard_error, rel=0.05)
    again = st.paired_bootstrap(a, b, groups, num_samples=20_000, seed=1)
    assert again == result  # reproducible under its seed


# ------------------------------------------------------------------------ encoding
def test_predictions_round_trip_and_size():
    rng = np.random.default_rng(0)
    labels = np.sort(rng.integers(0, 10, 3925))
    predictions = np.where(rng.random(3925) < 0.35, labels, rng.integers(0, 10, 3925))
    for array in (labels, predictions, np.array([0, 255, 3]), np.array([], np.int64)):
        encoded = st.encode_predictions(array)
        assert json.loads(json.dumps(encoded)) == encoded and encoded.isascii()
        assert encoded.startswith("uint8.")
        np.testing.assert_array_equal(st.decode_predictions(encoded), array)
    wide = np.array([0, 256, 999, 65535])
    assert st.encode_predictions(wide).startswith("uint16.")
    np.testing.assert_array_equal(st.decode_predictions(st.encode_predictions(wide)), wide)
    # a record's three arrays (labels, kNN, linear) of 3,925 val images: a few kB
    assert len(st.encode_predictions(predictions)) < 3000
    assert len(st.encode_predictions(labels)) < 200
    assert st.encode_predictions(predictions) == st.encode_predictions(predictions.copy())
    for bad in (np.array([-1, 2]), np.array([70_000]), np.array([0.5]), np.zeros((2, 2), int)):
        with pytest.raises(ValueError):
            st.encode_predictions(bad)
    with pytest.raises(ValueError, match="unknown encoding"):
        st.decode_predictions("int32.zlib.b64:AAAA")


def test_ids_digest_names_the_images_and_their_order():
    ids = ["n01440764/a", "n01440764/b", "n02102040/c"]
    digest = st.ids_digest(ids)
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert st.ids_digest([i.encode() for i in ids]) == digest
    assert st.ids_digest(ids[::-1]) != digest and st.ids_digest(ids[:2]) != digest
    assert st.ids_digest(["ab", "c"]) != st.ids_digest(["a", "bc"])


# ------------------------------------------------------------------------ comparison rows
def synthetic_records(rng, num_images=300, masks="m1", with_predictions=(0, 1)):
    """{cell: {seed: record}} for two comparisons, three seeds; predictions for some seeds."""
    labels = rng.integers(0, 10, num_images)
    encoded_labels = st.encode_predictions(labels)
    records = {}
    for cell, skill in [("x", 0.45), ("x,nomask", 0.40), ("y", 0.35), ("y,bg_rm", 0.36)]:
        records[cell] = {}
        for seed in range(3):
            record = {"seed": seed, "masks": masks,
                      **{m: float(skill + rng.normal(0, 0.01)) for m in st.METRICS}}
            if seed in with_predictions:
                predictions = {"ids_digest": "0123456789abcdef", "labels": encoded_labels}
                for metric in st.IMAGE_METRICS:
                    guess = np.where(rng.random(num_images) < skill, labels,
                                     (labels + 1) % 10)
                    predictions[metric] = st.encode_predictions(guess)
                    record[metric] = float(np.mean(guess == labels))
                record["predictions"] = predictions
            records[cell][seed] = record
    return records


COMPARISONS = [("masking", "x", "x,nomask"), ("BG_RM", "y,bg_rm", "y")]


def test_comparison_rows_on_synthetic_records():
    records = synthetic_records(np.random.default_rng(0))
    del records["y"][2]  # seed 2 of y missing: BG_RM pairs seeds 0 and 1 only
    rows = st.comparison_rows(records, COMPARISONS, num_samples=2000)
    assert [(r["comparison"], r["metric"]) for r in rows] == [
        (name, metric) for name, _, _ in COMPARISONS for metric in st.METRICS]
    for row in rows:
        a, b = records[row["cell_a"]], records[row["cell_b"]]
        assert row["seeds"] == ([0, 1, 2] if row["comparison"] == "masking" else [0, 1])
        expected = [100 * (a[s][row["metric"]] - b[s][row["metric"]]) for s in row["seeds"]]
        assert row["per_seed"] == pytest.approx(expected)
        reference = scipy_stats.ttest_rel([100 * a[s][row["metric"]] for s in row["seeds"]],
                                          [100 * b[s][row["metric"]] for s in row["seeds"]])
        assert row["p"] == pytest.approx(reference.pvalue, rel=1e-6)
    # Holm over ALL rows (both comparisons, every metric)
    expected = multipletests([r["p"] for r in rows], method="holm")[1]
    assert [r["p_holm"] for r in rows] == pytest.approx(expected, rel=1e-12)
    # image level: kNN / linear only, pooled over the (seed, image) pairs of seeds 0 and 1
    image_rows = [r for r in rows if r["mcnemar"] is not None]
    assert [r["metric"] for r in image_rows] == ["knn", "linear"] * 2
    assert all(r.get("mcnemar") is None for r in rows if r["metric"] not in st.IMAGE_METRICS)
    row = rows[0]  # masking, kNN
    labels = st.decode_predictions(records["x"][0]["predictions"]["labels"])
    a = np.concatenate([st.decode_predictions(records["x"][s]["predictions"]["knn"]) == labels
                        for s in (0, 1)])
    b = np.concatenate([st.decode_predictions(records["x,nomask"][s]["predictions"]["knn"])
                        == labels for s in (0, 1)])
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert row["image_seeds"] == [0, 1]
    assert row["mcnemar"]["p"] == pytest.approx(
        float(statsmodels_mcnemar(table, exact=True).pvalue), rel=1e-12)
    assert row["mcnemar"]["num_pairs"] == 600
    assert row["bootstrap"]["difference"] == pytest.approx(100 * (a.mean() - b.mean()))
    assert row["bootstrap"]["low"] < row["bootstrap"]["difference"] < row["bootstrap"]["high"]
    expected = multipletests([r["mcnemar"]["p"] for r in image_rows], method="holm")[1]
    assert [r["mcnemar_p_holm"] for r in image_rows] == pytest.approx(expected, rel=1e-12)
    table_text = st.markdown_table(rows)
    lines = table_text.splitlines()
    assert len(lines) == 2 + len(rows) and lines[2].startswith("| x - x,nomask | kNN | 3 |")
    assert "(seeds 0, 1)" in lines[2] and lines[4].split("|")[8].strip() == "-"  # BG-Gap


def test_rows_without_predictions_or_with_one_seed():
    records = synthetic_records(np.random.default_rng(1), with_predictions=())
    records["y"] = {0: records["y"][0]}
    rows = st.comparison_rows(records, COMPARISONS)
    assert all(r["mcnemar"] is None and r["bootstrap"] is None
               for r in rows if r["metric"] in st.IMAGE_METRICS)
    bg_rm = [r for r in rows if r["comparison"] == "BG_RM"]
    assert all(r["n"] == 1 and r["p"] is None and r["p_holm"] is None for r in bg_rm)
    # one-seed rows are outside the family: Holm over the 6 masking rows only
    masking = [r for r in rows if r["comparison"] == "masking"]
    expected = multipletests([r["p"] for r in masking], method="holm")[1]
    assert [r["p_holm"] for r in masking] == pytest.approx(expected)
    assert "| y,bg_rm - y | kNN | 1 |" in st.markdown_table(rows)


def test_pairs_across_mask_sets_are_refused():
    records = synthetic_records(np.random.default_rng(2))
    records["y,bg_rm"][1]["masks"] = "m2"
    with pytest.raises(ValueError, match=r"y,bg_rm and y .*seed 1: m2 vs m1"):
        st.comparison_rows(records, COMPARISONS)
    st.comparison_rows(records, COMPARISONS[:1])  # the other comparison is fine


def test_predictions_on_other_images_or_of_another_run_are_refused():
    records = synthetic_records(np.random.default_rng(3))
    records["x"][1]["predictions"]["ids_digest"] = "fedcba9876543210"
    with pytest.raises(ValueError, match="different images"):
        st.comparison_rows(records, COMPARISONS)
    records = synthetic_records(np.random.default_rng(3))
    records["x,nomask"][0]["knn"] += 0.01
    with pytest.raises(ValueError, match="not this run's"):
        st.comparison_rows(records, COMPARISONS)


def test_image_bootstrap_resamples_whole_images_across_seeds():
    """`images=`: one draw of image indices for every seed (a cluster bootstrap): equal to
    resampling image indices literally and scoring every seed on them; wider than the
    within-seed draw when an image's outcome repeats across seeds (here: identical seeds)."""
    rng = np.random.default_rng(3)
    a1, b1 = rng.random(300) < 0.6, rng.random(300) < 0.5
    a, b = np.concatenate([a1, a1, a1]), np.concatenate([b1, b1, b1])  # 3 seeds, same outcomes
    images = np.tile(np.arange(300), 3)
    clustered = st.paired_bootstrap(a, b, num_samples=20_000, seed=1, images=images)
    assert clustered["difference"] == pytest.approx(a1.mean() - b1.mean())
    draws = np.random.default_rng(2).integers(0, 300, size=(4000, 300))
    literal = (a1[draws].astype(int) - b1[draws].astype(int)).mean(axis=1)
    low, high = np.percentile(literal, [2.5, 97.5])
    assert clustered["low"] == pytest.approx(low, abs=0.012)
    assert clustered["high"] == pytest.approx(high, abs=0.012)
    within = st.paired_bootstrap(a, b, np.repeat([0, 1, 2], 300), num_samples=20_000, seed=1)
    assert (clustered["high"] - clustered["low"]) > 1.5 * (within["high"] - within["low"])
