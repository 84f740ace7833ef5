"""The unknowns store against a real Redis: clusters, sightings, retention, caps, merge, forget, hostile input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import GalleryError
from pipeline.unknowns.sightings import DAY_S, Seen, UnknownStore

REPO = Path(__file__).resolve().parents[2]


def unit(seed: int, dim: int = 128) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def seen(seed: int, when: float | None = None, quality: float = 0.9, event: str | None = None,
         crop: bool = False) -> Seen:
    image = np.full((150, 150, 3), 128, np.uint8) if crop else None
    return Seen(unit(seed), "door", f"door-t{seed}", time.time() if when is None else when, quality, image, event)


def keys(client) -> set[bytes]:
    return set(client.scan_iter("fs:*"))


def test_a_cluster_keeps_its_id_and_faces_across_a_restart(redis_client):
    store = UnknownStore(redis_client, "g")
    cid = store.new_cluster([seen(1, crop=True), seen(2)])
    assert cid.startswith("unknown-") and len(cid) == len("unknown-") + 8
    again = UnknownStore(redis_client, "g")  # a new process: nothing held in memory
    assert [c.id for c in again.clusters()] == [cid]
    assert again.cluster(cid).sightings == 2 and again.cluster(cid).cameras == ("door",)
    members = again.members()
    assert members.cluster_ids == [cid] and members.matrix.shape == (2, 128)
    # int8 storage: each row within quantisation error of what was seen
    best = members.matrix @ np.stack([unit(1), unit(2)]).T
    assert best.max(axis=0).min() > 0.995
    faces = again.sightings(cid, crops=True)
    assert sum(f.crop_jpeg is not None and f.crop_jpeg[:2] == b"\xff\xd8" for f in faces) == 1


def test_sightings_join_a_cluster_and_an_identity(redis_client):
    store = UnknownStore(redis_client, "g")
    cid = store.new_cluster([seen(1)])
    assert store.add(cid, [seen(2), seen(3)]) == cid
    assert store.cluster(cid).sightings == 3
    store.add("f" * 32, [seen(4, event="ev1")])  # an identity's confirmation face
    assert store.event_sighting("ev1").owner == "f" * 32
    assert store.event_sighting("nope") is None
    assert [c.id for c in store.clusters()] == [cid]  # identities are not clusters


def test_retention_purges_old_sightings_and_the_clusters_they_leave_empty(redis_client):
    store = UnknownStore(redis_client, "g", retention_s=DAY_S)
    now = time.time()
    old = store.new_cluster([seen(1, now - 3 * DAY_S, event="old-ev"), seen(2, now - 2 * DAY_S)])
    mixed = store.new_cluster([seen(3, now - 3 * DAY_S), seen(4, now - 60)])
    purged = store.purge(now)
    assert (purged.sightings, purged.clusters) == (3, 1)
    assert [c.id for c in store.clusters()] == [mixed]
    assert store.cluster(mixed).sightings == 1
    with pytest.raises(GalleryError, match="no unknown person"):
        store.cluster(old)
    assert store.event_sighting("old-ev") is None
    assert not [k for k in keys(redis_client) if old.encode() in k]


def test_size_caps_drop_the_oldest(redis_client):
    store = UnknownStore(redis_client, "g", max_sightings=5, max_per_cluster=3)
    now = time.time()
    cid = store.new_cluster([seen(i, now - 100 + i) for i in range(3)])
    store.add(cid, [seen(10, now)])
    assert store.cluster(cid).sightings == 3  # per-cluster cap: the oldest went
    assert min(s.time for s in store.sightings(cid)) == pytest.approx(now - 99)
    other = store.new_cluster([seen(20 + i, now + i) for i in range(3)])
    assert store.stats()["sightings"] == 5
    assert store.cluster(other).sightings == 3


def test_merge_keeps_the_survivor_and_resolves_old_ids(redis_client):
    store = UnknownStore(redis_client, "g")
    a = store.new_cluster([seen(1, time.time() - 50)])
    b = store.new_cluster([seen(2), seen(3)])
    c = store.new_cluster([seen(4)])
    assert store.merge(a, [b]) == [b]
    store.merge(c, [a])  # a (holding b's alias) merged on: b must follow
    assert store.resolve(b) == c and store.resolve(a) == c
    assert store.cluster(c).sightings == 4
    assert all(s.owner == c for s in store.sightings(c))
    with pytest.raises(GalleryError, match=f"{b} was merged into {c}"):
        store.cluster(b)
    assert store.add(b, [seen(5)]) == c  # a track holding an old id lands in the survivor
    assert store.members().created[0] == pytest.approx(time.time() - 50, abs=5)  # oldest creation kept


def test_forget_deletes_every_trace(redis_client):
    store = UnknownStore(redis_client, "g")
    keep = store.new_cluster([seen(1)])
    before = keys(redis_client)
    doomed = store.new_cluster([seen(2, event="e2", crop=True), seen(3)])
    other = store.new_cluster([seen(4)])
    store.merge(doomed, [other])
    assert store.forget(doomed) == 3
    after = keys(redis_client)
    assert {k for k in after if b":sight:" in k} == {k for k in before if b":sight:" in k}
    assert redis_client.hgetall(store.keys.aliases) == {}
    assert store.event_sighting("e2") is None
    assert [c.id for c in store.clusters()] == [keep]


@pytest.mark.parametrize("bad, message", [
    (lambda s: s.add("unknown-00000000", [seen(1)]), "no unknown person"),
    (lambda s: s.add("unknown-zz", [seen(1)]), "not an unknown-person id"),
    (lambda s: s.cluster("../etc"), "not an unknown-person id"),
    (lambda s: s.merge("unknown-00000000", ["unknown-00000000"]), "into itself"),
    (lambda s: s.new_cluster([]), "no sightings"),
    (lambda s: s.new_cluster([Seen(np.full(128, np.nan, np.float32), "cam", "t", time.time(), 1.0)]), "NaN"),
    (lambda s: s.new_cluster([Seen(np.ones(128, np.float32), "cam", "t", time.time(), 1.0)]), "unit length"),
    (lambda s: s.new_cluster([Seen(unit(1), "", "t", time.time(), 1.0)]), "camera"),
    (lambda s: s.new_cluster([Seen(unit(1), "cam", "t", float("inf"), 1.0)]), "finite"),
    (lambda s: s.new_cluster([Seen(unit(1), "cam", "t", time.time(), 1.0, np.zeros((4, 4), np.uint8))]), "crop"),
    (lambda s: s.forget("unknown-0000000g"), "not an unknown-person id"),
])
def test_hostile_input_gives_one_clear_error_and_writes_nothing(redis_client, bad, message):
    store = UnknownStore(redis_client, "g")
    store.new_cluster([seen(9)])
    before = {k: redis_client.dump(k) for k in keys(redis_client)}
    with pytest.raises(GalleryError, match=message):
        bad(store)
    assert {k: redis_client.dump(k) for k in keys(redis_client)} == before


WRITER = """
import sys, time, numpy as np, redis
from pipeline.unknowns.sightings import Seen, UnknownStore
store = UnknownStore(redis.Redis.from_url(sys.argv[1]), "g")
rng = np.random.default_rng(0)
print("ready", flush=True)
while True:
    faces = []
    for _ in range(20):
        v = rng.standard_normal(128).astype(np.float32)
        faces.append(Seen(v / np.linalg.norm(v), "cam", "cam-t1", time.time(), 0.5, np.zeros((150, 150, 3), np.uint8)))
    store.new_cluster(faces)
"""


def test_a_killed_writer_leaves_no_half_cluster(redis_client, redis_server):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, redis_server.url], cwd=REPO, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == b"ready"
    deadline = time.time() + 20
    while redis_client.hlen("fs:{g}:unknowns") < 5 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = UnknownStore(redis_client, "g")
    clusters = store.clusters()
    assert len(clusters) >= 5
    assert {c.sightings for c in clusters} == {20}  # every cluster whole
    owners = {s.owner for c in clusters for s in store.sightings(c.id)}
    assert owners == {c.id for c in clusters}
    assert redis_client.zcard(store.keys.sightings) == 20 * len(clusters)  # no orphan sighting
