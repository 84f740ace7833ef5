"""Re-verification of decided tracks: a face that turns out to be someone else splits the track (the old
appearance ends, a new track is recognised afresh), never relabels it; two people swapping places do not
swap names."""

from __future__ import annotations

import numpy as np
import pytest
from video_fakes import RecordingBus

from pipeline.core.faces import Faces
from pipeline.core.frames import Frame
from pipeline.gallery.matcher import Match
from pipeline.recognise.judge import Judged
from pipeline.recognise.quality import QualityVerdict
from pipeline.video.metrics import StageMetrics
from pipeline.video.stages import Detected, RecogniseStage
from pipeline.video.tracker import IouTracker, Track
from pipeline.video.verification import (
    APPEARANCE_DROP,
    IDENTITY_DROP,
    OTHER_IDENTITY,
    Verifier,
)

IMAGE = np.zeros((120, 480, 3), np.uint8)
PEOPLE = {95: ("ann", 0), 96: ("bob", 1), 97: (None, 2)}  # detector score (x100) -> (gallery name, embedding axis)


class PersonJudge:
    """Every face passes; its crop (and so its embedding) says who it is, read from the face's score."""

    def judge(self, image, faces: Faces, index: int) -> Judged:
        who = round(float(faces.score[index]) * 100)
        return Judged(np.full((2, 2, 3), who, np.uint8), QualityVerdict(True, None, {}))

    def embed(self, crops) -> np.ndarray:
        out = np.zeros((len(crops), 3))
        for row, crop in enumerate(crops):
            out[row, PEOPLE[int(crop[0, 0, 0])][1]] = 1.0
        return out


class AxisMatcher:
    def match(self, embeddings: np.ndarray) -> list[Match]:
        names = ["ann", "bob", None]
        return [Match(names[int(e.argmax())], None, 0.9 if names[int(e.argmax())] else 0.5, None, None, None)
                for e in embeddings]


def faces(*placed: tuple[int, int]) -> Faces:
    """(x, who) per face: a 60 px box at x, the person `who` (a key of PEOPLE)."""
    boxes = np.array([[x, 20, x + 60, 80] for x, _ in placed], np.float32)
    return Faces(boxes, np.zeros((len(placed), 5, 2), np.float32), np.array([w / 100 for _, w in placed], np.float32))


def run(script: list[Faces], reverify_every: int = 1) -> tuple[RecogniseStage, RecordingBus, list]:
    bus = RecordingBus()
    stage = RecogniseStage(PersonJudge(), AxisMatcher(), bus, StageMetrics(),
                           lambda camera: IouTracker(confirm_hits=1, reverify_every=reverify_every, camera=camera))
    shown = []
    for i, found in enumerate(script):
        out, = stage.process(Detected((Frame("cam", i, i / 25, IMAGE),), (found,), (0.0,)))
        shown.append(out.shown)
    stage.finish()
    return stage, bus, shown


def test_a_different_person_in_the_box_splits_the_track():
    _, bus, shown = run([faces((10, 95))] * 4 + [faces((10, 96))] * 4)
    types = [(e.type, e.track, e.identity, e.extra.get("reason")) for e in bus.events]
    assert types[:3] == [("track_started", 1, None, None), ("identity_confirmed", 1, "ann", None),
                         ("track_ended", 1, "ann", "split")]
    assert types[3:5] == [("track_started", 2, None, None), ("identity_confirmed", 2, "bob", None)]
    assert bus.events[2].extra["split_reason"] == OTHER_IDENTITY and bus.events[3].extra["split_from"] == 1
    # Never relabelled: track 1 only ever shows ann, and bob's face never shows ann.
    names = [(f.track, f.identity) for frame in shown for f in frame]
    assert set(names) == {(1, None), (1, "ann"), (2, None), (2, "bob")}
    assert [(f.track, f.identity) for f in shown[4]] == [(2, None)]  # recognised afresh: unknown until voted
    assert [(f.track, f.identity) for f in shown[-1]] == [(2, "bob")]


def test_two_people_swapping_places_do_not_swap_names():
    _, _, shown = run([faces((10, 95), (300, 96))] * 4 + [faces((10, 96), (300, 95))] * 4)
    for frame in shown[4:]:
        by_x = {int(f.box[0]): f.identity for f in frame}
        assert by_x[10] in (None, "bob") and by_x[300] in (None, "ann")
    assert {int(f.box[0]): f.identity for f in shown[-1]} == {10: "bob", 300: "ann"}


def test_the_same_person_reverified_keeps_the_track():
    stage, bus, _ = run([faces((10, 95))] * 8)
    assert [e.type for e in bus.events] == ["track_started", "identity_confirmed", "track_ended"]
    assert stage.matching.embedded == 8 and stage.events.splits == 0


def test_reverify_every_n_detections_only():
    stage, _, _ = run([faces((10, 95))] * 9, reverify_every=4)
    assert stage.matching.embedded == 3 + 1  # until confirmed (3 votes: frames 0-2), then the 4th detection after


def decided(identity: str | None, similarity: float, appearance=(1.0, 0.0, 0.0)) -> Track:
    return Track(1, "cam", np.zeros(4, np.float32), state="confirmed", identity=identity, similarity=similarity,
                 identity_confirmed=True, appearance=np.array(appearance, np.float32), appearance_weight=3.0)


@pytest.mark.parametrize("track, embedding, match, strong, reason", [
    (decided("ann", 0.9), [1, 0, 0], Match("ann", None, 0.9, "bob", 0.5, 0.4), True, None),
    (decided("ann", 0.9), [1, 0, 0], Match("bob", None, 0.9, "ann", 0.5, 0.4), False, OTHER_IDENTITY),
    (decided("ann", 0.9), [1, 0, 0], Match(None, None, 0.7, "bob", 0.6, 0.1), True, IDENTITY_DROP),
    (decided("ann", 0.9), [1, 0, 0], Match(None, None, 0.7, "bob", 0.6, 0.1), False, None),  # weak: no drop test
    (decided("ann", 0.9), [1, 0, 0], Match(None, None, 0.8, "ann", 0.79, 0.01), True, None),  # bob best, ann 0.79
    (decided(None, 0.4), [0, 1, 0], Match(None, None, 0.4, None, None, None), True, APPEARANCE_DROP),
    (decided(None, 0.4), [0.8, 0.6, 0], Match(None, None, 0.4, None, None, None), True, None),
    (decided(None, 0.4), [1, 0, 0], Match("ann", None, 0.9, None, None, None), True, None),  # voter's business
])
def test_verifier_reasons(track, embedding, match, strong, reason):
    assert Verifier().disagreement(track, np.array(embedding, np.float64), match, strong) == reason


def test_without_doubt_a_stranger_pair_at_078_is_not_split():
    assert Verifier().disagreement(decided(None, 0.4), np.array([0.78, 0.6258, 0]), NOBODY, True) is None


def undecided(appearance=(1.0, 0.0, 0.0)) -> Track:
    return Track(1, "cam", np.zeros(4, np.float32), state="confirmed", appearance=np.array(appearance, np.float32),
                 appearance_weight=2.0)


NOBODY, ANN = Match(None, None, 0.4, None, None, None), Match("ann", None, 0.9, None, None, None)


@pytest.mark.parametrize("track, embedding, match, strong, reason, clears", [
    (decided(None, 0.4), [1, 0, 0], ANN, True, OTHER_IDENTITY, None),  # a stranger's box shows ann: split
    (decided(None, 0.4), [1, 0, 0], ANN, False, OTHER_IDENTITY, None),
    (decided(None, 0.4), [1, 0, 0], NOBODY, False, None, True),  # weak, naming nobody: still nobody
    (decided("ann", 0.9), [1, 0, 0], ANN, True, None, True),
    (decided("ann", 0.9), [1, 0, 0], ANN, False, None, True),  # weak, naming ann
    (decided("ann", 0.9), [1, 0, 0], NOBODY, False, None, False),  # weak, naming nobody: cannot tell
    (undecided(), [0, 1, 0], NOBODY, True, APPEARANCE_DROP, None),  # votes so far were someone else's
    (undecided(), [0, 1, 0], NOBODY, False, None, True),
    (undecided(), [1, 0, 0], NOBODY, True, None, True),
    # Two strangers at cosine 0.78: fine without doubt (0.70), another person in doubt (0.82).
    (decided(None, 0.4), [0.78, 0.6258, 0], NOBODY, True, APPEARANCE_DROP, None),
    (undecided(), [0.78, 0.6258, 0], NOBODY, True, APPEARANCE_DROP, None),
    (decided(None, 0.4), [0.85, 0.5268, 0], NOBODY, True, None, True),
])
def test_a_doubted_track_is_held_to_more(track, embedding, match, strong, reason, clears):
    verifier = Verifier()
    assert verifier.disagreement(track, np.array(embedding, np.float64), match, strong, doubt=True) == reason
    if reason is None:
        assert verifier.clears_doubt(track, match, strong) is clears


def box(x, y=50.0, side=60.0):
    return [x, y, x + side, y + side]


def boxes(*b) -> Faces:
    return Faces(np.array(b, np.float32), np.zeros((len(b), 5, 2), np.float32), np.full(len(b), 0.99, np.float32))


def decided_tracker(**kwargs) -> tuple[IouTracker, Track]:
    tracker = IouTracker(confirm_hits=1, reverify_every=0, **kwargs)
    (first,), _ = tracker.update(boxes(box(100)), 0)
    tracker.confirm_identity(first.track, "ann", 0.9)
    return tracker, first.track


def test_a_box_that_jumps_or_rescales_is_reverified_at_once():
    tracker, track = decided_tracker(iou_threshold=0.1)
    (steady,), _ = tracker.update(boxes(box(102)), 1)
    assert steady.track is track and not steady.verify and not steady.needs_embedding
    (jumped,), _ = tracker.update(boxes(box(140)), 2)  # centre 36 px off the prediction (104): > half of 60 px
    assert jumped.track is track and jumped.verify and jumped.needs_embedding
    tracker, track = decided_tracker()
    (grown,), _ = tracker.update(boxes([85, 35, 185, 135]), 1)  # same centre, 100 px instead of 60
    assert grown.track is track and grown.verify


def test_crossing_tracks_are_reverified_and_reverify_every_counts_detections():
    tracker = IouTracker(confirm_hits=1, reverify_every=0)
    pair = tracker.update(boxes(box(100), box(260)), 0)[0]
    for a in pair:
        tracker.confirm_identity(a.track, None, 0.4)
    walking = [tracker.update(boxes(box(100 + 20 * f), box(260 - 20 * f)), f)[0] for f in (1, 2, 3)]
    assert [[a.verify for a in frame] for frame in walking] == [[False, False], [False, False], [True, True]]
    assert [a.track.id for a in walking[-1]] == [1, 2]  # predicted 40 px apart: overlapping, IoU 0.2
    periodic, _ = decided_tracker(iou_threshold=0.3)
    periodic.reverify_every = 3
    flags = [periodic.update(boxes(box(100)), f)[0][0].verify for f in range(1, 8)]
    assert flags == [False, False, True, False, False, True, False]
