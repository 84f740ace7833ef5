"""Recognition proper: judge the faces the tracker wants embedded, embed those that pass, match them.

Faces that fail the strict quality gates but pass the judge's evidence minimums are embedded too, as weak
evidence with a weight from their quality (`EvidenceGates`): they vote, but never confirm a name alone. Faces
below the minimums are not embedded at all: on crowd video the small background faces are most of the faces.
A track's weak faces are embedded at most every `weak_every`-th detection of it (strict faces every time they
are wanted): weak evidence rarely decides alone, and it is most of what the evidence minimums let through. The
weak faces of a track's first `weak_eager_frames` frames are the exception, embedded at every detection: a track
whose faces are all weak gathers the weight to be decided soon after it appears, for a bounded cost per track. A
track in doubt (its appearance gate fired) is the exception: its first usable face is embedded, weak or not.
The faces that pass, of every camera in the batch, are embedded in one batch and matched against the gallery
in one call.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import EngineUnavailable
from pipeline.core.frames import Frame
from pipeline.core.protocols import Matcher
from pipeline.gallery.matcher import Match
from pipeline.recognise.judge import FaceJudge
from pipeline.recognise.quality import face_quality
from pipeline.video.metrics import StageMetrics
from pipeline.video.track_stage import Tracked
from pipeline.video.tracker import Track

WEAK_NOT_DUE = "weak evidence, not due"  # a weak face within `weak_every` detections of the track's last one
UNAVAILABLE = "embedder unavailable"  # a remote embedder (Triton) did not answer: the faces wait for it
WARN_EVERY_S = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A face that passed the quality gates: where it came from, the track it will vote for, its crop."""

    frame: Frame
    track: Track
    crop: np.ndarray  # the embedder's aligned RGB crop
    verify: bool = False  # the track is decided: this face checks it is still the same person
    weight: float = 1.0  # the vote's weight from the face's quality (1: passed the strict gates)
    strong: bool = True  # passed the strict gates (weak evidence alone never confirms a name)
    quality: float = 0.0  # recognise.quality.face_quality: which faces of a track are worth keeping


@dataclass(frozen=True)
class Recognised:
    candidate: Candidate
    match: Match
    embedding: np.ndarray  # (dim,) the face's embedding (the track's appearance is made of these)


class MatchStage:
    """`select(tracked)` -> the candidates worth embedding; `recognise(candidates)` -> their matches."""

    def __init__(self, judge: FaceJudge, matcher: Matcher, metrics: StageMetrics, weak_every: int = 3,
                 weak_eager_frames: int = 25):
        self.judge = judge
        self.weak_every = int(weak_every)
        self.weak_eager_frames = int(weak_eager_frames)
        self._weak_due: dict[tuple[str, int], int] = {}  # (camera, track id) -> detections until a weak face is due
        self.matcher = matcher
        self.metrics = metrics
        self.embedded = 0
        self.weak = 0  # embedded as weak evidence (failed a strict gate, passed the minimums)
        self.verified = 0  # embedded to re-verify a decided track
        self.rejected: Counter[str] = Counter()  # quality gate reason -> faces not embedded
        self._warn_after = 0.0  # monotonic time of the next "embedder unavailable" warning

    def select(self, tracked: Sequence[Tracked]) -> list[Candidate]:
        candidates = []
        for item in tracked:
            for track in item.ended:
                self._weak_due.pop((track.camera, track.id), None)
            for a in item.assignments:
                key = (a.track.camera, a.track.id)
                wait = self._weak_due.get(key, 0)
                if wait > 0:
                    self._weak_due[key] = wait - 1
                if not a.needs_embedding:
                    continue
                judged = self.judge.judge(item.frame.image, item.faces, a.face_index)
                if judged.usable and not judged.ok:
                    if wait > 0 and not a.track.in_doubt:  # a doubt is settled by the first usable face
                        self.rejected[WEAK_NOT_DUE] += 1
                        continue
                    young = item.frame.index - a.track.first_frame < self.weak_eager_frames
                    self._weak_due[key] = 0 if young else self.weak_every - 1
                if judged.usable:
                    candidates.append(Candidate(item.frame, a.track, judged.crop, a.verify, judged.weight, judged.ok,
                                                face_quality(judged.verdict.measures)))
                    self.weak += not judged.ok
                    self.verified += a.verify
                else:
                    self.rejected[judged.verdict.reason] += 1
        return candidates

    def recognise(self, candidates: Sequence[Candidate]) -> list[Recognised]:
        """Embed and match; while a remote embedder does not answer, no face is recognised (detection and
        tracking go on, the tracks stay undecided and ask again), counted and logged every WARN_EVERY_S."""
        if not candidates:
            return []
        try:
            with self.metrics.time("embed", items=len(candidates)):
                embeddings = self.judge.embed([c.crop for c in candidates])
        except EngineUnavailable as exc:
            self.rejected[UNAVAILABLE] += len(candidates)
            if time.monotonic() >= self._warn_after:
                self._warn_after = time.monotonic() + WARN_EVERY_S
                log.warning("%s; faces are not recognised until it answers (%d so far)", exc,
                            self.rejected[UNAVAILABLE])
            return []
        self.embedded += len(candidates)
        with self.metrics.time("match", items=len(candidates)):
            matches = self.matcher.match(embeddings)
        return [Recognised(c, m, e) for c, m, e in zip(candidates, matches, embeddings, strict=True)]
