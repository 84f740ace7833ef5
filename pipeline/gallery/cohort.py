"""Cohort score normalisation: is this face like the enrolled person, or merely like everyone?

Some faces (and some photos: soft light, a frontal pose, a common look) sit close to many people, so a
stranger's best cosine to the gallery is high for reasons that say nothing about identity. With a gallery of
one photo per person, those strangers set the threshold that holds the stranger rate (FPIR), and every
enrolled person pays for it. The matcher therefore scores a face by how much more it resembles an enrolled
person than it resembles its nearest strangers:

    score = cosine - weight x (mean of the face's top-k cosines to the cohort - centre)

The cohort is a fixed set of faces the model never trained on (`trainer cohort`: the "calibration" half of
LFW's one-image people, embedded by this model), `centre` the cohort's own mean top-k cosine so that scores
stay near cosine values, and the thresholds of this score are calibrated on other unseen people (`trainer
calibrate`, the card's `cohort.thresholds`). This is the query side of adaptive cohort normalisation (AS-norm,
Matejka et al. 2017): one (cohort x dim) product per face, and the ranking of identities is unchanged, so the
search backends need nothing new. On held-out LFW people (`bench.openset`, one photo each) it lifts DIR at
FPIR 1% from 82.0% to ~89% for v2, and from 76.4% to ~87% for v1 (models/MODEL_CARD.md); the cohort's own
faces are never among the people it is calibrated or measured on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import ConfigError
from pipeline.core.model_card import ModelCard, ScoreCohort, fingerprint_file


@dataclass(frozen=True)
class Cohort:
    """The card's cohort, loaded: `offsets(faces)` is what the matcher subtracts from each face's scores."""

    vectors: np.ndarray  # (size, dim) float32 unit rows
    k: int
    weight: float
    centre: float

    def offsets(self, faces: np.ndarray) -> np.ndarray:
        """(n,) weight x (mean top-k cosine to the cohort - centre) of unit rows (n, dim)."""
        faces = np.asarray(faces, dtype=np.float32)
        if faces.ndim != 2 or faces.shape[1] != self.vectors.shape[1]:
            raise ConfigError(f"cohort of {self.vectors.shape[1]}-d faces cannot score faces of shape {faces.shape}")
        if len(faces) == 0:
            return np.zeros(0, dtype=np.float64)
        return self.weight * (top_k_mean(faces, self.vectors, self.k) - self.centre)


def top_k_mean(faces: np.ndarray, cohort: np.ndarray, k: int, leave_one_out: bool = False) -> np.ndarray:
    """Mean of each face's k highest cosines to the cohort (float64). `leave_one_out`: `faces` is the cohort
    itself and each face's cosine to itself is skipped."""
    sims = faces @ cohort.T
    if leave_one_out:
        np.fill_diagonal(sims, -np.inf)
    return np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:].astype(np.float64).mean(axis=1)


def cohort_path(card_path: str | Path, spec: ScoreCohort) -> Path:
    return Path(card_path).parent / spec.file


def load_cohort(card: ModelCard, card_path: str | Path) -> Cohort | None:
    """The card's cohort (None when it has none); ConfigError naming the problem when its file is missing,
    altered or of the wrong shape: a matcher must not silently score without the normalisation it was
    calibrated for."""
    spec = card.cohort
    if spec is None:
        return None
    path = cohort_path(card_path, spec)
    if not path.is_file():
        raise ConfigError(f"model card {card.model_id}: its cohort file {path} is missing")
    if fingerprint_file(path) != spec.sha256:
        raise ConfigError(f"model card {card.model_id}: cohort file {path} does not match the card's sha256 "
                          f"{spec.sha256} (altered or replaced; re-run python -m trainer cohort)")
    try:
        vectors = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ConfigError(f"model card {card.model_id}: cohort file {path} is not a numpy array ({exc})") from None
    if vectors.shape != (spec.size, card.embedding_dim) or vectors.dtype != np.float32:
        raise ConfigError(f"model card {card.model_id}: cohort {path} must be float32 ({spec.size}, "
                          f"{card.embedding_dim}), got {vectors.dtype} {vectors.shape}")
    return Cohort(vectors, spec.k, spec.weight, spec.centre)
