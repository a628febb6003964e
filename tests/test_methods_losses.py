"""Baseline losses (BYOL, InfoNCE / NT-Xent, MoCo-v2, SwAV + Sinkhorn) against numpy."""

import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf import losses


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_byol_loss_is_normalised_mse(rng):
    p = rng.normal(size=(5, 8)).astype(np.float32)
    z = rng.normal(size=(5, 8)).astype(np.float32)
    expected = np.sum((unit(p) - unit(z)) ** 2, axis=-1)
    np.testing.assert_allclose(losses.byol_loss_rows(p, z), expected, rtol=1e-5, atol=1e-6)
    p2, z2 = rng.normal(size=(2, 5, 8)).astype(np.float32)
    sym = losses.byol_loss([p, p2], [z, z2])
    expected_sym = (np.sum((unit(p) - unit(z2)) ** 2) + np.sum((unit(p2) - unit(z)) ** 2)) / 5
    np.testing.assert_allclose(sym, expected_sym, rtol=1e-5)


def test_infonce_rows_against_numpy_with_mask_and_hard_negative(rng):
    a, pos, hard = (rng.normal(size=(4, 6)).astype(np.float32) for _ in range(3))
    neg = rng.normal(size=(7, 6)).astype(np.float32)
    mask = rng.random((4, 7)) > 0.3
    valid = np.array([1, 0, 1, 1], np.float32)
    t = 0.2
    got = losses.infonce_rows(a, pos, neg, temperature=t, negatives_mask=mask,
                              hard_negative=hard, hard_negative_valid=valid)
    a_, pos_, neg_, hard_ = unit(a), unit(pos), unit(neg), unit(hard)
    expected = []
    for i in range(4):
        logits = [a_[i] @ pos_[i] / t] + [a_[i] @ neg_[j] / t for j in range(7) if mask[i, j]]
        if valid[i]:
            logits.append(a_[i] @ hard_[i] / t)
        logits = np.array(logits)
        expected.append(-(logits[0] - np.log(np.exp(logits).sum())))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_nt_xent_hand_worked_2x2():
    # Two examples, 2-d unit vectors, temperature 1. Anchor (1, 0) with positive (1, 0) and
    # negatives (0, 1), (0, 1): -log(e / (e + 2)) = log(1 + 2 / e) for all four anchors.
    v = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    got = losses.nt_xent_loss(v, v, temperature=1.0)
    np.testing.assert_allclose(got, np.log(1 + 2 / np.e), rtol=1e-6)
    # Swapped second view: anchor (1, 0), positive (0, 1) (logit 0), negatives (0, 1) (0) and
    # (1, 0) (1): -log(1 / (2 + e)) = log(2 + e).
    got = losses.nt_xent_loss(v, v[::-1], temperature=1.0)
    np.testing.assert_allclose(got, np.log(2 + np.e), rtol=1e-6)


def numpy_nt_xent(z1, z2, t):
    """SimCLR's construction: 2N x 2N cosine matrix, self-similarity removed, mean over 2N."""
    z = unit(np.concatenate([z1, z2]))
    n = len(z1)
    sim = z @ z.T / t
    np.fill_diagonal(sim, -np.inf)
    positives = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    return -np.mean(log_softmax(sim)[np.arange(2 * n), positives])


def test_nt_xent_matches_numpy_and_splits_into_replica_rows(rng):
    z1, z2 = rng.normal(size=(2, 6, 5)).astype(np.float32)
    expected = numpy_nt_xent(z1, z2, 0.1)
    np.testing.assert_allclose(losses.nt_xent_loss(z1, z2, temperature=0.1), expected,
                               rtol=1e-4)
    # Two "replicas" of 3 rows each, with the gathered candidates: partial sums add up.
    parts = [losses.nt_xent_loss(z1[r:r + 3], z2[r:r + 3], temperature=0.1, view1_all=z1,
                                 view2_all=z2, row_offset=r, global_batch_size=6)
             for r in (0, 3)]
    np.testing.assert_allclose(sum(parts), expected, rtol=1e-4)


def numpy_moco(q, k, queue, t, hard=None, valid=None):
    q, k, queue = unit(q), unit(k), unit(queue)
    logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ queue.T], 1) / t
    if hard is not None:
        hard_logit = np.sum(q * unit(hard), 1, keepdims=True) / t
        logits = np.concatenate([logits, np.where(valid[:, None] > 0, hard_logit, -np.inf)], 1)
    return -log_softmax(logits)[:, 0]


def test_moco_loss_symmetric_against_numpy(rng):
    q1, q2, k1, k2 = rng.normal(size=(4, 5, 8)).astype(np.float32)
    queue = rng.normal(size=(16, 8)).astype(np.float32)
    got = losses.moco_loss([q1, q2], [k2, k1], queue, temperature=0.2)
    expected = (numpy_moco(q1, k2, queue, 0.2).sum() + numpy_moco(q2, k1, queue, 0.2).sum()) / 5
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bg_swaps_hard_negative_changes_loss_as_numpy_says(rng):
    q1, q2, k1, k2, hard = rng.normal(size=(5, 4, 8)).astype(np.float32)
    queue = rng.normal(size=(8, 8)).astype(np.float32)
    valid = np.array([1, 0, 1, 0], np.float32)
    without = losses.moco_loss([q1, q2], [k2, k1], queue, temperature=0.2)
    with_hard = losses.moco_loss([q1, q2], [k2, k1], queue, temperature=0.2,
                                 hard_negatives=hard, hard_negative_valid=valid)
    # Only the first query's rows that have a valid hard negative change.
    delta = (numpy_moco(q1, k2, queue, 0.2, hard, valid) - numpy_moco(q1, k2, queue, 0.2)) / 4
    assert float(with_hard - without) > 0.0
    np.testing.assert_allclose(with_hard - without, delta.sum(), rtol=1e-4)
    np.testing.assert_allclose(delta[valid == 0], 0.0, atol=1e-7)
    # SimCLR: the hard negative is one more candidate of the first view's anchors.
    z1, z2 = q1, q2
    got = losses.nt_xent_loss(z1, z2, temperature=0.5, hard_negatives=hard,
                              hard_negative_valid=valid)
    z = unit(np.concatenate([z1, z2]))
    sim = z @ z.T / 0.5
    np.fill_diagonal(sim, -np.inf)
    extra = np.full((8, 1), -np.inf)
    extra[:4, 0] = np.where(valid > 0, np.sum(unit(z1) * unit(hard), 1) / 0.5, -np.inf)
    logp = log_softmax(np.concatenate([sim, extra], 1))
    expected = -np.mean(logp[np.arange(8), np.concatenate([np.arange(4, 8), np.arange(4)])])
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def numpy_sinkhorn(scores, eps, iters):
    """SwAV appendix A.1, written on Q [K, B]."""
    q = np.exp(scores / eps).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def cosine_scores(rng, b, k, d=16):
    return (unit(rng.normal(size=(b, d))) @ unit(rng.normal(size=(k, d))).T).astype(np.float32)


def test_sinkhorn_matches_numpy_and_has_uniform_marginals(rng):
    scores = cosine_scores(rng, 64, 10)
    codes = losses.sinkhorn_knopp(scores, epsilon=0.05, num_iters=3).numpy()
    np.testing.assert_allclose(codes, numpy_sinkhorn(scores.astype(np.float64), 0.05, 3),
                               rtol=1e-3, atol=1e-6)
    plan = losses.sinkhorn_knopp(scores, epsilon=0.05, num_iters=50).numpy() / 64
    np.testing.assert_allclose(plan.sum(axis=1), 1 / 64, rtol=1e-5)  # samples: exact
    np.testing.assert_allclose(plan.sum(axis=0), 1 / 10, rtol=1e-2)  # prototypes: converged
    # Three iterations already move the prototype marginals close to uniform from far away.
    raw = np.exp(scores / 0.05)
    raw_marginals = (raw / raw.sum()).sum(axis=0)
    three = codes.sum(axis=0) / 64
    assert np.abs(three - 0.1).max() < 0.5 * np.abs(raw_marginals - 0.1).max()


def test_sinkhorn_sample_weight_drops_samples(rng):
    scores = cosine_scores(rng, 12, 5)
    weight = np.array([0] * 4 + [1] * 8, np.float32)
    codes = losses.sinkhorn_knopp(scores, sample_weight=weight).numpy()
    np.testing.assert_allclose(codes[:4], 0.0)
    np.testing.assert_allclose(codes[4:], losses.sinkhorn_knopp(scores[4:]).numpy(), rtol=1e-5)


def test_swav_loss_against_numpy(rng):
    scores = [cosine_scores(rng, 6, 4) for _ in range(3)]  # 2 large + 1 small view
    codes = {v: numpy_sinkhorn(scores[v].astype(np.float64), 0.05, 3).astype(np.float32)
             for v in (0, 1)}
    got = losses.swav_loss(scores, codes, temperature=0.1, code_views=(0, 1))
    terms = [-np.sum(codes[s] * log_softmax(scores[t] / 0.1), axis=1).mean()
             for s in (0, 1) for t in range(3) if t != s]
    np.testing.assert_allclose(got, np.mean(terms), rtol=1e-5)
