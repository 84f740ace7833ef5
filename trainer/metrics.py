"""Verification metrics on similarity scores (higher = more likely the same person), pure NumPy.

`labels` are booleans (True = same person). A pair is accepted as "same" when `score >= threshold`.
FAR (false accept rate) = accepted impostors / impostors; TAR (true accept rate, FaceNet's VAL) =
accepted genuine pairs / genuine pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAMED_FARS = (1e-2, 1e-3, 1e-4)


@dataclass(frozen=True)
class Roc:
    """ROC points from the strictest threshold (+inf: nothing accepted) down to the loosest (everything accepted).

    `far` and `tar` never decrease; point i is what `score >= thresholds[i]` gives. Tied scores form one point.
    """

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    positives: int
    negatives: int


@dataclass(frozen=True)
class KFoldAccuracy:
    accuracies: np.ndarray  # per fold, with the threshold chosen on the other folds
    thresholds: np.ndarray  # per fold
    folds: np.ndarray  # the fold ids, in the order of `accuracies`

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        """Population standard deviation over folds (ddof=0), as the LFW results tables and FaceNet report it."""
        return float(self.accuracies.std())


def _check(scores: np.ndarray, labels: np.ndarray, need_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must be 1-D of the same length, got {scores.shape} and {labels.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"scores must be finite; {int((~np.isfinite(scores)).sum())} are not")
    labels = labels.astype(bool)
    if need_both and (labels.all() or not labels.any()):
        raise ValueError(f"need both genuine and impostor pairs, got {int(labels.sum())} genuine "
                         f"of {labels.size}")
    return scores, labels


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> Roc:
    scores, labels = _check(scores, labels)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    # The last index of each run of equal scores: a threshold cannot split ties.
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.cumsum(y)[ends]
    fp = np.cumsum(~y)[ends]
    p, n = int(y.sum()), int((~y).sum())
    return Roc(far=np.r_[0.0, fp / n], tar=np.r_[0.0, tp / p], thresholds=np.r_[np.inf, s[ends]],
               positives=p, negatives=n)


def auc(roc: Roc) -> float:
    """Area under the ROC (trapezoids, so tied scores count half, as in the Mann-Whitney U statistic)."""
    return float(np.sum(np.diff(roc.far) * (roc.tar[1:] + roc.tar[:-1]) / 2))


def equal_error_rate(roc: Roc) -> tuple[float, float]:
    """(EER, threshold): where FAR = 1 - TAR on the ROC polyline, interpolated within the crossing segment."""
    gap = roc.far - (1.0 - roc.tar)  # -1 at the start, +1 at the end, never decreasing
    i = int(np.searchsorted(gap, 0.0, side="left"))  # first point with gap >= 0; i >= 1
    if gap[i] == 0.0:
        return float(roc.far[i]), float(roc.thresholds[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    rate = roc.far[i - 1] + t * (roc.far[i] - roc.far[i - 1])
    lo, hi = roc.thresholds[i], roc.thresholds[i - 1]
    threshold = lo if not np.isfinite(hi) else hi + t * (lo - hi)
    return float(rate), float(threshold)


def tar_at_far(roc: Roc, far: float) -> tuple[float, float]:
    """(TAR, threshold) at a target FAR.

    TAR is read off the ROC polyline by linear interpolation between the two operating points around `far`
    (the straight segment between two thresholds is reachable by choosing between them at random), so it
    does not jump with the step function. The threshold is that of the last real operating point whose
    FAR does not exceed the target: the deterministic threshold that honours it. With n impostor pairs FARs
    below 1/n cannot be measured (see `far_resolution`).
    """
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far}")
    i = int(np.searchsorted(roc.far, far, side="right")) - 1  # last point with FAR <= target
    threshold = float(roc.thresholds[i])
    if roc.far[i] == far or i == roc.far.size - 1:
        j = i  # exactly on a point (take the highest TAR there: vertical runs share one FAR)
        return float(roc.tar[j]), threshold
    f0, f1, t0, t1 = roc.far[i], roc.far[i + 1], roc.tar[i], roc.tar[i + 1]
    return float(t0 + (far - f0) / (f1 - f0) * (t1 - t0)), threshold


def far_resolution(negatives: int) -> float:
    """The smallest non-zero FAR that `negatives` impostor pairs can measure (one false accept)."""
    if negatives < 1:
        raise ValueError("need at least one impostor pair")
    return 1.0 / negatives


def threshold_at_far(impostor_scores: np.ndarray, far: float) -> float:
    """The lowest threshold at which at most `far` of the impostor scores are accepted (`score >= threshold`).

    With n impostors this allows floor(far * n) false accepts; when far < 1/n that is zero, so the threshold
    sits just above the highest impostor score: an estimate limited by the data, not a measured FAR.
    """
    neg = np.sort(np.asarray(impostor_scores, dtype=np.float64))[::-1]
    if neg.ndim != 1 or neg.size == 0:
        raise ValueError(f"need a non-empty 1-D array of impostor scores, got shape {neg.shape}")
    if not 0.0 <= far < 1.0:
        raise ValueError(f"far must be in [0, 1), got {far}")
    allowed = int(np.floor(far * neg.size + 1e-9))  # tolerance: 1e-3 * 3000 is 2.9999999999999996 in floats
    return float(np.nextafter(neg[allowed], np.inf))


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    scores, labels = _check(scores, labels, need_both=False)
    return float(np.mean((scores >= threshold) == labels))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy, found exactly over every distinct cut of the sorted scores.

    Candidate thresholds are midpoints between neighbouring distinct scores, plus one below and one above
    all of them. Among equally accurate cuts the middle one (by rank) is taken, so a threshold learned on
    training folds sits inside the best range rather than at its edge.
    """
    scores, labels = _check(scores, labels, need_both=False)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    # Cut k accepts the first k groups of tied scores (k = 0: accept nothing).
    tp = np.r_[0, np.cumsum(y)[ends]]
    tn = (~y).sum() - np.r_[0, np.cumsum(~y)[ends]]
    correct = tp + tn
    best = np.flatnonzero(correct == correct.max())
    k = int(best[len(best) // 2])
    distinct = s[ends]
    if k == 0:
        threshold = distinct[0] + max(1e-6, abs(distinct[0]) * 1e-6)
    elif k == distinct.size:
        threshold = distinct[-1] - max(1e-6, abs(distinct[-1]) * 1e-6)
    else:
        threshold = (distinct[k - 1] + distinct[k]) / 2
    return float(threshold), float(correct[k] / s.size)


def make_folds(labels: np.ndarray, k: int) -> np.ndarray:
    """Fold ids 1..k, stratified: the i-th genuine pair goes to fold i mod k + 1, likewise the impostors."""
    labels = np.asarray(labels, dtype=bool)
    if not 2 <= k <= labels.size:
        raise ValueError(f"k must be between 2 and the number of pairs ({labels.size}), got {k}")
    folds = np.empty(labels.size, dtype=np.int64)
    for group in (labels, ~labels):
        idx = np.flatnonzero(group)
        folds[idx] = np.arange(idx.size) % k + 1
    return folds


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> KFoldAccuracy:
    """Accuracy on each fold with the threshold chosen (by `best_threshold`) on all the other folds."""
    scores, labels = _check(scores, labels, need_both=False)
    folds = np.asarray(folds)
    if folds.shape != scores.shape:
        raise ValueError(f"folds must have shape {scores.shape}, got {folds.shape}")
    ids = np.unique(folds)
    if ids.size < 2:
        raise ValueError(f"k-fold accuracy needs at least 2 folds, got {ids.size}")
    accuracies, thresholds = [], []
    for fold in ids:
        test = folds == fold
        threshold, _ = best_threshold(scores[~test], labels[~test])
        thresholds.append(threshold)
        accuracies.append(accuracy_at(scores[test], labels[test], threshold))
    return KFoldAccuracy(np.asarray(accuracies), np.asarray(thresholds), ids)


def far_key(far: float) -> str:
    """1e-3 -> "1e-3" (the key used for named FARs in reports and model cards)."""
    mantissa, exponent = f"{far:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def verification_report(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray, far: float = 1e-3,
                        named_fars: tuple[float, ...] = NAMED_FARS) -> dict:
    """Every headline number of the LFW protocol, as plain floats and lists (JSON-ready)."""
    scores, labels = _check(scores, labels)
    roc = roc_curve(scores, labels)
    kfold = kfold_accuracy(scores, labels, folds)
    threshold, train_accuracy = best_threshold(scores, labels)
    eer, eer_threshold = equal_error_rate(roc)
    val, val_threshold = tar_at_far(roc, far)
    impostors = scores[~labels]
    resolution = far_resolution(impostors.size)
    return {
        "accuracy": kfold.mean, "accuracy_std": kfold.std,
        "fold_accuracies": kfold.accuracies.tolist(), "fold_thresholds": kfold.thresholds.tolist(),
        "threshold": threshold, "accuracy_at_threshold": train_accuracy,
        "val_at_far": val, "val_threshold": val_threshold, "far": far,
        "auc": auc(roc), "eer": eer, "eer_threshold": eer_threshold,
        "thresholds_at_far": {far_key(f): threshold_at_far(impostors, f) for f in named_fars},
        "far_resolution": resolution,
        "fars_below_resolution": [far_key(f) for f in dict.fromkeys((far, *named_fars)) if f < resolution],
        "genuine_pairs": roc.positives, "impostor_pairs": roc.negatives,
    }
