"""Choosing a few diverse faces of one person: which of a video's accepted frames become templates.

Templates that span pose, expression and lighting raise open-set recall (a live face finds one template like it);
near-duplicates add nothing to recall, only Redis load and matching work, and bias a person's votes towards the
moment most of the clip was filmed. So: start with the best face, then keep adding the face farthest (in cosine)
from every face kept so far, never one within `duplicate_above` of a kept face (farthest-point sampling).

"Best" is the caller's quality score: enrolment (`enrollment.Enroller`) passes `quality.face_quality` of the
gates' measures (face size, sharpness, frontal pose, detection score), the ranking sightings and naming use too.
"""

from __future__ import annotations

import numpy as np

DUPLICATE_ABOVE = 0.97  # cosine at or above which two faces of one clip count as the same template
UNIT_TOLERANCE = 1e-3  # |norm - 1| allowed of an embedding row (float32 rounding of an L2-normalised output)


def pick_diverse(embeddings: np.ndarray, quality: np.ndarray, k: int,
                 duplicate_above: float = DUPLICATE_ABOVE) -> list[int]:
    """Indices of up to `k` rows of `embeddings` (n, d), unit rows, in pick order (`k=0`: every non-duplicate).

    The first pick is the row of highest `quality` (n,); each next one maximises its minimum cosine distance to
    the rows already picked (ties: higher quality, then lower index). A row whose cosine to a picked row is
    >= `duplicate_above` is never picked, so fewer than `k` come back when fewer non-duplicates exist.
    """
    vectors = np.asarray(embeddings, np.float64)
    scores = np.asarray(quality, np.float64)
    _validate(vectors, scores, k, duplicate_above)
    if not len(vectors):
        return []
    wanted = len(vectors) if k == 0 else min(k, len(vectors))
    similarity = vectors @ vectors.T
    picked = [int(np.argmax(scores))]  # argmax: the first of equal qualities
    nearest = similarity[picked[0]].copy()  # each row's highest cosine to a picked row
    taken = np.zeros(len(vectors), bool)
    taken[picked[0]] = True
    while len(picked) < wanted:
        open_rows = np.flatnonzero(~taken & (nearest < duplicate_above))
        if not len(open_rows):
            break
        # lexsort: last key first; lowest nearest cosine, then highest quality, then lowest index (stable).
        best = int(open_rows[np.lexsort((-scores[open_rows], nearest[open_rows]))[0]])
        picked.append(best)
        taken[best] = True
        np.maximum(nearest, similarity[best], out=nearest)
    return picked


def _validate(vectors: np.ndarray, scores: np.ndarray, k: int, duplicate_above: float) -> None:
    if vectors.ndim != 2:
        raise ValueError(f"embeddings must have shape (n, d), got {vectors.shape}")
    if scores.shape != (len(vectors),):
        raise ValueError(f"quality must have shape ({len(vectors)},) to match embeddings {vectors.shape}, "
                         f"got {scores.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an integer >= 0 (0 keeps every non-duplicate), got {k!r}")
    if not 0.0 < duplicate_above <= 1.0:
        raise ValueError(f"duplicate_above must be a cosine in (0, 1], got {duplicate_above}")
    if not (np.isfinite(vectors).all() and np.isfinite(scores).all()):
        raise ValueError("embeddings and quality must be finite")
    norms = np.linalg.norm(vectors, axis=1)
    if len(norms) and np.abs(norms - 1.0).max() > UNIT_TOLERANCE:
        worst = int(np.argmax(np.abs(norms - 1.0)))
        raise ValueError(f"embeddings must be unit rows (L2-normalised), row {worst} has norm {norms[worst]:.4f}")
