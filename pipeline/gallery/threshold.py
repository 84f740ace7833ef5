"""The open-set operating point: the match threshold a model card gives at a false-accept rate."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)


def threshold_from_card(card: Any, far: str | float = "1e-3", override: float | None = None) -> float:
    """The cosine threshold: `override` when given, else the card's calibrated value at `far`."""
    value = float(override) if override is not None else float(card.threshold_at(far))
    if not -1.0 <= value <= 1.0:
        raise ConfigError(f"match threshold must be a cosine similarity in [-1, 1], got {value}")
    return value


def choose_far(card, far: str, open_set_far: float, identities: int) -> str:
    """`far` itself, or for "auto" the loosest card FAR with FAR x identities <= open_set_far (see RunConfig)."""
    if far != "auto":
        return far
    calibrated = sorted(card.thresholds, key=float, reverse=True)  # loosest first
    if not calibrated:
        raise ConfigError(f"model card {card.model_id} has no calibrated thresholds; set run.threshold")
    for key in calibrated:
        if float(key) * max(identities, 1) <= open_set_far:
            return key
    log.warning("gallery of %d identities: even the card's strictest threshold (FAR %s) lets a stranger match "
                "someone with probability ~%.2g per face (wanted %.2g); expect false accepts, or calibrate the "
                "model at a lower FAR", identities, calibrated[-1], float(calibrated[-1]) * identities, open_set_far)
    return calibrated[-1]
