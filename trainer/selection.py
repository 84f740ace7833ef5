"""Which crops a run trains on: identity-disjoint from its validation folds, enough images per person."""

from __future__ import annotations

import logging

import numpy as np

from pipeline.core.errors import ConfigError
from trainer.config import DataConfig
from trainer.crops import CropCache
from trainer.pairs import read_pairs

log = logging.getLogger(__name__)


def holdout_identities(data: DataConfig) -> set[str]:
    """Every person named in the held-out folds of the pairs file (empty when nothing is held out)."""
    if not data.holdout_folds:
        return set()
    if data.holdout_pairs is None:
        raise ConfigError("data.holdout_folds is set but data.holdout_pairs (the pairs file) is not")
    pairs = read_pairs(data.holdout_pairs, images=".", folds=data.holdout_folds)
    return {path.parent.name for pair in pairs for path in (pair.first, pair.second)}


def training_indices(cache: CropCache, data: DataConfig) -> np.ndarray:
    """Crop indices whose identity is not held out and has at least `min_images` crops."""
    held_out = holdout_identities(data)
    names = cache.identities
    excluded = np.array([name in held_out for name in names], dtype=bool)
    counts = np.bincount(cache.labels, minlength=len(names))
    eligible = ~excluded & (counts >= data.min_images)
    indices = np.flatnonzero(eligible[cache.labels])
    if len(indices) == 0:
        raise ConfigError(f"no training crops left in {cache.folder}: {int(excluded.sum())} identities held out, "
                          f"none of the rest has {data.min_images}+ crops")
    log.info("training on %d crops of %d identities (%d identities held out, %d with too few images)",
             len(indices), int(eligible.sum()), int(excluded.sum()), int((~excluded & ~eligible).sum()))
    return indices
