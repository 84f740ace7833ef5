"""IoU tracker on synthetic box sequences: life cycle, crossing faces, gaps, id reuse, embedding decisions."""

import inspect

import numpy as np
import pytest

from pipeline.app.config import TrackerConfig, load_app_config
from pipeline.app.services import tracker_factory
from pipeline.core.errors import ConfigError
from pipeline.core.faces import Faces
from pipeline.video.tracker import IouTracker, default_quality, greedy_match, iou_matrix


def faces_of(boxes, score=0.99) -> Faces:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Faces(boxes, np.zeros((len(boxes), 5, 2), np.float32), np.full(len(boxes), score, np.float32))


def box_at(x, y=50.0, side=40.0):
    return [x, y, x + side, y + side]


def test_iou_matrix_matches_a_brute_force_loop():
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 100, (7, 2, 2)), axis=1).transpose(0, 2, 1).reshape(7, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.uniform(0, 100, (5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(5, 4)[:, [0, 2, 1, 3]]
    expected = np.zeros((7, 5))
    for i, (ax1, ay1, ax2, ay2) in enumerate(a):
        for j, (bx1, by1, bx2, by2) in enumerate(b):
            inter = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
            union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
            expected[i, j] = inter / union
    assert np.allclose(iou_matrix(a, b), expected)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 5)


def test_greedy_match_takes_best_pairs_first_and_respects_the_threshold():
    scores = np.array([[0.9, 0.8, 0.0], [0.85, 0.2, 0.0], [0.0, 0.0, 0.25]])
    # Greedy, not optimal: (0,0) wins although (0,1)+(1,0) would sum higher; that is the documented trade.
    assert sorted(greedy_match(scores, 0.1)) == [(0, 0), (1, 1), (2, 2)]
    assert greedy_match(scores, 0.3) == [(0, 0)]  # row 1's only pair above 0.3 is col 0, already taken
    assert greedy_match(np.zeros((0, 3)), 0.3) == []


def test_life_cycle_tentative_confirmed_lost_ended():
    tracker = IouTracker(confirm_hits=3, max_misses=4, camera="cam0")
    states = []
    for frame in range(4):
        (assignment,), ended = tracker.update(faces_of([box_at(10 + frame)]), frame)
        states.append(assignment.track.state)
        assert not ended
    track = assignment.track
    assert states == ["tentative", "tentative", "confirmed", "confirmed"]
    assert track.id == 1 and track.anon_id == "cam0-t1" and track.confirmed_frame == 2 and track.hits == 4
    for frame in range(4, 8):  # missed for 1..4 frames: lost, kept
        assert tracker.update(Faces.empty(), frame) == ([], [])
        assert track.state == "lost" and track.misses == frame - 3
    assignments, ended = tracker.update(Faces.empty(), 8)  # 5 missed frames > max_misses
    assert ended == [track] and tracker.tracks == []


def test_a_face_that_disappears_within_max_misses_keeps_its_id():
    tracker = IouTracker(max_misses=15)
    first = [tracker.update(faces_of([box_at(30)]), f)[0][0] for f in range(5)]
    for frame in range(5, 15):  # hidden for 10 frames
        tracker.update(Faces.empty(), frame)
    (back,), _ = tracker.update(faces_of([box_at(31)]), 15)
    assert back.track.id == first[0].track.id and not back.is_new and back.track.state == "confirmed"
    for frame in range(16, 33):  # hidden for 17 frames: ends once, when the 16th missed frame passes
        _, ended = tracker.update(Faces.empty(), frame)
        assert [t.id for t in ended] == ([back.track.id] if frame == 31 else [])
    (again,), _ = tracker.update(faces_of([box_at(31)]), 33)
    assert again.is_new and again.track.id > back.track.id


def test_crossing_faces_keep_their_ids_when_detected_every_third_frame():
    """Two faces move towards each other at 6 px/frame and cross; the detector runs every 3rd frame."""
    tracker = IouTracker(iou_threshold=0.3, confirm_hits=2)
    ids = {}
    last = None
    naive_swaps = 0
    for frame in range(0, 31, 3):
        a, b = box_at(6.0 * frame), box_at(171 - 6.0 * frame)
        assignments, ended = tracker.update(faces_of([a, b]), frame)
        assert not ended
        ids.setdefault("a", assignments[0].track.id)
        ids.setdefault("b", assignments[1].track.id)
        assert (assignments[0].track.id, assignments[1].track.id) == (ids["a"], ids["b"]), f"swap at {frame}"
        if last is not None:  # matching on last boxes alone (no motion model) would swap here
            naive = dict(greedy_match(iou_matrix(last, np.array([a, b])), 0.3))
            naive_swaps += naive.get(0) == 1
        last = np.array([a, b])
    assert naive_swaps > 0  # the sequence really needs the velocity prediction
    assert ids["a"] != ids["b"]


def test_ids_are_never_reused():
    rng = np.random.default_rng(1)
    tracker = IouTracker(confirm_hits=1, max_misses=2)
    seen_new, ended_ids = [], set()
    for frame in range(200):
        xs = rng.choice(np.arange(0, 1000, 100), size=rng.integers(0, 4), replace=False)
        assignments, ended = tracker.update(faces_of([box_at(float(x)) for x in xs]), frame)
        ended_ids |= {t.id for t in ended}
        for assignment in assignments:
            assert assignment.track.id not in ended_ids
            if assignment.is_new:
                seen_new.append(assignment.track.id)
    assert len(seen_new) > 20
    assert seen_new == sorted(set(seen_new))  # strictly increasing: never reused


def test_a_tentative_track_ends_at_its_first_miss():
    tracker = IouTracker(confirm_hits=3)
    (flicker,), _ = tracker.update(faces_of([box_at(0)]), 0)
    _, ended = tracker.update(Faces.empty(), 1)
    assert ended == [flicker.track] and ended[0].confirmed_frame is None


def test_needs_embedding_new_unconfirmed_quality_gain_and_period():
    tracker = IouTracker(confirm_hits=1, reembed_quality_gain=0.15, reembed_every=0, reverify_every=0)
    q = lambda v: np.array([v])  # noqa: E731
    (new,), _ = tracker.update(faces_of([box_at(0)]), 0, q(0.5))
    assert new.is_new and new.needs_embedding and new.track.best_quality == 0.5
    (again,), _ = tracker.update(faces_of([box_at(1)]), 1, q(0.4))
    assert again.needs_embedding  # identity not confirmed yet: keep embedding
    tracker.confirm_identity(new.track, "ann", 0.9)  # what the stage does on the voter's confirmation
    decisions = [tracker.update(faces_of([box_at(2 + i)]), 2 + i, q(v))[0][0].needs_embedding
                 for i, v in enumerate([0.5, 0.6, 0.64, 0.66, 0.7, 0.8, 0.82])]
    assert decisions == [False, False, False, True, False, False, True]  # > best + 0.15 (0.5, then 0.66)
    assert new.track.best_quality == pytest.approx(0.82)

    periodic = IouTracker(confirm_hits=1, reembed_every=5, reverify_every=0)
    (first,), _ = periodic.update(faces_of([box_at(0)]), 0, q(0.5))
    periodic.confirm_identity(first.track, None, 0.4)
    decisions = [periodic.update(faces_of([box_at(0)]), f, q(0.5))[0][0].needs_embedding for f in range(1, 11)]
    assert decisions == [False, False, False, False, True, False, False, False, False, True]


def test_default_quality_is_score_times_size_and_a_closer_face_is_re_embedded():
    quality = default_quality(faces_of([box_at(0, side=s) for s in (30, 50, 100, 200)]))
    assert quality == pytest.approx([0.297, 0.495, 0.99, 0.99], abs=1e-6)
    tracker = IouTracker(confirm_hits=1, reverify_every=0)
    (first,), _ = tracker.update(faces_of([box_at(0, side=40)]), 0)
    tracker.confirm_identity(first.track, "ann", 0.9)
    sides = range(42, 64, 2)  # walking towards the camera
    decisions = {side: tracker.update(faces_of([box_at(0, side=side)]), side)[0][0] for side in sides}
    assert all(a.track is first.track for a in decisions.values())
    assert [side for side, a in decisions.items() if a.needs_embedding] == [56]  # 0.99 * 56/100 > 0.396 + 0.15


def test_predict_moves_active_tracks_with_their_velocity():
    tracker = IouTracker(confirm_hits=1)
    tracker.update(faces_of([box_at(0), box_at(300)]), 0)
    tracker.update(faces_of([box_at(10), box_at(300)]), 2)
    moving = tracker.tracks[0]
    predicted = {t.id: t.box.copy() for t in tracker.predict(4)}
    assert predicted[moving.id][0] == pytest.approx(20.0) and predicted[tracker.tracks[1].id][0] == 300
    tracker.update(faces_of([box_at(20)]), 4)  # the still one is missed: lost, so not predicted
    assert [t.id for t in tracker.predict(5)] == [moving.id]
    assert {t.id for t in tracker.end_all()} == {1, 2} and tracker.tracks == []


def test_confirm_identity_fixes_what_the_box_shows():
    tracker = IouTracker(confirm_hits=1)
    (a,), _ = tracker.update(faces_of([box_at(0)]), 0)
    track = a.track
    tracker.show_similarity(track, 0.5)
    assert (track.identity, track.similarity, track.identity_confirmed) == (None, 0.5, False)
    tracker.confirm_identity(track, "ann", 0.9)
    assert (track.identity, track.similarity, track.identity_confirmed) == ("ann", 0.9, True)
    tracker.show_similarity(track, 0.6)  # a later match no longer changes the confirmed similarity
    assert track.similarity == 0.9
    tracker.confirm_identity(track, None, 0.7)  # a different majority later: confirmed unknown
    assert (track.identity, track.similarity, track.identity_confirmed) == (None, 0.7, True)


def test_settings_come_from_the_config_section():
    with pytest.raises(ConfigError, match="tracker.iou_threshold"):
        load_app_config(None, ["tracker.iou_threshold=1.5"])
    tracker = tracker_factory(load_app_config(None, ["tracker.confirm_hits=5"]))("door")
    assert (tracker.camera, tracker.confirm_hits, tracker.max_misses) == ("door", 5, TrackerConfig().max_misses)


def test_library_defaults_equal_the_config_section():
    from pipeline.app.services import TRACK_STAGE_KEYS
    from pipeline.video.track_stage import TrackStage

    parameters = inspect.signature(IouTracker).parameters
    tracker_keys = set(TrackerConfig.model_fields) - TRACK_STAGE_KEYS
    assert ({name: parameters[name].default for name in tracker_keys}
            == TrackerConfig().model_dump(exclude=TRACK_STAGE_KEYS))
    stage = inspect.signature(TrackStage).parameters
    assert {name: stage[name].default for name in TRACK_STAGE_KEYS} == TrackerConfig().model_dump(
        include=TRACK_STAGE_KEYS)


def test_bad_inputs_are_rejected():
    tracker = IouTracker()
    tracker.update(faces_of([box_at(0)]), 5)
    with pytest.raises(ValueError, match="backwards"):
        tracker.update(Faces.empty(), 4)
    with pytest.raises(ValueError, match="quality must have shape"):
        tracker.update(faces_of([box_at(0)]), 6, np.array([0.1, 0.2]))
