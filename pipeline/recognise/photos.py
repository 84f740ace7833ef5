"""Recognition of still photos: every face, matched where it passes the quality gates (no tracks)."""

from __future__ import annotations

import numpy as np

from pipeline.core.faces import Faces
from pipeline.gallery.matcher import Match


def recognise_still(image: np.ndarray, detector, embedder, matcher, gates) -> tuple[Faces, list[Match | None], list]:
    """Faces in one photo, a Match for each face that passed the quality gates (None otherwise), the verdicts."""
    faces = detector.detect_one(image)
    if len(faces) == 0:
        return faces, [], []
    crops = embedder.crops(image, faces)
    verdicts = [gates.check(image, i, faces, crops[i]) for i in range(len(faces))]
    ok = [i for i, v in enumerate(verdicts) if v.ok]
    matches: list[Match | None] = [None] * len(faces)
    if ok:
        for i, m in zip(ok, matcher.match(embedder.embed(crops[ok])), strict=True):
            matches[i] = m
    return faces, matches, verdicts
