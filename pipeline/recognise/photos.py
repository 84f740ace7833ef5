"""Recognition of still photos: every face, matched where it passes the quality gates (no tracks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.faces import Faces
from pipeline.core.protocols import Detector, Matcher
from pipeline.gallery.matcher import Match
from pipeline.recognise.judge import FaceJudge
from pipeline.recognise.quality import QualityVerdict, face_quality


@dataclass(frozen=True)
class Still:
    """One photo's faces; per face its Match (None: it failed the quality gates), verdict, and for the faces
    that were matched their embedding, aligned crop and quality (for the unknown-people clusters)."""

    faces: Faces
    matches: list[Match | None]
    verdicts: list[QualityVerdict]
    embeddings: dict[int, np.ndarray]
    crops: dict[int, np.ndarray]
    quality: dict[int, float]


def recognise_still(image: np.ndarray, detector: Detector, judge: FaceJudge, matcher: Matcher) -> Still:
    """Faces in one photo, a Match for each face that passed the quality gates (None otherwise), the verdicts."""
    faces = detector.detect_one(image)
    judged = [judge.judge(image, faces, i) for i in range(len(faces))]
    ok = [i for i, j in enumerate(judged) if j.ok]
    matches: list[Match | None] = [None] * len(faces)
    embeddings: dict[int, np.ndarray] = {}
    if ok:
        vectors = judge.embed([judged[i].crop for i in ok])
        for i, m, e in zip(ok, matcher.match(vectors), vectors, strict=True):
            matches[i], embeddings[i] = m, e
    return Still(faces, matches, [j.verdict for j in judged], embeddings, {i: judged[i].crop for i in ok},
                 {i: face_quality(judged[i].verdict.measures) for i in ok})
