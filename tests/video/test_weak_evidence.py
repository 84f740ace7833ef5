"""Which weak faces of a track are embedded (MatchStage.select): at every detection in the track's first
`weak_eager_frames` frames, so a track of weak faces is decided soon after it appears; every `weak_every`-th
detection after that, so a track that stays undecided costs little."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.faces import Faces
from pipeline.core.frames import Frame
from pipeline.recognise.judge import Judged
from pipeline.recognise.quality import QualityVerdict
from pipeline.video.match_stage import WEAK_NOT_DUE, MatchStage
from pipeline.video.metrics import StageMetrics
from pipeline.video.track_stage import Tracked
from pipeline.video.tracker import Track, TrackAssignment

IMAGE = np.zeros((120, 160, 3), np.uint8)
FACES = Faces(np.array([[10, 10, 70, 70]], np.float32), np.zeros((1, 5, 2), np.float32), np.array([0.95]))


class WeakJudge:
    """Every face is weak evidence: usable (a crop), below the strict gates, weight 0.4."""

    def judge(self, image, faces, index) -> Judged:
        return Judged(np.zeros((2, 2, 3), np.uint8), QualityVerdict(False, "too blurred", {"sharpness": 20.0}), 0.4)


def embedded_frames(stage: MatchStage, track: Track, frames: range) -> list[int]:
    chosen = []
    for index in frames:
        item = Tracked(Frame("cam", index, index / 25, IMAGE), FACES,
                       (TrackAssignment(0, track, is_new=index == frames[0], needs_embedding=True),), (), ())
        if stage.select([item]):
            chosen.append(index)
    return chosen


@pytest.mark.parametrize(("eager", "expected"), [
    (0, [10, 13, 16, 19, 22, 25, 28, 31, 34, 37]),  # every 3rd detection from the start
    (12, [*range(10, 23), 25, 28, 31, 34, 37]),  # frames 10-21 (and the next): every detection
])
def test_weak_faces_are_embedded_at_every_detection_while_the_track_is_young(eager, expected):
    stage = MatchStage(WeakJudge(), matcher=None, metrics=StageMetrics(), weak_every=3, weak_eager_frames=eager)
    track = Track(id=1, camera="cam", box=FACES.xyxy[0], first_frame=10, last_frame=10)
    assert embedded_frames(stage, track, range(10, 40)) == expected
    assert stage.weak == len(expected) and stage.rejected[WEAK_NOT_DUE] == 30 - len(expected)


def test_a_remote_embedder_that_does_not_answer_leaves_the_faces_for_later(caplog):
    """No silent fallback and no crash: the batch is not recognised, counted, logged; the next one is."""
    from pipeline.core.errors import EngineUnavailable
    from pipeline.gallery.matcher import Match
    from pipeline.video.match_stage import UNAVAILABLE, Candidate

    class RemoteJudge(WeakJudge):
        down = True

        def embed(self, crops):
            if self.down:
                raise EngineUnavailable("cannot reach Triton model 'facestream' at triton:8000: refused")
            return np.ones((len(crops), 4), np.float32)

    class AnyMatcher:
        def match(self, embeddings):
            return [Match(None, None, 0.1, None, None, None) for _ in embeddings]

    judge = RemoteJudge()
    stage = MatchStage(judge, AnyMatcher(), StageMetrics())
    track = Track(id=1, camera="cam", box=FACES.xyxy[0], first_frame=0, last_frame=0)
    candidates = [Candidate(Frame("cam", 0, 0.0, IMAGE), track, np.zeros((2, 2, 3), np.uint8))] * 3
    with caplog.at_level("WARNING"):
        assert stage.recognise(candidates) == [] and stage.recognise(candidates) == []
    assert stage.rejected[UNAVAILABLE] == 6 and stage.embedded == 0
    assert len([r for r in caplog.records if "not recognised until it answers" in r.message]) == 1  # not per batch
    judge.down = False
    assert len(stage.recognise(candidates)) == 3 and stage.embedded == 3
