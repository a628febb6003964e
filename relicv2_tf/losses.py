"""Self-supervised objectives as pure functions of embeddings.

ReLIC / ReLICv2 (Mitrovic et al. 2021; Tomasev et al. 2022, eq. 3-4) as docs/OBJECTIVE.md writes
it out: for an online anchor view a and a target view b over the global batch of B examples,
S[i, j] = <o(a_i), t(b_j)> / tau with o, t L2-normalised; each row i has the candidate set
C_i = {i} U N_i (N_i: K other examples drawn uniformly without replacement, or all B - 1);

    p[i, c] = softmax_{c in C_i} S[i, c]       r[i, c] = softmax_{c in C_i} S[c, i]
    contrastive = mean_i -log p[i, i]           invariance = mean_i KL(sg(r[i]) || p[i])
    loss = c * contrastive + alpha * invariance  (c, alpha: the "contrast scale" and "invariance
                                                  scale" of ReLICv2 appendix D.1)

Multi-view (`relicv2_loss`): the appendix E listing sums the pair loss over all L x L large
(anchor, target) pairs, a == b included, and the S x L small-large pairs, and divides by
(L + S) x L (`view_pairs`; `loss.same_view_pairs=False` keeps only a != b).

The invariance term's second distribution r is an interpretation (docs/OBJECTIVE.md): eq. 2's
symbols are lost from our text, and the listing's `loss_relicv2(ol_i, tl_j, n_e)` receives one
online and one target batch only, so r must come from the same pair. We take the same
similarities seen from the target side (softmax over the transposed similarity matrix, restricted
to the row's candidates), as does a third-party ReLIC port (filipbasara0/relic:
`log_softmax(logits, 1)` against `softmax(logits, 0).T`). ReLIC v1 (Mitrovic et al. 2021, eq. 2)
instead anchors both distributions on the online network with the two views swapped, which needs
the online embedding of the target view.

Distributed use: every replica owns `B_local` rows starting at `row_offset` of the gathered
batch. Only the local online rows o(a_i) carry gradients (targets are stop-gradient, and so is
r), so the gathered tensors (`*_all`) need no gradient and the per-replica row sums add up to the
single-device loss exactly.
"""

from __future__ import annotations

import tensorflow as tf


def l2_normalize(x):
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1)


def sample_candidates(batch_size: int, num_negatives: int, seed, row_offset=0, num_rows=None):
    """Candidate indices [num_rows, K + 1]: column 0 is the positive (the row's own index),
    columns 1..K are K distinct other indices drawn uniformly (top-K of random keys).

    The random keys are drawn for the whole global batch and sliced, so every replica draws
    the same candidates for a row as a single device would.
    """
    num_rows = batch_size if num_rows is None else num_rows
    keys = tf.random.stateless_uniform([batch_size, batch_size], seed=seed)
    keys = keys[row_offset:row_offset + num_rows]
    rows = tf.range(num_rows) + row_offset
    self_mask = tf.one_hot(rows, batch_size, on_value=True, off_value=False)
    keys = tf.where(self_mask, tf.constant(-1.0), keys)  # never pick itself as a negative
    _, negatives = tf.math.top_k(keys, k=num_negatives)
    return tf.concat([rows[:, None], negatives], axis=1)


def relic_pair_loss_rows(online, target, online_all, target_all, *, temperature: float,
                         row_offset=0, candidates=None):
    """Per-row ReLIC loss terms for the local rows; see the module docstring.

    Args:
      online: [b, D] online embeddings of the anchor view for the local rows (gradients flow).
      target: [b, D] target embeddings of the target view for the local rows.
      online_all / target_all: [B, D] the same over the global batch (no gradient needed).
      row_offset: index of the first local row in the global batch.
      candidates: [b, K+1] int candidate indices with the positive in column 0, or None for
        "every example of the batch is a candidate".
    Returns:
      (contrastive [b], invariance [b]).
    """
    online = l2_normalize(online)
    target = tf.stop_gradient(l2_normalize(target))
    online_all = tf.stop_gradient(l2_normalize(online_all))
    target_all = tf.stop_gradient(l2_normalize(target_all))
    # Row view S[i, :] (anchor a_i against all targets) and column view S[:, i] (all anchors
    # against target b_i), both [b, B].
    anchor_logits = tf.matmul(online, target_all, transpose_b=True) / temperature
    column_logits = tf.matmul(target, online_all, transpose_b=True) / temperature
    num_rows = tf.shape(online)[0]
    if candidates is None:
        positive = tf.range(num_rows) + row_offset
        batch_size = tf.shape(target_all)[0]
        positive_onehot = tf.one_hot(positive, batch_size)
    else:
        anchor_logits = tf.gather(anchor_logits, candidates, batch_dims=1)
        column_logits = tf.gather(column_logits, candidates, batch_dims=1)
        positive_onehot = tf.one_hot(tf.zeros([num_rows], tf.int32), tf.shape(candidates)[1])
    log_p = tf.nn.log_softmax(anchor_logits, axis=-1)
    log_r = tf.stop_gradient(tf.nn.log_softmax(column_logits, axis=-1))
    contrastive = -tf.reduce_sum(positive_onehot * log_p, axis=-1)
    invariance = tf.reduce_sum(tf.exp(log_r) * (log_r - log_p), axis=-1)
    return contrastive, invariance


def view_pairs(num_large: int, num_small: int, same_view: bool = True):
    """(anchor, target) pairs of ReLICv2's appendix E listing: every large anchor with every large
    target, the same view included (a == b: one augmented view through the online and the target
    network), then every small anchor with every large target; L x L + S x L = (L + S) x L pairs.
    `same_view=False` drops the L pairs a == b (an earlier reading of eq. 4, kept to compare).
    Anchors index large views 0..L-1 then small views L..L+S-1."""
    pairs = [(a, b) for a in range(num_large) for b in range(num_large) if same_view or a != b]
    pairs += [(num_large + s, b) for s in range(num_small) for b in range(num_large)]
    return pairs


def relicv2_loss(online_views, target_views, *, num_large: int, temperature: float,
                 alpha: float, contrast_scale: float = 1.0, num_negatives=None, seed=None,
                 global_batch_size=None, online_views_all=None, target_views_all=None,
                 row_offset=0, same_view_pairs: bool = True):
    """Multi-view ReLICv2 loss (eq. 4 and the appendix E listing): the sum of the pair losses
    over `view_pairs(L, S, same_view_pairs)` divided by their number ((L + S) x L for the
    listing's set).

    Args:
      online_views: list of L + S tensors [b, D]: online embeddings of large then small views.
      target_views: list of L tensors [b, D]: target embeddings of the large views.
      num_large: L.  temperature: tau.  alpha: invariance weight.  contrast_scale: weight c of
        the contrastive term.
      num_negatives: K sampled negatives per example; None (or K >= B - 1) = all B - 1 others.
      seed: [2] int; the negatives are drawn once per step and shared by all pairs.
      global_batch_size: B; defaults to the local batch (single device).
      online_views_all / target_views_all: the views gathered over replicas ([B, D] each).
      row_offset: first global row owned by this replica.
      same_view_pairs: include the L pairs whose anchor and target are the same large view (the
        listing); False = anchor != target only.
    Returns:
      {"loss", "contrastive", "invariance"}: sums over local rows divided by B (so that the
      per-replica values add up to the global mean), averaged over pairs; the two terms are
      unweighted, loss = contrast_scale * contrastive + alpha * invariance.
    """
    online_views_all = online_views_all or online_views
    target_views_all = target_views_all or target_views
    local_batch = tf.shape(online_views[0])[0]
    batch_size = global_batch_size or int(online_views[0].shape[0])
    candidates = None
    if num_negatives is not None and 0 <= num_negatives < batch_size - 1:
        if seed is None:
            raise ValueError("relicv2_loss: num_negatives needs a seed ([2] int tensor).")
        candidates = sample_candidates(batch_size, num_negatives, seed, row_offset, local_batch)
    pairs = view_pairs(num_large, len(online_views) - num_large, same_view_pairs)
    contrastive_sum, invariance_sum = 0.0, 0.0
    for anchor, target in pairs:
        contrastive, invariance = relic_pair_loss_rows(
            online_views[anchor], target_views[target], online_views_all[anchor],
            target_views_all[target], temperature=temperature, row_offset=row_offset,
            candidates=candidates)
        contrastive_sum += tf.reduce_sum(contrastive)
        invariance_sum += tf.reduce_sum(invariance)
    scale = 1.0 / (len(pairs) * batch_size)
    contrastive = contrastive_sum * scale
    invariance = invariance_sum * scale
    return {"loss": contrast_scale * contrastive + alpha * invariance,
            "contrastive": contrastive, "invariance": invariance}


# =============================================================================================
# Baselines: BYOL, SimCLR / MoCo-v2 (InfoNCE), SwAV. Same distributed convention as above: each
# replica computes its local rows against gathered candidates, and losses are sums over local
# rows divided by the global batch B, so replicas' values (and gradients) add up to the global
# mean.

MASKED_LOGIT = -1e9  # logit of a candidate that must not count (finite: no inf * 0 in gradients)


def byol_loss_rows(prediction, target):
    """BYOL (Grill et al. 2020, eq. 2): ||q - z'||^2 of L2-normalised vectors = 2 - 2 cos, per
    row [b]. `target` is the target projection (stop-gradient here)."""
    prediction = l2_normalize(prediction)
    target = tf.stop_gradient(l2_normalize(target))
    return 2.0 - 2.0 * tf.reduce_sum(prediction * target, axis=-1)


def byol_loss(predictions, targets, *, global_batch_size=None):
    """Symmetrised BYOL loss over views: every online prediction of view a regresses the target
    projection of every other view b (for 2 views, L(1->2) + L(2->1), BYOL eq. 2-3).

    Args:
      predictions: list of V tensors [b, D], online predictions q(g(f(v))).
      targets: list of V tensors [b, D], target projections g'(f'(v)).
      global_batch_size: B (defaults to the local batch).
    Returns:
      scalar: sum over pairs of (sum over local rows) / B.
    """
    batch_size = global_batch_size or int(predictions[0].shape[0])
    total = 0.0
    for a, prediction in enumerate(predictions):
        for b, target in enumerate(targets):
            if a != b:
                total += tf.reduce_sum(byol_loss_rows(prediction, target))
    return total / batch_size


def infonce_rows(anchor, positive, negatives, *, temperature: float, negatives_mask=None,
                 hard_negative=None, hard_negative_valid=None):
    """InfoNCE (van den Oord et al. 2018) per row: -log of the softmax of the positive among
    [positive, negatives, hard negative], similarities being cosines / temperature.

    Args:
      anchor: [b, D] anchors (queries); positive: [b, D] their positives (keys).
      negatives: [N, D] candidates shared by all rows (other examples, or MoCo's queue).
      negatives_mask: optional bool [b, N]; False drops that candidate for that row (SimCLR:
        the anchor itself and its positive, which also appear in the gathered batch).
      hard_negative: optional [b, D] one extra negative per row (BG_Swaps, Ryali et al. 2021:
        another foreground on the anchor's background).
      hard_negative_valid: optional float/bool [b]; rows where it is 0 ignore the hard negative.
    Returns:
      [b] losses.
    """
    anchor = l2_normalize(anchor)
    positive = l2_normalize(positive)
    negatives = l2_normalize(negatives)
    positive_logit = tf.reduce_sum(anchor * positive, axis=-1, keepdims=True) / temperature
    negative_logits = tf.matmul(anchor, negatives, transpose_b=True) / temperature
    if negatives_mask is not None:
        negative_logits = tf.where(negatives_mask, negative_logits, MASKED_LOGIT)
    logits = [positive_logit, negative_logits]
    if hard_negative is not None:
        hard_logit = tf.reduce_sum(anchor * l2_normalize(hard_negative), axis=-1) / temperature
        if hard_negative_valid is not None:
            hard_logit = tf.where(tf.cast(hard_negative_valid, tf.bool), hard_logit, MASKED_LOGIT)
        logits.append(hard_logit[:, None])
    return -tf.nn.log_softmax(tf.concat(logits, axis=1), axis=1)[:, 0]


def nt_xent_loss(view1, view2, *, temperature: float, view1_all=None, view2_all=None,
                 row_offset=0, global_batch_size=None, hard_negatives=None,
                 hard_negative_valid=None):
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1): each of the 2B projections is an anchor whose
    positive is the other view of its example and whose 2B - 2 negatives are the other examples'
    projections of both views; the loss is the mean over the 2B anchors.

    Args:
      view1, view2: [b, D] local projections of the two views.
      view1_all, view2_all: [B, D] the same gathered over replicas (SimCLR back-propagates
        through the negatives too, so gather them WITH gradient); default: the local ones.
      row_offset: global index of the first local row.
      hard_negatives: optional [b, D] BG_Swaps hard negative of each example; it is an extra
        negative for the view-1 anchor, whose background it shares.
      hard_negative_valid: optional [b] mask of the rows that have one.
    Returns:
      scalar: (sum of the 2b local anchor losses) / (2 B).
    """
    view1_all = view1 if view1_all is None else view1_all
    view2_all = view2 if view2_all is None else view2_all
    batch_size = global_batch_size or int(view1.shape[0])
    candidates = tf.concat([view1_all, view2_all], axis=0)  # [2B, D]
    rows = tf.range(tf.shape(view1)[0]) + row_offset
    total_candidates = tf.shape(candidates)[0]
    # Neither the example's own view-1 nor its view-2 projection is a negative (2B - 2 remain).
    own = (tf.one_hot(rows, total_candidates, on_value=True, off_value=False)
           | tf.one_hot(rows + total_candidates // 2, total_candidates, on_value=True,
                        off_value=False))
    keep = tf.logical_not(own)
    loss1 = infonce_rows(view1, view2, candidates, temperature=temperature, negatives_mask=keep,
                         hard_negative=hard_negatives, hard_negative_valid=hard_negative_valid)
    loss2 = infonce_rows(view2, view1, candidates, temperature=temperature, negatives_mask=keep)
    return (tf.reduce_sum(loss1) + tf.reduce_sum(loss2)) / (2.0 * batch_size)


def moco_loss(queries, keys, queue, *, temperature: float, global_batch_size=None,
              hard_negatives=None, hard_negative_valid=None):
    """MoCo-v2 InfoNCE (He et al. 2020, eq. 1; Chen et al. 2020b): query q of one view, its
    positive key k from the momentum encoder, negatives = the queue of past keys.

    Args:
      queries: list of P [b, D] online projections; keys: list of P [b, D] momentum-encoder
        projections, keys[p] being the positive of queries[p] (stop-gradient). The symmetrised
        loss is queries = [q1, q2], keys = [k2, k1]; the original asymmetric one [q1], [k2].
      queue: [K, D] negatives (stop-gradient).
      hard_negatives: optional [b, D] momentum-encoder projections of the BG_Swaps hard
        negatives, an extra negative for queries[0] (the view whose background they share).
      hard_negative_valid: optional [b] mask of the rows that have one.
    Returns:
      scalar: sum over pairs of (sum over local rows) / B.
    """
    batch_size = global_batch_size or int(queries[0].shape[0])
    queue = tf.stop_gradient(queue)
    total = 0.0
    for p, (query, key) in enumerate(zip(queries, keys)):
        rows = infonce_rows(
            query, tf.stop_gradient(key), queue, temperature=temperature,
            hard_negative=None if p or hard_negatives is None else tf.stop_gradient(
                hard_negatives),
            hard_negative_valid=None if p else hard_negative_valid)
        total += tf.reduce_sum(rows)
    return total / batch_size


def _identity(x):
    return x


def sinkhorn_knopp(scores, *, epsilon: float = 0.05, num_iters: int = 3, sample_weight=None,
                   all_reduce_sum=_identity):
    """SwAV's equipartitioned soft codes (Caron et al. 2020, section 3.1 and appendix A.1).

    Q = exp(scores / epsilon) is alternately normalised so that its rows (prototypes, K) sum to
    1/K and its columns (samples, B) to 1/B; after `num_iters` iterations the columns are exact
    and the rows approximately uniform. Returned codes are Q * B, transposed: [b, K], each
    sample's row summing to 1.

    Args:
      scores: [b, K] prototype scores of the local samples: cosines in [-1, 1] (no gradient).
      sample_weight: optional [b] 0/1; samples with weight 0 are left out of the transport
        problem (rows of zeros; used for a SwAV queue that is not filled yet).
      all_reduce_sum: sums a tensor over replicas (identity on one device); the problem is
        solved over the global batch of sum(sample_weight) samples.
    """
    scores = tf.stop_gradient(tf.cast(scores, tf.float32))
    num_prototypes = tf.cast(tf.shape(scores)[1], tf.float32)
    weight = tf.ones_like(scores[:, :1]) if sample_weight is None else tf.cast(
        tf.reshape(sample_weight, [-1, 1]), tf.float32)
    num_samples = all_reduce_sum(tf.reduce_sum(weight))
    # Scores are cosines (<= 1): shifting by the same constant 1 / epsilon on every replica
    # cancels in the first normalisation and keeps exp within float32 range for small epsilon.
    q = tf.exp((scores - 1.0) / epsilon) * weight  # [b, K]; Q^T of the paper
    q = q / all_reduce_sum(tf.reduce_sum(q))
    for _ in range(num_iters):
        prototype_sums = all_reduce_sum(tf.reduce_sum(q, axis=0, keepdims=True))  # [1, K]
        q = q / tf.maximum(prototype_sums, 1e-30) / num_prototypes
        sample_sums = tf.reduce_sum(q, axis=1, keepdims=True)  # [b, 1], local
        q = q / tf.maximum(sample_sums, 1e-30) / num_samples
    return q * num_samples


def swav_loss(scores, codes, *, temperature: float, code_views, global_batch_size=None):
    """SwAV swapped prediction (Caron et al. 2020, eq. 1-2): the code of view s predicts every
    other view t through -sum_k q_s[k] log softmax(z_t . c / temperature)[k].

    Args:
      scores: list of V [b, K] prototype scores z_t . c (gradients flow).
      codes: dict view index -> [b, K] Sinkhorn codes of that view (no gradient).
      code_views: the views whose codes are computed (SwAV: the two large crops).
    Returns:
      scalar: average over (s, t != s) pairs of (sum over local rows) / B.
    """
    batch_size = global_batch_size or int(scores[0].shape[0])
    total, num_pairs = 0.0, 0
    for s in code_views:
        for t, view_scores in enumerate(scores):
            if t == s:
                continue
            log_p = tf.nn.log_softmax(tf.cast(view_scores, tf.float32) / temperature, axis=-1)
            total += -tf.reduce_sum(tf.stop_gradient(codes[s]) * log_p)
            num_pairs += 1
    return total / (num_pairs * batch_size)
