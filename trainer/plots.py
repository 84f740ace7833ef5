"""PNG plots of verification results: the ROC on a log FAR axis with operating points, and score histograms.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch),
so plotting works headless and never touches the state of a caller that uses pyplot itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

log = logging.getLogger(__name__)

Point = tuple[float, float]  # (FAR, TAR)


def draw_roc(ax, far: np.ndarray, tar: np.ndarray, points: Mapping[str, Point] | None = None,
             negatives: int | None = None) -> None:
    """ROC on a log FAR axis; FAR 0 (not drawable on a log axis) is drawn at half the FAR resolution."""
    far, tar = np.asarray(far, dtype=float), np.asarray(tar, dtype=float)
    positive = far[far > 0]
    floor = 0.5 / negatives if negatives else (positive.min() / 2 if positive.size else 1e-4)
    ax.plot(np.maximum(far, floor), tar, color="tab:blue", lw=1.5, label="ROC")
    for (label, (x, y)), marker in zip((points or {}).items(), "osD^vP*X"):
        ax.plot(max(x, floor), y, marker, ms=7, label=f"{label}: FAR {x:.2g}, TAR {y:.3f}")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(min(0.5, float(tar[np.searchsorted(far, floor):].min(initial=1.0))) - 0.02, 1.005)
    ax.axvline(2 * floor, color="grey", lw=0.8, ls=":", label=f"FAR resolution {2 * floor:.1e}")
    ax.set_xlabel("false accept rate (FAR, log)")
    ax.set_ylabel("true accept rate (TAR)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def draw_scores(ax, scores: np.ndarray, labels: np.ndarray, thresholds: Mapping[str, float] | None = None) -> None:
    """Histograms of genuine and impostor cosine similarities, with thresholds as vertical lines."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    bins = np.linspace(scores.min(), scores.max(), 60)
    ax.hist(scores[labels], bins=bins, alpha=0.6, color="tab:green", label=f"same person ({labels.sum()})")
    ax.hist(scores[~labels], bins=bins, alpha=0.6, color="tab:red", label=f"different people ({(~labels).sum()})")
    for (label, value), style in zip((thresholds or {}).items(), ("-", "--", "-.", ":", "-")):
        ax.axvline(value, color="black", ls=style, lw=1, label=f"{label}: {value:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("pairs")
    ax.legend(loc="upper left", fontsize=8)


def save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(path))
    log.info("wrote %s", path)
    return path


def plot_roc(far: np.ndarray, tar: np.ndarray, path: str | Path, *, points: Mapping[str, Point] | None = None,
             negatives: int | None = None, title: str | None = None) -> Path:
    """Write a ROC-only PNG."""
    fig = Figure(figsize=(6.5, 5), layout="constrained")
    ax = fig.add_subplot()
    draw_roc(ax, far, tar, points, negatives)
    ax.set_title(title or "ROC")
    return save(fig, path)


def operating_points(result: dict) -> dict[str, Point]:
    """The points worth marking, from an `evaluate(..., roc=True)` result."""
    scores, labels = np.asarray(result["scores"]), np.asarray(result["labels"], dtype=bool)

    def at(threshold: float) -> Point:
        accepted = scores >= threshold
        return float(accepted[~labels].mean()), float(accepted[labels].mean())

    points = {f"VAL@FAR={result['far']:g}": (result["far"], result["val_at_far"]),
              f"EER {result['eer']:.3f}": (result["eer"], 1 - result["eer"]),
              f"best accuracy (t={result['threshold']:.3f})": at(result["threshold"])}
    for key, threshold in result["thresholds_at_far"].items():
        points[f"t@FAR {key} (t={threshold:.3f})"] = at(threshold)
    return points


def plot_evaluation(result: dict, path: str | Path, title: str | None = None) -> Path:
    """Two panels from an `evaluate(..., roc=True)` result: the ROC with operating points, and the scores."""
    if "roc" not in result or "scores" not in result:
        raise ValueError("plot_evaluation needs evaluate(..., roc=True): the result has no ROC or scores")
    fig = Figure(figsize=(12, 5), layout="constrained")
    roc_ax, score_ax = fig.subplots(1, 2)
    draw_roc(roc_ax, result["roc"]["far"], result["roc"]["tar"], operating_points(result),
             negatives=result["impostor_pairs"])
    roc_ax.set_title(f"ROC: AUC {result['auc']:.4f}, EER {result['eer']:.3f}")
    thresholds = {"best accuracy": result["threshold"],
                  **{f"FAR {k}": v for k, v in result["thresholds_at_far"].items()}}
    draw_scores(score_ax, result["scores"], result["labels"], thresholds)
    score_ax.set_title(f"accuracy {result['accuracy']:.4f} ± {result['accuracy_std']:.4f} "
                       f"({result['pairs']} pairs, {result['folds']} folds)")
    if title:
        fig.suptitle(title)
    return save(fig, path)
