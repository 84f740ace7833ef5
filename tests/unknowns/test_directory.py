"""The live directory and the per-track recorder against a real Redis, on synthetic people (unit vectors around
a per-person centre): tracks of one person share an id, across directories (restarts, other workers); strangers
get their own; re-clustering merges what assignment split and announces the older id."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.unknowns.directory import UnknownDirectory
from pipeline.unknowns.recorder import UnknownRecorder
from pipeline.unknowns.sightings import Seen, UnknownStore

DIM = 128
THRESHOLD = 0.6  # assignment: synthetic faces of one person score ~0.8, of two people ~0.0


def person(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return v / np.linalg.norm(v)


def faces(centre: np.ndarray, n: int, seed: int, noise: float = 0.05, camera: str = "door",
          track: str = "door-t1") -> list[Seen]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        v = centre + noise * rng.standard_normal(DIM)
        out.append(Seen((v / np.linalg.norm(v)).astype(np.float32), camera, track, time.time(), 0.8))
    return out


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def directory(client, clock=None, merge: float = 0.9) -> UnknownDirectory:
    return UnknownDirectory(UnknownStore(client, "g"), lambda members: THRESHOLD, merge, clock=clock or Clock(),
                            refresh_s=5.0, recluster_every_s=60.0, purge_every_s=3600.0)


def test_one_person_keeps_one_id_across_tracks_cameras_and_restarts(redis_client):
    alice, bob = person(1), person(2)
    first = directory(redis_client)
    a1 = first.assign(faces(alice, 3, 10))
    b1 = first.assign(faces(bob, 3, 11, track="door-t2"))
    assert a1.new and b1.new and a1.cluster_id != b1.cluster_id
    a2 = first.assign(faces(alice, 2, 12, camera="hall", track="hall-t1"))
    assert (a2.cluster_id, a2.new) == (a1.cluster_id, False) and a2.similarity > THRESHOLD
    restarted = directory(redis_client)  # another process: reads the clusters from Redis
    assert restarted.assign(faces(bob, 2, 13, track="door-t9")).cluster_id == b1.cluster_id
    assert len(restarted.store.clusters()) == 2


def test_other_workers_clusters_are_seen_after_a_refresh(redis_client):
    clock = Clock()
    mine, theirs = directory(redis_client, clock), directory(redis_client)
    created = theirs.assign(faces(person(3), 3, 20)).cluster_id
    mine.maintain()  # not yet due
    assert created not in mine.members.cluster_ids
    clock.now = 6.0
    mine.maintain()
    assert mine.best(np.stack([f.embedding for f in faces(person(3), 2, 21)]))[0] == created


def test_recluster_merges_a_split_person_and_keeps_the_older_id(redis_client):
    clock = Clock()
    d = directory(redis_client, clock, merge=0.5)
    carol = person(4)
    old = d.store.new_cluster(faces(carol, 3, 30, track="door-t1"))
    d.store.add(old, faces(carol, 2, 33, track="door-t4"))  # two tracks: lone tracks are never merged
    time.sleep(0.01)
    young = d.store.new_cluster(faces(carol, 3, 31, track="door-t2"))  # a split: two ids for one person
    dave = d.store.new_cluster(faces(person(5), 3, 32, track="door-t3"))
    d.reload()
    clock.now = 61.0
    merges, _ = d.maintain()
    assert [(m.survivor, m.merged) for m in merges] == [(old, (young,))]
    assert sorted(c.id for c in d.store.clusters()) == sorted([old, dave])
    assert d.store.resolve(young) == old


def test_two_lone_tracks_are_never_merged(redis_client):
    clock = Clock()
    d = directory(redis_client, clock, merge=0.5)
    gina = person(13)
    d.store.new_cluster(faces(gina, 3, 80, track="door-t1"))
    d.store.new_cluster(faces(gina, 3, 81, track="door-t2"))
    d.reload()
    assert d.recluster() == [] and len(d.store.clusters()) == 2  # min_merge_size 3: one more sighting of either


def test_recorder_names_unknown_tracks_and_keeps_one_face_of_known_ones(redis_client):
    d = directory(redis_client)
    recorder = UnknownRecorder(d, max_per_track=4)
    erin = person(6)
    for face in faces(erin, 6, 40):
        recorder.observe(("door", 1), face)
    unknown_id = recorder.confirmed(("door", 1), None, "ev-1")
    assert unknown_id.startswith("unknown-")
    assert d.store.cluster(unknown_id).sightings == 4  # the best 4 of 6 (max_per_track)
    assert d.store.event_sighting("ev-1").owner == unknown_id
    assert recorder.ended(("door", 1)) == unknown_id
    # A second track of Erin joins her cluster; a known track keeps its best face under the identity.
    for face in faces(erin, 2, 41, track="door-t2"):
        recorder.observe(("door", 2), face)
    assert recorder.confirmed(("door", 2), None, "ev-2") == unknown_id
    identity_id = "a" * 32
    for face in faces(person(7), 3, 42, track="door-t3"):
        recorder.observe(("door", 3), face)
    assert recorder.confirmed(("door", 3), identity_id, "ev-3") is None
    assert [s.event_id for s in d.store.sightings(identity_id)] == ["ev-3"]
    assert recorder.ended(("door", 3)) is None
    # A flicker keeps nothing; a track confirmed unknown on weak evidence only gets its id when it ends.
    recorder.observe(("door", 4), faces(person(8), 1, 43)[0])
    assert recorder.ended(("door", 4)) is None
    assert recorder.confirmed(("door", 5), None, "ev-5") is None
    recorder.observe(("door", 5), faces(person(9), 1, 44)[0])
    late = recorder.ended(("door", 5))
    assert late is not None and late not in (unknown_id,)
    assert len(d.store.clusters()) == 2 and recorder.errors == 0


def test_a_redis_failure_costs_the_id_not_the_stream(redis_client):
    d = directory(redis_client)
    recorder = UnknownRecorder(d)
    recorder.observe(("door", 1), faces(person(10), 1, 50)[0])
    d.store.client = type(redis_client)(port=1)  # nothing listens there
    assert recorder.confirmed(("door", 1), None, "ev") is None
    assert recorder.errors == 1


@pytest.mark.parametrize("bad", [0, -3])
def test_recorder_refuses_a_cap_below_one(redis_client, bad):
    from pipeline.core.errors import GalleryError

    with pytest.raises(GalleryError, match="max_per_track"):
        UnknownRecorder(directory(redis_client), max_per_track=bad)


def test_maintenance_purges_expired_sightings_at_once(redis_client):
    store = UnknownStore(redis_client, "g", retention_s=3600)
    old = store.new_cluster(faces(person(11), 2, 60))
    redis_client.zadd(store.keys.sightings, {m.decode(): 0 for m in redis_client.zrange(store.keys.sightings, 0, -1)})
    d = UnknownDirectory(store, lambda members: THRESHOLD, 0.9, clock=Clock())
    _, purged = d.maintain()  # the first call purges: a worker that starts cleans what expired while it was down
    assert (purged.sightings, purged.clusters) == (2, 1)
    assert old not in d.members.cluster_ids and store.clusters() == []


def test_the_event_stage_announces_merges(redis_client):
    from pipeline.video.event_stage import EventStage
    from pipeline.video.track_stage import TrackStage
    from pipeline.video.voting import IdentityVoter
    from pipeline.events import EventBus, MemorySink

    clock = Clock()
    d = directory(redis_client, clock, merge=0.5)
    frank = person(12)
    old = d.store.new_cluster(faces(frank, 3, 70, track="door-t1"))
    d.store.add(old, faces(frank, 2, 72, track="door-t4"))
    time.sleep(0.01)
    young = d.store.new_cluster(faces(frank, 3, 71, track="door-t2"))
    d.reload()
    sink = MemorySink()
    stage = EventStage(TrackStage(), IdentityVoter(), EventBus([sink]), unknowns=UnknownRecorder(d))
    stage.maintain()
    assert sink.events == []  # not due yet
    clock.now = 61.0
    stage.maintain()
    [event] = sink.events
    assert (event.type, event.unknown_id, event.extra["merged"]) == ("unknown_merged", old, [young])
    assert event.to_json()["unknown_id"] == old
