"""Metric definitions of the evaluation suite against hand-worked values and numpy references."""

import json

import numpy as np
import pytest

from relicv2_tf.evaluation import analysis, backgrounds, knn, results, robustness, transfer


def test_top_k_accuracy_hand_worked():
    scores = np.array([
        [0.1, 0.5, 0.2, 0.0, 0.3, 0.9],  # ranking 5, 1, 4, 2, 0, 3
        [0.9, 0.1, 0.0, 0.2, 0.3, 0.4],  # ranking 0, 5, 4, 3, 1, 2
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # ranking 5, then ties 0..4 by index
    ])
    labels = np.array([5, 3, 4])
    top = results.top_k_predictions(scores, 5)
    np.testing.assert_array_equal(top[2], [5, 0, 1, 2, 3])
    assert results.top_k_accuracy(top, labels, 1) == pytest.approx(1 / 3)  # only row 0
    assert results.top_k_accuracy(top, labels, 5) == pytest.approx(2 / 3)  # row 2's 4 is 6th


def test_mean_per_class_accuracy_hand_worked():
    # class 0: 3 of 4 correct, class 1: 0 of 1, class 2: 1 of 1 -> mean (0.75 + 0 + 1) / 3.
    labels = np.array([0, 0, 0, 0, 1, 2])
    predictions = np.array([0, 0, 0, 2, 0, 2])
    assert results.mean_per_class_accuracy(predictions, labels, 4) == pytest.approx(1.75 / 3)
    # Plain top-1 weights examples, not classes: 4 / 6.
    metrics = results.classification_metrics(predictions[:, None], labels, 4)
    assert metrics["top1"] == pytest.approx(4 / 6)
    assert "top5" not in metrics  # only one prediction per row


def test_write_result_json_and_summary(tmp_path):
    line = results.write_result(str(tmp_path), "linear_eval", {"top1": 0.5, "top5": 0.75,
                                                               "num_examples": 8},
                                details={"array": np.arange(3)}, print_summary=False)
    assert line == "relicv2 linear_eval: top1=0.5000 top5=0.7500 num_examples=8"
    record = json.loads((tmp_path / "linear_eval.json").read_text())
    assert record["metrics"]["top5"] == 0.75 and record["details"]["array"] == [0, 1, 2]
    assert not list(tmp_path.glob("*.tmp"))


def test_knn_matches_numpy_brute_force():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 8))
    train_labels = rng.integers(0, 4, 60)
    query = rng.normal(size=(15, 8))
    k, temperature = 7, 0.1
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    qn = query / np.linalg.norm(query, axis=1, keepdims=True)
    expected = np.zeros((15, 4))
    for i, q in enumerate(qn):
        similarity = tn @ q
        for j in np.argsort(-similarity)[:k]:
            expected[i, train_labels[j]] += np.exp(similarity[j] / temperature)
    scores = knn.knn_predict(train, train_labels, query, 4, k=k, temperature=temperature)
    np.testing.assert_allclose(scores, expected, rtol=1e-4)


def test_class_concentration_matches_brute_force():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(30, 5))
    labels = rng.integers(0, 3, 30)
    ratios = analysis.class_concentration_ratios(features, labels, l2_normalize=False,
                                                 chunk_size=7)
    expected = []
    for i in range(30):
        d = np.linalg.norm(features - features[i], axis=1)
        same = (labels == labels[i]) & (np.arange(30) != i)
        expected.append(d[labels != labels[i]].mean() / d[same].mean())
    np.testing.assert_allclose(ratios, expected, rtol=1e-8)


def test_nearest_neighbours_exclude_self_and_block_diagonal():
    features = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    index, distances = analysis.nearest_neighbours(features, k=2)
    assert not np.any(index == np.arange(6)[:, None])
    np.testing.assert_array_equal(index[0], [1, 2])
    np.testing.assert_allclose(distances[0], [0.1, 0.2])
    assert analysis.neighbour_label_agreement(index, labels) == 1.0


def test_class_mapping_for_200_class_subsets():
    wnids = robustness.imagenet_wnids()
    assert len(wnids) == 1000 and wnids == sorted(wnids)
    subset = [wnids[999], wnids[1], wnids[500]]  # any order: folders are sorted by sources
    mapping = robustness.class_index_mapping(sorted(subset), wnids)
    np.testing.assert_array_equal(mapping, [1, 500, 999])
    np.testing.assert_array_equal(robustness.class_index_mapping(["0", "10", "2"], wnids),
                                  [0, 10, 2])  # ImageNetV2 index folders, sorted as strings
    with pytest.raises(ValueError, match="neither an ImageNet wnid"):
        robustness.class_index_mapping(["not_a_wnid"], wnids)


def test_zero_shot_restriction_to_subset_changes_prediction():
    import keras
    head = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5, use_bias=False)])
    # Logits = features; the overall best class (4) is outside the subset {1, 2}.
    head.layers[0].set_weights([np.array(
        [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1]], np.float32)])
    features = np.array([[1.0, 0.5, 9.0], [0.1, 0.7, 9.0]], np.float32)
    local_labels = np.array([0, 1])  # subset-local labels of folders [w1, w2]
    full = robustness.zero_shot_metrics(head, features, local_labels, label_map=[1, 2])
    restricted = robustness.zero_shot_metrics(head, features, local_labels, label_map=[1, 2],
                                              class_subset=[1, 2])
    assert full["top1"] == 0.0 and restricted["top1"] == 1.0


def test_label_sets_accuracy_objectnet_style():
    top = np.array([[3, 1], [2, 0], [7, 8]])
    sets = [[1, 3], [5], [8]]
    assert robustness.accuracy_with_label_sets(top, sets, 1) == pytest.approx(1 / 3)
    assert robustness.accuracy_with_label_sets(top, sets, 2) == pytest.approx(2 / 3)


def test_imagenet_c_mean_over_corruptions_and_severities():
    per_set = {f"imagenet_c/{c}_{s}": {"top1": 0.1 * s + (0.05 if c == "fog" else 0.0)}
               for c in ("fog", "snow") for s in (1, 2)}
    summary = robustness.imagenet_c_summary(per_set)
    assert summary["imagenet_c/fog"] == pytest.approx(0.2)
    assert summary["imagenet_c/snow"] == pytest.approx(0.15)
    assert summary["imagenet_c_mean_top1"] == pytest.approx(0.175)
    assert summary["imagenet_c_num_sets"] == 4


def test_bg_gap_and_superclass_mapping():
    assert backgrounds.bg_gap({"mixed_same": 0.8, "mixed_rand": 0.65}) == pytest.approx(0.15)
    import keras
    head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, use_bias=False)])
    head.layers[0].set_weights([np.eye(4, dtype=np.float32)])
    superclass_of = np.array([0, 0, 1, -1])  # class 3 belongs to no super-class
    features = np.array([[0, 1, 0, 5], [0, 0, 2, 9], [3, 0, 0, 0]], np.float32)
    # Row 0: best mapped class 1 -> super 0; row 1: class 2 -> 1; row 2: class 0 -> 0.
    assert backgrounds.superclass_top1(head, features, [0, 1, 1], superclass_of) == \
        pytest.approx(2 / 3)


def test_background_variants_composition():
    rng = np.random.default_rng(0)
    n, size = 6, 8
    labels = np.array([0, 0, 1, 1, 2, 2])
    images = rng.uniform(0.2, 1.0, size=(n, size, size, 3)).astype(np.float32)
    masks = np.zeros((n, size, size, 1), np.float32)
    masks[:, 2:6, 2:6] = 1.0
    variants = backgrounds.make_variants(images, masks, labels, seed=0)
    assert set(variants) == set(backgrounds.VARIANTS + backgrounds.GREY_VARIANTS)
    np.testing.assert_array_equal(variants["original"], images)
    assert np.all(variants["only_fg"][:, 0, 0] == 0.0)
    for name in ("mixed_same", "mixed_rand", "mixed_next"):  # foreground untouched
        np.testing.assert_array_equal(variants[name][:, 2:6, 2:6], images[:, 2:6, 2:6])
    donors = backgrounds.choose_donors(labels, "same", np.random.default_rng(0))
    assert np.all(labels[donors] == labels) and np.all(donors != np.arange(n))
    donors = backgrounds.choose_donors(labels, "next", np.random.default_rng(0))
    np.testing.assert_array_equal(labels[donors], (labels + 1) % 3)
    # Grey fills: one level per image, on the Only-FG background and in the donor's hole, with
    # the mixed variants' own donors; the foreground untouched.
    fg = masks[0, ..., 0] == 1
    for i in range(n):
        level = variants["only_fg_grey"][i][~fg]
        assert np.all(level == level[0, 0]) and 0.0 <= level[0, 0] <= 1.0
        np.testing.assert_array_equal(variants["only_fg_grey"][i][fg], images[i][fg])
    for name in ("mixed_same", "mixed_rand"):
        np.testing.assert_array_equal(variants[f"{name}_grey"][:, 2:6, 2:6], images[:, 2:6, 2:6])
        # Outside the donor's hole the background is the same donor's as in the plain variant.
        np.testing.assert_array_equal(variants[f"{name}_grey"][:, 0, 0], variants[name][:, 0, 0])
    # Adding the grey variants left the five published ones as they were (donors drawn first).
    rng = np.random.default_rng(0)
    same = backgrounds.choose_donors(labels, "same", rng)
    np.testing.assert_array_equal(
        variants["mixed_same"], images * masks
        + backgrounds.donor_backgrounds(images, masks)[same] * (1 - masks))
    # The donor's own foreground is replaced by its mean background colour.
    filled = backgrounds.donor_backgrounds(images, masks)
    expected = images[0][masks[0, ..., 0] == 0].mean(axis=0)
    np.testing.assert_allclose(filled[0, 3, 3], expected, rtol=1e-5)


def test_transfer_split_helpers():
    train, val = transfer.holdout_indices(50, 0.2, seed=3)
    assert len(val) == 10 and len(np.intersect1d(train, val)) == 0
    assert len(np.union1d(train, val)) == 50
    grid = transfer.sweep_grid({"learning_rate": [0.1, 1.0], "weight_decay": [0.0, 1e-4, 1e-3]})
    assert len(grid) == 6 and {"learning_rate": 1.0, "weight_decay": 1e-4} in grid
    assert transfer.TRANSFER_DATASETS["oxford_iiit_pet"]["metric"] == transfer.MEAN_PER_CLASS
    assert transfer.TRANSFER_DATASETS["cifar10"]["metric"] == transfer.TOP1


def test_holdout_examples_partition_a_dataset():
    import tensorflow as tf
    examples = tf.data.Dataset.from_tensor_slices((tf.range(10), tf.range(10) % 2))
    fit, validation = transfer.holdout_examples(examples, 0.2)
    fit_ids = [int(x) for x, _ in fit]
    validation_ids = [int(x) for x, _ in validation]
    assert validation_ids == [0, 5]
    assert sorted(fit_ids + validation_ids) == list(range(10))
