"""Verification metrics on hand-built score sets whose answers are known exactly, plus brute-force oracles."""

import itertools

import numpy as np
import pytest

from trainer.metrics import (
    auc,
    best_threshold,
    equal_error_rate,
    far_key,
    far_resolution,
    kfold_accuracy,
    make_folds,
    roc_curve,
    tar_at_far,
    threshold_at_far,
    verification_report,
)

SEPARABLE = (np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1]), np.array([1, 1, 1, 0, 0, 0], bool))
# Threshold 0.6 accepts 4 of 5 genuine (FRR 1/5) and 1 of 5 impostors (0.65): EER exactly 0.2 at a ROC vertex.
KNOWN_EER = (np.array([0.2, 0.6, 0.7, 0.8, 0.9, 0.1, 0.3, 0.4, 0.5, 0.65]), np.array([1] * 5 + [0] * 5, bool))


def test_perfectly_separable():
    scores, labels = SEPARABLE
    roc = roc_curve(scores, labels)
    assert auc(roc) == 1.0
    assert equal_error_rate(roc)[0] == 0.0
    threshold, accuracy = best_threshold(scores, labels)
    assert accuracy == 1.0 and 0.3 < threshold < 0.7
    assert tar_at_far(roc, 0.0) == (1.0, 0.7)
    assert tar_at_far(roc, 1e-3)[0] == 1.0


def test_all_equal_scores_are_chance():
    scores, labels = np.full(8, 0.5), np.array([1, 0] * 4, bool)
    roc = roc_curve(scores, labels)
    np.testing.assert_array_equal(roc.far, [0, 1])
    np.testing.assert_array_equal(roc.tar, [0, 1])
    assert auc(roc) == 0.5
    assert equal_error_rate(roc)[0] == pytest.approx(0.5)
    assert tar_at_far(roc, 1e-3)[0] == pytest.approx(1e-3)  # on the diagonal
    assert tar_at_far(roc, 1e-3)[1] == np.inf  # no deterministic threshold accepts any pair at that FAR
    assert best_threshold(scores, labels)[1] == 0.5


def test_known_eer_and_threshold():
    roc = roc_curve(*KNOWN_EER)
    eer, threshold = equal_error_rate(roc)
    assert eer == pytest.approx(0.2) and threshold == pytest.approx(0.6)


def test_eer_interpolates_within_a_tied_segment():
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    labels = np.array([1, 1, 0, 0], bool)
    roc = roc_curve(scores, labels)
    np.testing.assert_allclose(roc.far, [0, 0, 0.5, 1])
    np.testing.assert_allclose(roc.tar, [0, 0.5, 1, 1])
    # On the segment (0, .5)-(.5, 1): FAR = u/2 and 1 - TAR = (1 - u)/2 meet at u = .5, EER = .25.
    eer, threshold = equal_error_rate(roc)
    assert eer == pytest.approx(0.25) and threshold == pytest.approx(0.7)


def test_auc_matches_mann_whitney_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=300), 1)  # rounding makes many ties
    labels = rng.random(300) < 0.4
    scores[labels] += 0.5
    pos, neg = scores[labels], scores[~labels]
    u = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    assert auc(roc_curve(scores, labels)) == pytest.approx(u / (pos.size * neg.size))


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=200), 2)
    labels = rng.random(200) < 0.5
    scores[labels] += 0.8
    threshold, accuracy = best_threshold(scores, labels)
    brute = max(np.mean((scores >= t) == labels) for t in np.r_[scores, np.inf])
    assert accuracy == pytest.approx(brute)
    assert np.mean((scores >= threshold) == labels) == pytest.approx(accuracy)


def test_tar_at_far_interpolates_between_operating_points():
    # Two genuine and two impostor scores tie at 0.6, so the ROC has a diagonal from (0, .25) to (.5, .75).
    scores = np.array([0.9, 0.6, 0.6, 0.2, 0.6, 0.6, 0.3, 0.1])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    roc = roc_curve(scores, labels)
    np.testing.assert_allclose(roc.far, [0, 0, 0.5, 0.75, 0.75, 1])
    np.testing.assert_allclose(roc.tar, [0, 0.25, 0.75, 0.75, 1, 1])
    assert tar_at_far(roc, 0.25) == (pytest.approx(0.5), 0.9)  # halfway along the diagonal; 0.9 keeps FAR <= .25
    assert tar_at_far(roc, 0.5) == (0.75, 0.6)  # exactly on a point
    assert tar_at_far(roc, 0.8) == (pytest.approx(1.0), 0.2)  # the top of the vertical run at FAR .75
    assert tar_at_far(roc, 1.0) == (1.0, 0.1)


def test_threshold_at_far_counts_false_accepts():
    impostors = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    for far, accepted in [(1e-2, 10), (1e-3, 1), (1e-4, 0), (0.0, 0)]:
        threshold = threshold_at_far(impostors, far)
        assert int((impostors >= threshold).sum()) == accepted
        assert threshold <= impostors[-accepted - 1] + 1e-9 or accepted == 0
    assert far_resolution(1000) == 1e-3


def test_threshold_at_far_float_edge():
    impostors = np.linspace(0, 1, 3000)
    assert int((impostors >= threshold_at_far(impostors, 1e-3)).sum()) == 3  # 1e-3 * 3000 = 2.9999999999999996


def test_kfold_uses_other_folds_threshold():
    # Fold 1 separates at 0.5, folds 2 and 3 at 0.2: fold 1 tested with a threshold learned on 2 and 3 errs.
    scores = np.array([0.6, 0.4, 0.3, 0.1, 0.3, 0.1])
    labels = np.array([1, 0, 1, 0, 1, 0], bool)
    folds = np.array([1, 1, 2, 2, 3, 3])
    result = kfold_accuracy(scores, labels, folds)
    np.testing.assert_array_equal(result.folds, [1, 2, 3])
    assert 0.1 < result.thresholds[0] <= 0.3  # learned on folds 2 and 3
    assert result.accuracies[0] == 0.5  # 0.4 impostor accepted
    np.testing.assert_array_equal(result.accuracies[1:], [1.0, 1.0])
    assert result.mean == pytest.approx(5 / 6) and result.std == pytest.approx(np.std([0.5, 1, 1]))


def test_kfold_matches_brute_force_oracle():
    rng = np.random.default_rng(2)
    labels = rng.random(120) < 0.5
    scores = rng.normal(size=120) + labels
    folds = make_folds(labels, 4)
    result = kfold_accuracy(scores, labels, folds)
    for i, fold in enumerate(result.folds):
        train, test = folds != fold, folds == fold
        best = max(np.mean((scores[train] >= t) == labels[train]) for t in np.r_[scores[train], np.inf])
        assert np.mean((scores[train] >= result.thresholds[i]) == labels[train]) == pytest.approx(best)
        assert result.accuracies[i] == np.mean((scores[test] >= result.thresholds[i]) == labels[test])


def test_make_folds_is_stratified():
    labels = np.array([1] * 30 + [0] * 30, bool)
    folds = make_folds(labels, 10)
    for k in range(1, 11):
        assert (labels[folds == k]).sum() == 3 and (~labels[folds == k]).sum() == 3


@pytest.mark.parametrize("bad", [np.array([1, 1], bool), np.array([0, 0], bool)])
def test_one_class_is_an_error(bad):
    with pytest.raises(ValueError, match="both genuine and impostor"):
        roc_curve(np.array([0.1, 0.2]), bad)


def test_far_key():
    assert [far_key(f) for f in (1e-2, 1e-3, 1e-4, 5e-3)] == ["1e-2", "1e-3", "1e-4", "5e-3"]


def test_report_is_consistent():
    rng = np.random.default_rng(3)
    labels = np.array([1, 0] * 150, bool)
    scores = rng.normal(size=300) * 0.2 + labels * 0.5
    report = verification_report(scores, labels, make_folds(labels, 10))
    assert report["genuine_pairs"] == report["impostor_pairs"] == 150
    assert report["far_resolution"] == pytest.approx(1 / 150)
    assert report["fars_below_resolution"] == ["1e-3", "1e-4"]
    t = report["thresholds_at_far"]
    assert t["1e-2"] <= t["1e-3"] <= t["1e-4"]
    assert 0.5 < report["accuracy"] <= 1 and 0.5 < report["auc"] <= 1
    # Balanced classes: the best error (FAR + FRR) / 2 over all thresholds is at most its value at the EER point.
    assert 1 - report["accuracy_at_threshold"] <= report["eer"] + 1e-12
    assert report["accuracy"] <= report["accuracy_at_threshold"] + 1e-12 or report["accuracy_std"] > 0
