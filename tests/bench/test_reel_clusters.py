"""bench.reel_clusters: tracks attributed to people, unknown ids read from events (merges followed), and the
cluster scores on a hand-made truth, tracks log and events file, with hand-computed values; no video."""

from types import SimpleNamespace

import numpy as np
import pytest

from bench.reel_clusters import (
    attribute_tracks,
    clear_gallery,
    pure_tracks,
    resolve,
    score_run,
    segment_people,
    stable_ids,
    unknown_tracks,
    with_similarities,
)

A, B, C = [100, 100, 200, 220], [400, 100, 500, 220], [700, 100, 800, 220]  # three screen positions
D = [1000, 500, 1100, 620]  # where nobody is
UA, UB, UC, UD = (f"unknown-0000000{c}" for c in "abcd")
UE = "unknown-0000000e"


def gt(name, box):
    return {"appearance": name[0], "name": name, "enrolled": False, "box": box, "visible": 1.0}


def face(track, box):
    return {"box": box, "track": track, "identity": None, "unknown_id": None}


def shifted(box, dx):
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


# Frame 2 cuts A from Ann to Cid; track 1 stays on A across the cut (Ann 2 frames, Cid 1). Track 4 is where
# nobody is: never matched, unattributed.
TRUTH = {"frames": 5, "boxes": [
    [gt("Ann", A), gt("Bob", B)],
    [gt("Ann", A), gt("Bob", B)],
    [gt("Cid", A), gt("Bob", B)],
    [gt("Cid", A), gt("Ann", C)],
    [gt("Bob", B), gt("Ann", C)],
]}
FACES = [
    [face(1, A), face(2, B), face(4, D)],
    [face(1, A), face(2, B), face(4, D)],
    [face(1, A), face(2, B)],
    [face(3, A), face(5, C)],
    [face(8, B), face(5, shifted(C, 10))],
]


def event(kind, track, unknown_id=None, identity=None, **more):
    record = {"type": kind, "camera": "reel", "track": track, "anon_id": f"reel-t{track}", "identity": identity,
              "frame": 0}
    if unknown_id is not None:
        record["unknown_id"] = unknown_id
    return {**record, **more}


EVENTS = [
    event("identity_confirmed", 1, UA), event("track_ended", 1, UA),
    event("identity_confirmed", 2, UC), event("track_ended", 2, UC),
    event("identity_confirmed", 3, UA),  # Cid joins Ann's cluster: the false merge
    event("identity_confirmed", 4, UD),  # nobody's box: unattributed
    event("identity_confirmed", 5, UA),
    event("identity_confirmed", 6), event("track_ended", 6),  # unknown, never an id
    event("identity_confirmed", 7, identity="Zed"),  # a known person: not an unknown track
    event("identity_confirmed", 8, UD), event("track_ended", 8, UB),  # the id it ended with counts
    event("identity_confirmed", 9, UE), event("identity_confirmed", 9, identity="Zed"),  # re-confirmed as known
    {"type": "unknown_merged", "camera": "", "track": 0, "anon_id": "", "identity": None, "similarity": 0.8,
     "frame": 0, "unknown_id": UB, "extra": {"merged": [UC]}},  # Bob's two clusters become one
]


def test_a_track_is_the_person_it_covers_most():
    found = attribute_tracks(TRUTH["boxes"], FACES)
    assert {t: a.person for t, a in found.items()} == {1: "Ann", 2: "Bob", 3: "Cid", 5: "Ann", 8: "Bob"}
    assert found[1].share == pytest.approx(2 / 3) and found[2].share == 1.0  # track 1: Ann twice, Cid once


def test_segments_are_a_tracks_people():
    assert segment_people(TRUTH["boxes"], FACES)[1] == ["Ann"]  # one frame on Cid: coasting over the cut
    assert segment_people(TRUTH["boxes"], FACES, min_frames=1)[1] == ["Ann", "Cid"]
    result, _ = score_run(TRUTH, FACES, EVENTS, min_segment_frames=1)
    # items: the five tracks and track 1's stretch on Cid, in UA: UA {Ann, Ann, Cid, Cid}, UB {Bob, Bob}
    segments = result["by_segment"]
    assert (segments["segments"], segments["clusters"], result["mixed_tracks"]) == (6, 2, 1)
    # together: UA 6 pairs (Ann-Ann, Cid-Cid right), UB 1 (right) -> 3/7; every person whole in one cluster
    assert segments["pair_precision"] == pytest.approx(3 / 7, abs=1e-4) and segments["pair_recall"] == 1.0
    assert segments["false_merges"] == [{"unknown_id": UA, "people": {"Ann": 2, "Cid": 2}}]
    # without the mixed track 1: UA {Cid, Ann}, UB {Bob, Bob}
    assert result["pure_tracks"]["tracks"] == 4 and result["pure_tracks"]["pair_precision"] == 0.5
    assert score_run(TRUTH, FACES, EVENTS)[0]["by_segment"]["segments"] == 5  # default: track 1 is Ann's only


def test_equal_frames_go_to_the_larger_overlap():
    truth = [[gt("Ann", A)], [gt("Bob", B)]]
    faces = [[face(1, shifted(A, 25))], [face(1, shifted(B, 5))]]  # IoU 0.6 with Ann, 0.9 with Bob
    assert attribute_tracks(truth, faces)[1].person == "Bob"
    assert attribute_tracks(truth, [[face(1, shifted(A, 40))]]) == {}  # IoU 0.43: no match, no person


def test_unknown_tracks_read_from_the_events():
    found = unknown_tracks(EVENTS)
    assert found.ids == {1: UA, 2: UC, 3: UA, 4: UD, 5: UA, 8: UB}
    assert found.without_id == [6]
    assert found.aliases == {UC: UB} and found.merged_events == 1
    assert found.anon_ids["reel-t8"] == 8


def test_merges_are_followed_to_the_survivor():
    assert resolve(UA, {UA: UB, UB: UC}) == UC
    assert resolve(UD, {UA: UB}) == UD
    assert resolve(UA, {UA: UB, UB: UA}) == UB  # a cycle stops where it closes


def test_scores_by_hand():
    result, labelled = score_run(TRUTH, FACES, EVENTS)
    assert labelled == [(1, "Ann", UA), (2, "Bob", UB), (3, "Cid", UA), (5, "Ann", UA), (8, "Bob", UB)]
    assert (result["tracks"], result["tracks_without_id"], result["tracks_unattributed"]) == (6, 1, 1)
    assert (result["people"], result["clusters"], result["unknown_merged_events"]) == (3, 2, 1)
    # together: UA {Ann, Cid, Ann} 3 pairs (1 right), UB {Bob, Bob} 1 pair (right); same person: Ann 1, Bob 1
    assert result["pair_precision"] == pytest.approx(2 / 4) and result["pair_recall"] == 1.0
    # BCubed precision per track: 2/3, 1, 1/3, 2/3, 1 -> 11/15; recall: every person whole in one cluster
    assert result["bcubed_precision"] == pytest.approx(11 / 15, abs=1e-4) and result["bcubed_recall"] == 1.0
    assert result["bcubed_f"] == pytest.approx(22 / 26, abs=1e-4)
    assert result["false_merge_rate"] == 0.5 and result["people_split"] == 0 and result["splits"] == []
    assert result["false_merges"] == [{"unknown_id": UA, "people": {"Ann": 2, "Cid": 1}}]
    # track 1 covered Ann 2 frames of 3 (Cid's one: coasting, not a mix), the others one person
    assert result["mixed_tracks"] == 0 and result["track_purity"] == pytest.approx((2 / 3 + 4) / 5, abs=1e-4)
    assert result["pure_tracks"]["tracks"] == 5 and result["pure_tracks"]["bcubed_f"] == result["bcubed_f"]


def test_scores_without_the_merge():
    result, _ = score_run(TRUTH, FACES, EVENTS, aliases={})
    # Bob in UC and UB: 3 clusters, Bob's pair apart (recall 1/2); BCubed recall 1, 1, 1, 1/2, 1/2 -> 4/5
    assert result["clusters"] == 3 and result["people_split"] == 1
    assert result["splits"] == [{"person": "Bob", "clusters": {UB: 1, UC: 1}}]
    assert result["pair_precision"] == pytest.approx(1 / 3, abs=1e-4) and result["pair_recall"] == 0.5
    assert result["bcubed_recall"] == pytest.approx(4 / 5) and result["false_merge_rate"] == pytest.approx(0.3333)


def test_no_unknown_tracks_scores_nothing():
    result, labelled = score_run(TRUTH, FACES, [event("identity_confirmed", 1, identity="Zed")])
    assert labelled == [] and result["tracks"] == 0 and result["clusters"] == 0
    assert result["pair_precision"] is None and result["false_merges"] == []


def test_stable_ids_by_hand():
    first = [(1, "Ann", UA), (2, "Ann", UA), (3, "Ann", UB), (4, "Bob", UD), (5, "Bob", UC)]
    second = [(1, "Ann", UA), (2, "Ann", UB), (3, "Bob", UD), (4, "Bob", UC), (5, "Dan", UE)]
    # majority: Ann UA; Bob a tie, the smaller id UC. Stable: Ann/UA, Bob/UC; any first-run id: all but Dan
    assert stable_ids(first, second) == {"stable_ids": 0.4, "stable_ids_any": 0.8, "stable_tracks": 2,
                                         "compared_tracks": 5, "new_ids": 1}
    assert stable_ids(first, [])["stable_ids"] is None


def test_similarities_from_the_stored_faces():
    result, _ = score_run(TRUTH, FACES, EVENTS, aliases={})  # Ann+Cid merged in UA, Bob split UB/UC
    stored = {UA: [("reel-t1", [1.0, 0.0]), ("reel-t5", [1.0, 0.0]), ("reel-t3", [0.6, 0.8]), ("cam9-t1", [0, 1])],
              UB: [("reel-t8", [0.0, 1.0])], UC: [("reel-t2", [0.8, 0.6])]}
    store = SimpleNamespace(sightings=lambda owner: [SimpleNamespace(track=t, embedding=np.asarray(e, np.float32))
                                                     for t, e in stored[owner]])
    # track 1 coasted one frame onto Cid: still pure (under MIN_SEGMENT_FRAMES); track 4 never matched
    assert pure_tracks(TRUTH["boxes"], FACES) == {1: "Ann", 2: "Bob", 3: "Cid", 5: "Ann", 8: "Bob"}
    out = with_similarities(result, pure_tracks(TRUTH["boxes"], FACES), unknown_tracks(EVENTS), store)
    # Ann's mean face (1, 0) against Cid's (0.6, 0.8); "cam9-t1" is no track of this run: left out
    assert out["false_merges"] == [{"unknown_id": UA, "people": {"Ann": 2, "Cid": 1},
                                    "similarities": [{"people": ["Ann", "Cid"], "similarity": pytest.approx(0.6)}]}]
    assert out["splits"][0]["similarities"] == [{"clusters": [UB, UC], "similarity": pytest.approx(0.6)}]


def test_clear_gallery_deletes_only_that_gallery(redis_client):
    redis_client.set("fs:{bench-reel-clusters-0}:unknowns", "x")
    redis_client.set("fs:{bench-reel-clusters-0}:sight:1", "x")
    redis_client.set("fs:{other}:unknowns", "x")
    assert clear_gallery(redis_client, "bench-reel-clusters-0") == 2
    assert redis_client.exists("fs:{other}:unknowns") and not redis_client.keys("fs:{bench-reel-clusters-0}:*")
