"""ReLIC / ReLICv2 losses against an independent numpy computation (docs/OBJECTIVE.md)."""

import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf import losses


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def numpy_relic(online, target, tau, alpha, candidates=None, contrast_scale=1.0):
    """Direct transcription of docs/OBJECTIVE.md's pair loss, one row at a time."""
    o, t = _normalize(online), _normalize(target)
    s = o @ t.T / tau
    batch = len(o)
    contrastive, invariance = [], []
    for i in range(batch):
        cand = np.arange(batch) if candidates is None else candidates[i]
        pos = i if candidates is None else 0
        log_p = _log_softmax(s[i, cand])
        log_r = _log_softmax(s[cand, i])
        contrastive.append(-log_p[pos])
        invariance.append(np.sum(np.exp(log_r) * (log_r - log_p)))
    c, v = np.mean(contrastive), np.mean(invariance)
    return contrast_scale * c + alpha * v, c, v


def pair_loss(online, target, temperature, alpha, **kwargs):
    """The library's loss of one (anchor, target) view pair: `relicv2_loss` with L = 1, S = 0,
    whose only pair is (0, 0) and whose sums over rows divided by B are the batch means."""
    return losses.relicv2_loss([online], [target], num_large=1, temperature=temperature,
                               alpha=alpha, **kwargs)


@pytest.fixture
def embeddings():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=(8, 5)).astype(np.float32)


def test_pair_loss_all_negatives_matches_numpy(embeddings):
    online, target = embeddings
    out = pair_loss(online, target, temperature=0.3, alpha=0.7)
    loss, c, v = numpy_relic(online, target, 0.3, 0.7)
    np.testing.assert_allclose(out["contrastive"], c, rtol=1e-5)
    np.testing.assert_allclose(out["invariance"], v, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-5)
    assert out["invariance"] > 0  # KL between different distributions is positive


def test_pair_loss_sampled_negatives_matches_numpy(embeddings):
    online, target = embeddings
    seed = tf.constant([3, 4], tf.int64)
    out = pair_loss(online, target, 0.2, 1.0, num_negatives=3, seed=seed)
    candidates = losses.sample_candidates(8, 3, seed).numpy()
    loss, c, v = numpy_relic(online, target, 0.2, 1.0, candidates)
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(out["contrastive"], c, rtol=1e-5)


def test_candidates_are_positive_then_distinct_others():
    cand = losses.sample_candidates(16, 10, tf.constant([1, 2], tf.int64)).numpy()
    assert cand.shape == (16, 11)
    np.testing.assert_array_equal(cand[:, 0], np.arange(16))
    for i, row in enumerate(cand):
        assert i not in row[1:]
        assert len(set(row[1:])) == 10


def test_candidates_are_uniform_over_others():
    counts = np.zeros(8)
    for s in range(400):
        cand = losses.sample_candidates(8, 2, tf.constant([s, 0], tf.int64)).numpy()
        counts += np.bincount(cand[0, 1:], minlength=8)
    assert counts[0] == 0
    freq = counts[1:] / counts[1:].sum()  # 7 others, each expected 1/7
    assert np.all(np.abs(freq - 1 / 7) < 0.03), freq


def test_candidates_slice_of_global_equals_rows():
    seed = tf.constant([7, 7], tf.int64)
    full = losses.sample_candidates(12, 4, seed).numpy()
    part = losses.sample_candidates(12, 4, seed, row_offset=6, num_rows=6).numpy()
    np.testing.assert_array_equal(full[6:], part)


def test_no_gradient_into_targets(embeddings):
    online, target = (tf.Variable(x) for x in embeddings)
    with tf.GradientTape(persistent=True) as tape:
        out = pair_loss(online, target, 0.2, 1.0)
    assert tape.gradient(out["loss"], target) is None
    grad = tape.gradient(out["loss"], online)
    assert grad is not None and float(tf.reduce_sum(tf.abs(grad))) > 0


def test_identical_views_have_zero_invariance():
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    out = pair_loss(x, x, 0.5, 1.0)
    # S is symmetric when online == target, so p == r and the KL vanishes.
    assert abs(float(out["invariance"])) < 1e-6


def test_view_pairs_are_the_listings():
    """Appendix E: all L x L large pairs (a == b included), then S x L small-large pairs."""
    pairs = losses.view_pairs(4, 2)
    assert len(pairs) == (4 + 2) * 4
    assert [(a, b) for a, b in pairs if a == b] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert all(b < 4 for _, b in pairs)  # small views are never targets
    distinct = losses.view_pairs(4, 2, same_view=False)
    assert len(distinct) == 4 * 3 + 2 * 4 and all(a != b for a, b in distinct)
    assert set(distinct) == set(pairs) - {(i, i) for i in range(4)}


def listing_loss(online_large, target_large, online_small, tau, alpha, candidates=None):
    """ReLICv2's appendix E pseudo-code, loop for loop, with numpy_relic as loss_relicv2."""
    loss = 0.0
    for i in range(len(online_large)):
        for j in range(len(target_large)):
            loss += numpy_relic(online_large[i], target_large[j], tau, alpha, candidates)[0]
    for i in range(len(online_small)):
        for j in range(len(target_large)):
            loss += numpy_relic(online_small[i], target_large[j], tau, alpha, candidates)[0]
    return loss / ((len(online_large) + len(online_small)) * len(online_large))


@pytest.mark.parametrize("num_negatives", [None, 3])
def test_multiview_loss_is_the_listing(num_negatives):
    rng = np.random.default_rng(2)
    num_large, num_small = 3, 2
    online = [rng.normal(size=(8, 4)).astype(np.float32) for _ in range(num_large + num_small)]
    target = [rng.normal(size=(8, 4)).astype(np.float32) for _ in range(num_large)]
    seed = tf.constant([7, 1], tf.int64)
    out = losses.relicv2_loss(online, target, num_large=num_large, temperature=0.25, alpha=0.5,
                              num_negatives=num_negatives, seed=seed)
    candidates = None if num_negatives is None else losses.sample_candidates(8, 3, seed).numpy()
    expected = listing_loss(online[:num_large], target, online[num_large:], 0.25, 0.5,
                            candidates)
    np.testing.assert_allclose(out["loss"], expected, rtol=1e-5)
    # The earlier reading (a != b) is the mean over the 20 other pairs: a different number.
    distinct = losses.relicv2_loss(online, target, num_large=num_large, temperature=0.25,
                                   alpha=0.5, num_negatives=num_negatives, seed=seed,
                                   same_view_pairs=False)
    expected_distinct = np.mean([numpy_relic(online[a], target[b], 0.25, 0.5, candidates)[0]
                                 for a, b in losses.view_pairs(num_large, num_small, False)])
    np.testing.assert_allclose(distinct["loss"], expected_distinct, rtol=1e-5)
    assert abs(float(distinct["loss"]) - float(out["loss"])) > 1e-3


def test_contrast_scale_weights_only_the_contrastive_term():
    """ReLICv2 appendix D.1's "contrast scale" c: loss = c * contrastive + alpha * invariance."""
    rng = np.random.default_rng(5)
    online = [rng.normal(size=(6, 4)).astype(np.float32) for _ in range(2 + 1)]
    target = [rng.normal(size=(6, 4)).astype(np.float32) for _ in range(2)]
    out = losses.relicv2_loss(online, target, num_large=2, temperature=0.3, alpha=0.5,
                              contrast_scale=2.5)
    reference = [numpy_relic(online[a], target[b], 0.3, 0.5, contrast_scale=2.5)
                 for a, b in losses.view_pairs(2, 1)]
    np.testing.assert_allclose(out["loss"], np.mean([r[0] for r in reference]), rtol=1e-5)
    np.testing.assert_allclose(out["contrastive"], np.mean([r[1] for r in reference]), rtol=1e-5)
    unscaled = losses.relicv2_loss(online, target, num_large=2, temperature=0.3, alpha=0.5)
    np.testing.assert_allclose(out["loss"] - unscaled["loss"], 1.5 * unscaled["contrastive"],
                               rtol=1e-5)
    pair = pair_loss(online[0], target[1], 0.3, 0.5, contrast_scale=2.5)
    np.testing.assert_allclose(pair["loss"], numpy_relic(online[0], target[1], 0.3, 0.5,
                                                         contrast_scale=2.5)[0], rtol=1e-5)


@pytest.mark.parametrize("num_negatives", [None, 3])
def test_replica_rows_add_up_to_single_device(num_negatives):
    """Two 'replicas' owning rows 0-3 and 4-7 of the gathered batch sum to the global loss."""
    rng = np.random.default_rng(3)
    online = [rng.normal(size=(8, 4)).astype(np.float32) for _ in range(3)]
    target = [rng.normal(size=(8, 4)).astype(np.float32) for _ in range(2)]
    kwargs = dict(num_large=2, temperature=0.2, alpha=1.0, num_negatives=num_negatives,
                  seed=tf.constant([5, 1], tf.int64))
    single = losses.relicv2_loss(online, target, **kwargs)
    parts = [losses.relicv2_loss([o[r:r + 4] for o in online], [t[r:r + 4] for t in target],
                                 global_batch_size=8, online_views_all=online,
                                 target_views_all=target, row_offset=r, **kwargs)
             for r in (0, 4)]
    for key in ("loss", "contrastive", "invariance"):
        np.testing.assert_allclose(parts[0][key] + parts[1][key], single[key], rtol=1e-5)


def test_sampled_negatives_need_a_seed(embeddings):
    with pytest.raises(ValueError, match="seed"):
        pair_loss(*embeddings, 0.2, 1.0, num_negatives=3)
