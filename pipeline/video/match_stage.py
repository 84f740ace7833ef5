"""Recognition proper: judge the faces the tracker wants embedded, embed those that pass, match them.

Faces that fail the quality gates are not embedded at all: the voter would discard their match anyway, and on
crowd video the small background faces are most of the faces. The faces that pass, of every camera in the
batch, are embedded in one batch and matched against the gallery in one call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.core.frames import Frame
from pipeline.core.protocols import Matcher
from pipeline.gallery.matcher import Match
from pipeline.recognise.judge import FaceJudge
from pipeline.video.metrics import StageMetrics
from pipeline.video.track_stage import Tracked
from pipeline.video.tracker import Track


@dataclass(frozen=True)
class Candidate:
    """A face that passed the quality gates: where it came from, the track it will vote for, its crop."""

    frame: Frame
    track: Track
    crop: np.ndarray  # the embedder's aligned RGB crop


@dataclass(frozen=True)
class Recognised:
    candidate: Candidate
    match: Match


class MatchStage:
    """`select(tracked)` -> the candidates worth embedding; `recognise(candidates)` -> their matches."""

    def __init__(self, judge: FaceJudge, matcher: Matcher, metrics: StageMetrics):
        self.judge = judge
        self.matcher = matcher
        self.metrics = metrics
        self.embedded = 0
        self.rejected: Counter[str] = Counter()  # quality gate reason -> faces not embedded

    def select(self, tracked: Sequence[Tracked]) -> list[Candidate]:
        candidates = []
        for item in tracked:
            for a in item.assignments:
                if not a.needs_embedding:
                    continue
                judged = self.judge.judge(item.frame.image, item.faces, a.face_index)
                if judged.ok:
                    candidates.append(Candidate(item.frame, a.track, judged.crop))
                else:
                    self.rejected[judged.verdict.reason] += 1
        return candidates

    def recognise(self, candidates: Sequence[Candidate]) -> list[Recognised]:
        if not candidates:
            return []
        with self.metrics.time("embed", items=len(candidates)):
            embeddings = self.judge.embed([c.crop for c in candidates])
        self.embedded += len(candidates)
        with self.metrics.time("match", items=len(candidates)):
            matches = self.matcher.match(embeddings)
        return [Recognised(c, m) for c, m in zip(candidates, matches, strict=True)]
