"""bench.reel: the assignment against brute force, the scores on hand-made truth and tracks, and a tiny real reel
(real LFW photos) whose ground truth must hold the scenarios and agree with the detector on the rendered frames."""

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.reel.scenes import crossings, cuts_in_place, iou, occlusions
from bench.reel.score import assign, confirmations, idf1, match_boxes, score

# -- assignment ------------------------------------------------------------------------------------------


def brute_force(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n <= m:
        return min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
    return min(sum(cost[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m))


@pytest.mark.parametrize("seed", range(5))  # the wrapper over scipy: shapes, order, optimum
def test_assign_is_optimal_and_one_to_one(seed):
    rng = np.random.default_rng(seed)
    n, m = (int(v) for v in rng.integers(1, 6, 2))
    cost = rng.integers(0, 10, (n, m)).astype(float)
    pairs = assign(cost)
    assert len(pairs) == min(n, m)
    assert len({r for r, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)
    assert sum(cost[r, c] for r, c in pairs) == pytest.approx(brute_force(cost))


def test_assign_rejects_a_vector_and_accepts_empty():
    with pytest.raises(ValueError, match="2-D"):
        assign(np.zeros(3))
    assert assign(np.zeros((0, 4))) == []


# -- matching and scores on hand-made truth ----------------------------------------------------------------
A, B = [100, 100, 200, 220], [400, 100, 500, 220]  # two screen positions, 100 x 120 px


def shifted(box, dx):
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


def test_match_boxes_needs_iou_half_and_is_one_to_one():
    assert iou(A, shifted(A, 30)) > 0.5 > iou(A, shifted(A, 40))
    assert match_boxes([A, B], [shifted(B, 5), shifted(A, 30)]) == [(0, 1), (1, 0)]
    assert match_boxes([A], [shifted(A, 40)]) == []
    assert match_boxes([A], [A, shifted(A, 5)]) == [(0, 0)]  # the better of two candidates, once


def gt(appearance, name, enrolled, box, visible=1.0):
    return {"appearance": appearance, "name": name, "enrolled": enrolled, "box": box, "visible": visible}


def pred(box, track, identity=None):
    return {"box": box, "track": track, "identity": identity}


def make_truth(frames, shots, people=(("Ann", True), ("Bob", True), ("Cy", False))):
    """frames: per-frame GT lists; shots: [(start, [(appearance, name, enrolled)])]."""
    ends = [s for s, _ in shots[1:]] + [len(frames)]
    return {"fps": 25, "width": 1280, "height": 720, "frames": len(frames), "seed": 0, "boxes": frames,
            "people": [{"name": n, "enrolled": e, "single_image": False} for n, e in people],
            "shots": [{"index": i, "kind": "cut", "start": s, "frames": end - s,
                       "actors": [{"appearance": a, "name": n, "enrolled": e} for a, n, e in actors]}
                      for i, ((s, actors), end) in enumerate(zip(shots, ends))]}


def cut_truth():
    """Shot 0: Ann at A (frames 0-3); a cut; shot 1: the stranger Cy at A (frames 4-7)."""
    frames = [[gt("s0", "Ann", True, A)]] * 4 + [[gt("s1", "Cy", False, A)]] * 4
    return make_truth(frames, [(0, [("s0", "Ann", True)]), (4, [("s1", "Cy", False)])])


def test_a_perfect_run_scores_perfectly():
    truth = cut_truth()
    tracks = [[pred(A, 1, "Ann")]] * 4 + [[pred(A, 2, None)]] * 4
    s = score(truth, tracks, events=[])
    assert (s["wrong_name_frames"], s["id_switches"], s["idf1"], s["coverage"]) == (0, 0, 1.0, 1.0)
    assert s["matched_boxes"] == s["gt_boxes"] == s["predicted_boxes"] == 8
    assert all(t["met"] for t in s["targets"].values())


def test_a_name_carried_over_a_cut_is_wrong_on_every_frame_and_merges_the_track():
    truth = cut_truth()
    # the tracker keeps track 1 (and Ann's name) for 2 frames on Cy, then starts track 2 for him
    tracks = [[pred(A, 1, "Ann")]] * 4 + [[pred(A, 1, "Ann")]] * 2 + [[pred(A, 2, None)]] * 2
    s = score(truth, tracks)
    assert s["wrong_name_frames"] == 2 and s["wrong_name_frames_by_truth"] == {"known": 0, "stranger": 2}
    assert s["wrong_name_frames_by_shot"] == {"cut": 2} and s["wrong_name_appearances"] == 1
    assert s["id_switches"] == 1  # Cy's matched track changes 1 -> 2
    assert s["merged_tracks"] == 1  # track 1 covered Ann and Cy
    # optimal mapping s0->1 (4 frames), s1->2 (2 frames): IDTP 6 of 8 + 8 boxes
    assert s["idtp"] == 6 and s["idf1"] == pytest.approx(12 / 16)


def test_a_wrong_known_name_and_coverage():
    frames = [[gt("s0", "Ann", True, A), gt("s0b", "Bob", True, B)]] * 3
    truth = make_truth(frames, [(0, [("s0", "Ann", True), ("s0b", "Bob", True)])])
    tracks = [[pred(A, 1, None), pred(B, 2, "Ann")], [pred(A, 1, "Ann"), pred(B, 2, "Ann")],
              [pred(A, 1, "Ann"), pred(B, 2, None)]]
    s = score(truth, tracks)
    assert s["wrong_name_frames"] == 2 and s["wrong_name_frames_by_truth"]["known"] == 2
    assert s["coverage"] == 0.5  # Ann named correctly at least once, Bob never
    assert s["known_appearances"] == 2 and s["stranger_appearances"] == 0


def test_unmatched_boxes_are_false_positives_and_missed_boxes_false_negatives():
    frames = [[gt("s0", "Ann", True, A)]] * 4
    truth = make_truth(frames, [(0, [("s0", "Ann", True)])])
    tracks = [[], [pred(A, 1, "Ann")], [pred(A, 1, "Ann"), pred(B, 9, "Bob")], [pred(A, 1, "Ann")]]
    s = score(truth, tracks)
    assert s["wrong_name_frames"] == 0 and s["named_unmatched_boxes"] == 1
    assert (s["gt_boxes"], s["predicted_boxes"], s["idtp"]) == (4, 4, 3)
    assert s["idf1"] == pytest.approx(6 / 8)


def test_hidden_faces_are_dont_care_but_a_wrong_name_on_them_counts():
    frames = [[gt("s0", "Ann", True, A, visible=v)] for v in (1.0, 0.2, 0.0, 1.0)]
    truth = make_truth(frames, [(0, [("s0", "Ann", True)])])
    tracked = [[pred(A, 1, "Ann")], [pred(A, 1, "Ann")], [], [pred(A, 1, "Ann")]]
    s = score(truth, tracked)
    assert (s["gt_boxes"], s["predicted_boxes"], s["idf1"]) == (2, 2, 1.0)
    s = score(truth, [[pred(A, 1, "Ann")], [pred(A, 1, "Bob")], [], [pred(A, 1, "Ann")]])
    assert s["wrong_name_frames"] == 1


def test_idf1_maps_one_gt_to_one_track():
    # one appearance split over two tracks 6 + 4 frames: only the larger share is an ID true positive
    assert idf1({("s0", 1): 6, ("s0", 2): 4}, 10, 10) == (pytest.approx(12 / 20), 6)
    # the global optimum, not greedy: greedy would take (x,1)=5 then (y,2)=1 -> 6; optimal (x,2)+(y,1) = 8
    assert idf1({("x", 1): 5, ("x", 2): 4, ("y", 1): 4, ("y", 2): 1}, 14, 14)[1] == 8


def test_wrong_confirmations_use_the_person_under_the_track_at_that_frame():
    seen = {1: [(0, "Ann"), (1, "Ann"), (5, "Cy")], 2: [(4, "Bob")]}
    events = [{"type": "identity_confirmed", "track": 1, "identity": "Ann", "frame": 1},
              {"type": "identity_confirmed", "track": 1, "identity": "Ann", "frame": 5},  # Cy by then
              {"type": "identity_confirmed", "track": 2, "identity": None, "frame": 4},  # "unknown": no claim
              {"type": "identity_confirmed", "track": 7, "identity": "Bob", "frame": 3},  # never matched
              {"type": "track_started", "track": 2, "identity": None, "frame": 4}]
    out = confirmations(events, seen, {"Ann", "Bob"})
    assert (out["wrong_confirmations"], out["confirmations"], out["unresolved_confirmations"]) == (1, 3, 1)
    assert out["wrong_confirmation_list"][0]["truth"] == "Cy"


def test_predictions_without_tracks_get_per_frame_metrics_only():
    truth = cut_truth()
    s = score(truth, [[{"box": A, "identity": "Ann", "track": None}]] * 8)
    assert (s["idf1"], s["id_switches"], s["merged_tracks"]) == (None, None, None)
    assert s["wrong_name_frames"] == 4 and s["coverage"] == 1.0
    assert s["targets"]["idf1"]["met"] is None


# -- a tiny real reel ------------------------------------------------------------------------------------
TINY_SCHEDULE = (("cut", ("KKS", "SKK")), ("cross", ("K", "S")), ("occlude", ("K", "S")))


@pytest.fixture(scope="module")
def tiny_reel(shared_data, tmp_path_factory):
    from bench.reel.build import _photo_detector, background_photos, build_reel
    from bench.reel.cast import FaceBoxes, choose_cast
    from bench.reel.plan import plan_reel

    lfw, folder = shared_data / "lfw", tmp_path_factory.mktemp("reel")
    boxes = FaceBoxes(folder / "face_boxes.json", _photo_detector)
    cast = choose_cast(lfw, enrolled=3, singles=1, seed=5, face_box=boxes)
    shots = plan_reel(cast, seconds=10, seed=5, backgrounds=background_photos(lfw, cast, 5), schedule=TINY_SCHEDULE)
    shots = shots[:5]  # the first cycle: 3 cut shots, the crossing, the occlusion
    return lfw, folder, cast, build_reel(cast, shots, folder, 5, lfw), boxes


def test_the_cast_is_unseen_people_and_enrolment_photos_never_reach_the_reel(tiny_reel):
    from bench.reel.cast import single_image_people, unseen_fold_people
    from trainer.calibration import half_of

    lfw, _, cast, truth, _ = tiny_reel
    unseen = set(unseen_fold_people(lfw / "pairs_shared_folds.txt", lfw / "images"))
    singles = set(single_image_people(lfw / "images"))
    assert sum(p.enrolled for p in cast) == 3 and sum(p.single_image for p in cast) == 1
    assert all((p.folder in singles) if p.single_image else (p.folder in unseen) for p in cast)
    assert all(half_of(p.folder) == "benchmark" for p in cast if p.single_image)
    shown = {a["photo"] for s in truth["shots"] for a in s["actors"]}
    assert not shown & {p["enrol_photo"] for p in truth["people"] if p["enrolled"]}


def test_the_tiny_reel_holds_every_scenario(tiny_reel):
    truth = tiny_reel[3]
    kinds = {c["kind"] for c in cuts_in_place(truth)}
    assert {"known->known", "known->stranger", "stranger->known"} <= kinds
    assert len(crossings(truth)) == 1 and 0 < crossings(truth)[0]["overlap_frames"] < 30
    hidden = occlusions(truth)
    assert any(0.2 <= o["frames"] / 25 <= 0.5 for o in hidden)  # the rectangle: ~0.3 s, then seen again
    assert truth["description"]["scenarios"]["occlusions"] == len(hidden)


def test_ground_truth_is_consistent_with_the_shots(tiny_reel):
    truth = tiny_reel[3]
    assert len(truth["boxes"]) == truth["frames"] == sum(s["frames"] for s in truth["shots"])
    for shot in truth["shots"]:
        assert 25 <= shot["frames"] <= 75  # 1-3 s
        ids = [a["appearance"] for a in shot["actors"]]
        assert len(set(ids)) == len(ids)
        for frame in truth["boxes"][shot["start"]:shot["start"] + shot["frames"]]:
            assert [b["appearance"] for b in frame] == ids
            assert all(110 <= b["box"][2] - b["box"][0] <= 210 for b in frame)  # face widths ~120-200 px
    first, last = truth["boxes"][0][0]["box"], truth["boxes"][truth["shots"][0]["frames"] - 1][0]["box"]
    assert first != last  # it moves within the shot


def test_a_person_seen_twice_is_shown_from_another_photo(tiny_reel):
    truth = tiny_reel[3]
    photos: dict[str, list[str]] = {}
    for shot in truth["shots"]:
        for actor in shot["actors"]:
            photos.setdefault(actor["name"], []).append(actor["photo"])
    repeated = [p for p in photos.values() if len(p) > 1]
    assert repeated and all(len(set(p)) > 1 for p in repeated)


def test_the_video_has_the_truth_frames_and_the_detector_agrees_with_the_boxes(tiny_reel):
    from bench.reel.build import _photo_detector

    _, folder, _, truth, _ = tiny_reel
    capture = cv2.VideoCapture(str(folder / "reel.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == truth["frames"]
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (1280, 720)
    detector, checked = _photo_detector(), 0
    for index in (10, truth["shots"][1]["start"] + 5, truth["shots"][3]["start"] + 3):
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, image = capture.read()
        assert ok
        found = detector.detect_one(image).xyxy.tolist()
        for box in (b["box"] for b in truth["boxes"][index] if b["visible"] >= 0.99):
            assert max(iou(box, f) for f in found) >= 0.7
            checked += 1
    assert checked >= 4


def test_a_person_whose_enrolment_was_refused_is_scored_as_a_stranger():
    from bench.reel.facestream import as_enrolled

    truth = {"people": [{"name": "ann", "enrolled": True}, {"name": "bob", "enrolled": True}],
             "shots": [{"actors": [{"appearance": "s0a0", "name": "bob", "enrolled": True}]}],
             "boxes": [[{"appearance": "s0a0", "name": "bob", "enrolled": True, "box": [0, 0, 1, 1]}]], "frames": 1}
    held = as_enrolled(truth, {"ann"})
    assert [p["enrolled"] for p in held["people"]] == [True, False]
    assert not held["shots"][0]["actors"][0]["enrolled"] and not held["boxes"][0][0]["enrolled"]
    assert truth["people"][1]["enrolled"]  # the truth itself is left as it was


def test_the_reel_runs_a_model_that_never_saw_its_cast():
    """The cast is fold 6-7 people and one-photo people, whom the shipped model trained on; the benchmark's
    default model is the held-out twin, which left exactly those folds out (and, like every model here, never
    trained on one-photo people)."""
    from bench.reel.__main__ import parse_args
    from bench.reel.cast import UNSEEN_FOLDS
    from pipeline.core.model_card import load_card

    args = parse_args([])
    assert load_card(args.model).training["data"]["holdout_folds"] == list(UNSEEN_FOLDS)
    assert load_card(args.model.with_name("facestream-default.json")).training["data"]["holdout_folds"] == []
    assert parse_args(["--model", "x.json"]).model == Path("x.json")
