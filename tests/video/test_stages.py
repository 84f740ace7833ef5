"""RecogniseStage on synthetic detections, with a fake judge and matcher: the order of events, the voter's
confirmation applied to the track through its tracker and shown on the box, one embedding batch for every
camera of a batch, the tally the run summary reads."""

from __future__ import annotations

import numpy as np
import pytest
from video_fakes import RecordingBus

from pipeline.core.faces import Faces
from pipeline.core.frames import Frame
from pipeline.gallery.matcher import Match
from pipeline.recognise.judge import Judged
from pipeline.recognise.quality import TOO_SMALL, QualityVerdict
from pipeline.video.metrics import StageMetrics
from pipeline.video.stages import Detected, RecogniseStage
from pipeline.video.tracker import IouTracker

ANN_X, STRANGER_X, SMALL_X = 10, 200, 400  # where each face sits; the fake embedding is its x
IMAGE = np.zeros((120, 480, 3), np.uint8)


class FakeJudge:
    """Faces narrower than 50 px fail the size gate; a passing face's crop (and embedding) carries its x."""

    def __init__(self):
        self.batches: list[int] = []

    def judge(self, image, faces: Faces, index: int) -> Judged:
        if faces.width[index] < 50:
            return Judged(None, QualityVerdict(False, TOO_SMALL, {}))
        return Judged(np.full((2, 2, 3), int(faces.xyxy[index, 0]), np.uint8), QualityVerdict(True, None, {}))

    def embed(self, crops) -> np.ndarray:
        self.batches.append(len(crops))
        return np.array([[float(crop[0, 0, 0])] for crop in crops])


class FakeMatcher:
    def match(self, embeddings: np.ndarray) -> list[Match]:
        named = {ANN_X: "ann"}
        return [Match(named.get(int(e[0])), None, 0.9 if int(e[0]) in named else 0.4, None, None, None)
                for e in embeddings]


def faces_at(*xs: int) -> Faces:
    boxes = np.array([[x, 20, x + (30 if x == SMALL_X else 60), 80] for x in xs], np.float32)
    return Faces(boxes, np.zeros((len(xs), 5, 2), np.float32), np.full(len(xs), 0.99, np.float32))


def stage(confirm_hits: int = 3) -> tuple[RecogniseStage, RecordingBus, FakeJudge]:
    bus, judge = RecordingBus(), FakeJudge()
    recognise = RecogniseStage(judge, FakeMatcher(), bus, StageMetrics(),
                               lambda camera: IouTracker(confirm_hits=confirm_hits, camera=camera))
    return recognise, bus, judge


def batch(index: int, *per_camera: tuple[str, Faces | None]) -> Detected:
    frames = tuple(Frame(camera, index, index / 25, IMAGE) for camera, _ in per_camera)
    return Detected(frames, tuple(faces for _, faces in per_camera), (0.0,) * len(frames))


def brief(event) -> tuple:
    return event.type, event.camera, event.track, event.frame, event.identity


def test_events_in_order_and_a_confirmation_applied_to_the_track():
    recognise, bus, judge = stage()
    out = [recognise.process(batch(i, ("cam0", faces_at(ANN_X, STRANGER_X, SMALL_X))))[0] for i in range(5)]
    ann, stranger, _ = recognise.tracking.trackers["cam0"].tracks
    recognise.finish()
    assert [brief(e) for e in bus.events] == [
        ("track_started", "cam0", 1, 2, None), ("track_started", "cam0", 2, 2, None),
        ("track_started", "cam0", 3, 2, None),
        ("identity_confirmed", "cam0", 1, 2, "ann"), ("identity_confirmed", "cam0", 2, 2, None),
        ("track_ended", "cam0", 1, 4, "ann"), ("track_ended", "cam0", 2, 4, None),
        ("track_ended", "cam0", 3, 4, None)]
    assert (ann.identity, ann.similarity, ann.identity_confirmed) == ("ann", pytest.approx(0.9), True)
    assert (stranger.identity, stranger.identity_confirmed, stranger.anon_id) == (None, True, "cam0-t2")
    assert bus.events[3].extra["votes"] == 3 and bus.events[3].similarity == pytest.approx(0.9)
    # Tentative tracks are not drawn; from the confirming frame on the box names the identity.
    assert [a.labels for a in out[:2]] == [(), ()]
    assert [(label.text, label.known, label.predicted) for label in out[2].labels] == [
        ("#1 ann 0.90", True, False), ("#2 cam0-t2 0.40", False, False), ("#3 cam0-t3", False, False)]
    # Confirmed identities are not re-embedded; the small face is judged (and rejected) every frame.
    tally = recognise.tally
    assert (tally.embedded, dict(tally.rejected), judge.batches) == (6, {TOO_SMALL: 5}, [2, 2, 2])
    assert (dict(tally.frames), dict(tally.detected_frames), tally.faces) == ({"cam0": 5}, {"cam0": 5}, 15)
    assert (dict(tally.tracks), dict(tally.identities), dict(tally.max_faces_per_frame)) == (
        {"cam0": 3}, {"ann": 1}, {"cam0": 3})


def test_the_latest_similarity_is_shown_until_confirmed_and_predicted_boxes_are_grey():
    recognise, _, _ = stage(confirm_hits=1)
    first = recognise.process(batch(0, ("cam0", faces_at(ANN_X))))[0]
    assert [(label.text, label.known) for label in first.labels] == [("#1 cam0-t1 0.90", False)]
    for i in (1, 2):
        confirmed = recognise.process(batch(i, ("cam0", faces_at(ANN_X))))[0]
    assert [(label.text, label.known) for label in confirmed.labels] == [("#1 ann 0.90", True)]
    carried = recognise.process(batch(3, ("cam0", None)))[0]
    assert not carried.detected and [(lb.text, lb.predicted) for lb in carried.labels] == [("#1 ann 0.90", True)]
    assert dict(recognise.tally.detected_frames) == {"cam0": 3} and dict(recognise.tally.frames) == {"cam0": 4}


def test_cameras_of_one_batch_are_embedded_together_and_tracked_apart():
    recognise, bus, judge = stage()
    for i in range(3):
        recognise.process(batch(i, ("door", faces_at(ANN_X)), ("hall", faces_at(ANN_X, STRANGER_X))))
    assert judge.batches == [3, 3, 3]
    confirmed = [brief(e) for e in bus.events if e.type == "identity_confirmed"]
    assert confirmed == [("identity_confirmed", "door", 1, 2, "ann"), ("identity_confirmed", "hall", 1, 2, "ann"),
                         ("identity_confirmed", "hall", 2, 2, None)]
    assert {e.anon_id for e in bus.events} == {"door-t1", "hall-t1", "hall-t2"}
    assert dict(recognise.tally.identities) == {"ann": 2}
