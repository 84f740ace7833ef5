"""Recognition of still photos: every face, matched where it passes the quality gates (no tracks)."""

from __future__ import annotations

import numpy as np

from pipeline.core.faces import Faces
from pipeline.core.protocols import Detector, Matcher
from pipeline.gallery.matcher import Match
from pipeline.recognise.judge import FaceJudge


def recognise_still(image: np.ndarray, detector: Detector, judge: FaceJudge, matcher: Matcher) -> tuple[Faces, list[Match | None], list]:
    """Faces in one photo, a Match for each face that passed the quality gates (None otherwise), the verdicts."""
    faces = detector.detect_one(image)
    if len(faces) == 0:
        return faces, [], []
    judged = [judge.judge(image, faces, i) for i in range(len(faces))]
    ok = [i for i, j in enumerate(judged) if j.ok]
    matches: list[Match | None] = [None] * len(faces)
    if ok:
        for i, m in zip(ok, matcher.match(judge.embed([judged[i].crop for i in ok])), strict=True):
            matches[i] = m
    return faces, matches, [j.verdict for j in judged]
