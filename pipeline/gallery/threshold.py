"""The open-set operating point: the match threshold for a gallery, from the model card's threshold curve.

The card maps per-comparison false-accept rates (FAR: one stranger's face vs one template) to cosine
thresholds, calibrated down to 1e-6 (`trainer calibrate`). What a deployment cares about is the chance
that a stranger is given *some* name, the false-positive identification rate (FPIR), and that grows with
the gallery. Treating comparisons as independent:

- a stranger vs an identity with k templates scored by `max` is a false accept when any template reaches
  the threshold: FAR_id = 1 - (1 - FAR)^k;
- vs N identities: FPIR = 1 - prod_i (1 - FAR_id,i) = 1 - (1 - FAR)^M, M = the sum of the k_i.

`operating_point(..., far="auto")` solves FAR = 1 - (1 - FPIR)^(1/M) for the target FPIR (`run.open_set_far`)
and reads the threshold off the card's curve, linearly in log10(FAR) between its calibrated points. It never
extrapolates: a FAR below the card's strictest gets the strictest threshold and a warning naming the FPIR
to expect. Under `mean_top2` (the mean of an identity's best two templates) a false accept needs two
templates near the threshold, not one; we count k_eff = max(1, k/2) chances per identity. That is an
approximation between the two extremes: a stranger's scores against one person's templates are strongly
correlated (k_eff -> 1), and if they were independent a mean of two would reach the threshold far more
rarely than one of k (k_eff << k). Independence across identities is an approximation too. Measured on LFW
people the model never saw (`python -m bench.openset`, target 1%, 1,620 strangers): `max` 1.11% (333 people,
1 template), 1.05% (163 x 2), 0.86% (113 x 3); `mean_top2` 0.62% (163 x 2), 0.49% (113 x 3): conservative.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold a matcher uses, and what it means for this gallery.

    `far` is the per-comparison false-accept rate of `threshold` on the card's curve (None for a
    `run.threshold` override outside the curve); `expected_fpir` the chance a stranger's face is given some
    name in a gallery of `identities` people (`comparisons` effective templates); `rule` how it was chosen:
    "fpir" (far=auto), "far" (a fixed card FAR) or "override" (run.threshold).
    """

    threshold: float
    far: float | None
    expected_fpir: float | None
    identities: int
    comparisons: float
    rule: str

    @property
    def far_label(self) -> str | None:
        """The FAR as reports print it: "1e-3" for a card key, "3.1e-05" for an interpolated one."""
        return None if self.far is None else _far_label(self.far)


def template_counts(snapshot: Any) -> list[int]:
    """Templates per identity of a gallery snapshot (identities without templates left out: they never match)."""
    counts = np.bincount(np.asarray(snapshot.owner, dtype=np.int64), minlength=len(snapshot.identity_ids))
    return [int(c) for c in counts if c > 0]


def threshold_from_card(card: Any, far: str | float = "1e-3", override: float | None = None) -> float:
    """The cosine threshold: `override` when given, else the card's calibrated value at `far`."""
    value = float(override) if override is not None else float(card.threshold_at(far))
    _check_cosine(value)
    return value


def effective_comparisons(templates_per_identity: Sequence[int], score: str = "max") -> float:
    """M in FPIR = 1 - (1 - FAR)^M: the sum of k (max) or of max(1, k/2) (mean_top2) over identities."""
    k = np.asarray(templates_per_identity, dtype=np.float64)
    if k.ndim != 1 or np.any(k < 1):
        raise ConfigError(f"templates per identity must be a list of counts >= 1, got {templates_per_identity!r}")
    if score == "max":
        return float(k.sum())
    if score == "mean_top2":
        return float(np.maximum(1.0, k / 2.0).sum())
    raise ConfigError(f"score must be 'max' or 'mean_top2', got {score!r}")


def fpir_of(far: float, comparisons: float) -> float:
    """1 - (1 - far)^M, computed without losing small values."""
    return -math.expm1(comparisons * math.log1p(-far))


def far_for_fpir(fpir: float, comparisons: float) -> float:
    """The per-comparison FAR at which M comparisons give `fpir`: 1 - (1 - fpir)^(1/M)."""
    return -math.expm1(math.log1p(-fpir) / max(comparisons, 1.0))


def card_curve(card: Any) -> tuple[np.ndarray, np.ndarray]:
    """(log10 FAR ascending, threshold) of the card's calibrated points."""
    if not card.thresholds:
        raise ConfigError(f"model card {card.model_id} has no calibrated thresholds; set run.threshold")
    points = sorted((float(key), float(value)) for key, value in card.thresholds.items())
    fars, thresholds = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    if np.any(fars <= 0) or np.any(fars >= 1):
        raise ConfigError(f"model card {card.model_id}: threshold keys must be FARs in (0, 1), got "
                          f"{sorted(card.thresholds)}")
    return np.log10(fars), thresholds


def threshold_at_far(card: Any, far: float) -> float:
    """The card's threshold at `far`, interpolated linearly in log10(FAR); `far` must lie on the curve."""
    log_far, thresholds = card_curve(card)
    x = math.log10(far)
    if not log_far[0] - 1e-9 <= x <= log_far[-1] + 1e-9:
        raise ConfigError(f"FAR {far:.3g} is outside model card {card.model_id}'s calibrated range "
                          f"{10 ** log_far[0]:.0e}..{10 ** log_far[-1]:.0e}")
    return float(np.interp(x, log_far, thresholds))


def far_at_threshold(card: Any, threshold: float) -> float | None:
    """The FAR of `threshold` on the card's curve (log-linear), None outside the curve."""
    log_far, thresholds = card_curve(card)
    order = np.argsort(thresholds)  # thresholds fall as FAR rises
    if not thresholds[order[0]] <= threshold <= thresholds[order[-1]]:
        return None
    return float(10 ** np.interp(threshold, thresholds[order], log_far[order]))


def operating_point(card: Any, far: str = "auto", open_set_far: float = 0.01,
                    templates_per_identity: Sequence[int] = (), score: str = "max",
                    override: float | None = None, quiet: bool = False) -> OperatingPoint:
    """The threshold for a gallery whose identities hold `templates_per_identity` templates (see the module notes).

    `far`: "auto" (hold FPIR at `open_set_far`) or a card key such as "1e-3"; `override`: a fixed threshold
    (run.threshold), whose FAR and FPIR are read off the card's curve when it lies on it. `quiet`: no log lines
    (callers that choose a point at every assignment, such as the unknown-people directory).
    """
    identities = len(templates_per_identity)
    m = effective_comparisons(templates_per_identity, score) if identities else 0.0
    if override is not None:
        threshold = threshold_from_card(card, override=override)
        per = far_at_threshold(card, threshold) if card.thresholds else None
        point = OperatingPoint(threshold, per, None if per is None else fpir_of(per, m), identities, m, "override")
    elif far != "auto":
        per = float(far)
        point = OperatingPoint(threshold_from_card(card, far), per, fpir_of(per, m), identities, m, "far")
    else:
        point = _auto(card, open_set_far, identities, m, quiet)
    if quiet:
        return point
    log.info("open-set operating point (%s): threshold %.4f, per-comparison FAR %s, expected FPIR %s for %d "
             "identities (%g effective templates, score %s)", point.rule, point.threshold, point.far_label,
             "n/a" if point.expected_fpir is None else f"{point.expected_fpir:.3g}", identities, m, score)
    return point


def _auto(card: Any, open_set_far: float, identities: int, m: float, quiet: bool = False) -> OperatingPoint:
    if not 0.0 < open_set_far < 1.0:
        raise ConfigError(f"open_set_far must be in (0, 1), got {open_set_far}")
    log_far, thresholds = card_curve(card)
    wanted = far_for_fpir(open_set_far, m)
    loosest, strictest = 10 ** log_far[-1], 10 ** log_far[0]
    if wanted >= loosest:  # small gallery: the loosest calibrated point already holds FPIR (no extrapolation up)
        per, threshold = loosest, float(thresholds[-1])
    elif wanted < strictest:
        per, threshold = strictest, float(thresholds[0])
        if not quiet:
            log.warning("gallery of %d identities needs per-comparison FAR %.2g for FPIR %.2g, below model card "
                        "%s's strictest calibrated FAR %s: using that threshold (%.4f), expect FPIR ~%.3g; calibrate "
                        "the model lower (python -m trainer calibrate)", identities, wanted, open_set_far,
                        card.model_id, _far_label(strictest), threshold, fpir_of(strictest, m))
    else:
        per, threshold = wanted, threshold_at_far(card, wanted)
    _check_cosine(threshold)
    return OperatingPoint(threshold, per, fpir_of(per, m), identities, m, "fpir")


def _check_cosine(value: float) -> None:
    if not -1.0 <= value <= 1.0:
        raise ConfigError(f"match threshold must be a cosine similarity in [-1, 1], got {value}")


def _far_label(far: float) -> str:
    mantissa, exponent = f"{far:.1e}".split("e")
    mantissa = mantissa.removesuffix(".0")
    return f"{mantissa}e{int(exponent)}"


class GalleryThreshold:
    """The operating point of a gallery that changes while it is matched: chosen again from the mirror's
    snapshot whenever people are enrolled or removed mid-run, so the stranger rate (FPIR) stays at its target
    as the gallery grows instead of keeping the looser threshold a smaller gallery had at start.

    `choose(templates_per_identity) -> OperatingPoint` is the run's rule (`operating_point` with its settings).
    """

    def __init__(self, source: Any, choose: Callable[[Sequence[int]], OperatingPoint]):
        self.source, self.choose = source, choose
        self._lock = threading.Lock()
        self._snapshot: Any = None
        self._point: OperatingPoint | None = None

    def current(self) -> OperatingPoint:
        snapshot = self.source.current()
        with self._lock:
            if snapshot is not self._snapshot or self._point is None:
                point = self.choose(template_counts(snapshot))
                if self._point is not None and point.threshold != self._point.threshold:
                    log.info("gallery now %d identities: threshold %.4f -> %.4f (expected FPIR %s)", point.identities,
                             self._point.threshold, point.threshold,
                             "n/a" if point.expected_fpir is None else f"{point.expected_fpir:.3g}")
                self._snapshot, self._point = snapshot, point
            return self._point
