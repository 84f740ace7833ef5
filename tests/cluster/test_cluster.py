"""facestream on a real Redis Cluster (3 masters + 3 replicas): connecting, the gallery and its mirror, the event
stream with a consumer group, the unknowns store, and replicated writes (WAIT)."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from pipeline.core.errors import GalleryError
from pipeline.events import IDENTITY_CONFIRMED, Event, StreamConsumer, groups
from pipeline.events.sinks import RedisStreamSink, events_key
from pipeline.gallery import GalleryMirror, GalleryStore
from pipeline.gallery.matcher import Matcher
from pipeline.gallery.search import ExactSearch
from pipeline.redis.connect import connect
from pipeline.unknowns.operations import name_cluster
from pipeline.unknowns.sightings import Seen, UnknownStore


def unit(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def event(i: int) -> Event:
    return Event(IDENTITY_CONFIRMED, "cam0", i, f"cam0-t{i}", "Ada", 0.8, i, 1000.0 + i, event_id=f"e{i}")


def test_connect_gives_a_cluster_client_from_any_seed(redis_cluster, tmp_path):
    one_seed = redis_cluster.url.rsplit(",", 5)[0]  # the first node only: the rest is discovered
    for url in (redis_cluster.url, one_seed):
        client = connect(url, tmp_path)
        try:
            assert isinstance(client, RedisCluster)
            assert len(client.get_primaries()) == 3
            assert client.ping()
        finally:
            client.close()
    assert not (tmp_path / "redis").exists()  # no embedded server for a cluster URL


def test_a_wrong_cluster_password_is_an_authentication_failure(redis_cluster, tmp_path):
    url = redis_cluster.url.replace(redis_cluster.password, "not-the-s3cret")
    with pytest.raises(GalleryError, match="authentication failed") as info:
        connect(url, tmp_path)
    assert "not-the-s3cret" not in str(info.value) and redis_cluster.password not in str(info.value)


def test_a_gallery_lives_in_one_slot_on_one_master(cluster_client, redis_cluster):
    store = GalleryStore(cluster_client, "one-slot")
    store.clear()
    for i in range(5):
        store.add(f"p{i}", unit(2, seed=i), [f"t{i}a", f"t{i}b"], "m", crops=[b"\xff\xd8\xff\xe0jpeg", None])
    store.add_negatives("p0", unit(1, seed=99), ["n0"])
    slot = key_slot(store.keys.head.encode())
    master = redis_cluster.master_of(store.keys.head)
    with redis_cluster.admin(master) as node:
        keys = node.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    # head, meta, names, changes, neg-ids + per identity id:<id> (+ crops, negatives where written)
    assert {k.split(b":")[2] for k in keys} == {b"head", b"meta", b"names", b"changes", b"neg-ids", b"id",
                                                b"crops", b"neg"}
    assert len([k for k in keys if b":id:" in k]) == 5


def test_gallery_mirror_and_matcher_on_a_cluster(cluster_client):
    store = GalleryStore(cluster_client, "cluster-mirror")
    store.clear()
    faces = unit(6, seed=7)
    store.add("Ada", faces[:2], ["a0", "a1"], "m")
    with GalleryMirror(store, poll_ms=50) as mirror:
        assert mirror.current().names == ["Ada"]
        store.add("Bob", faces[2:4], ["b0", "b1"], "m")
        store.add("Cy", faces[4:5], ["c0"], "m")
        store.rename("Cy", "Cyrus")
        store.remove("Ada")
        assert mirror.wait_for(lambda s: sorted(s.names) == ["Bob", "Cyrus"], 5), mirror.last_error
        matcher = Matcher(ExactSearch(mirror), threshold=0.5)
        found = matcher.match(np.stack([faces[3], faces[4], faces[0]]))
        assert [m.identity for m in found] == ["Bob", "Cyrus", None]  # Ada was removed
        assert found[0].similarity == pytest.approx(1.0, abs=1e-5) and mirror.healthy


def test_events_stream_and_consumer_group_on_a_cluster(cluster_client):
    key = events_key("cluster-events")
    cluster_client.delete(key)
    sink = RedisStreamSink(cluster_client, key)
    try:
        for i in range(30):
            sink.emit(event(i))
        assert sink.flush(timeout=10), sink.last_error
    finally:
        sink.close()
    assert cluster_client.xlen(key) == 30
    consumer = StreamConsumer(cluster_client, key, "g", "c1", start_id="0", count=7)
    seen: list[str] = []
    while consumer.poll(lambda e: seen.append(e.event_id), block_ms=10):
        pass
    assert seen == [f"e{i}" for i in range(30)]
    assert cluster_client.xpending(key, "g")["pending"] == 0
    assert [(g["name"], g["pending"], g["lag"]) for g in groups(cluster_client, key)] == [("g", 0, 0)]


def test_unknowns_round_trip_on_a_cluster(cluster_client):
    store = UnknownStore(cluster_client, "cluster-unknowns")
    now = time.time()
    faces = unit(3, seed=21)
    cid = store.new_cluster([Seen(faces[0], "door", "door-t1", now, 0.9, None, "ev1"),
                             Seen(faces[1], "door", "door-t2", now, 0.9, None, None)])
    assert store.add(cid, [Seen(faces[2], "hall", "hall-t3", now, 0.8, None, None)]) == cid
    again = UnknownStore(cluster_client, "cluster-unknowns")
    assert [c.id for c in again.clusters()] == [cid]
    assert again.cluster(cid).sightings == 3 and again.cluster(cid).cameras == ("door", "hall")
    assert again.event_sighting("ev1").owner == cid
    assert again.members().matrix.shape == (3, 128)
    other = again.new_cluster([Seen(faces[0], "door", "door-t4", now, 0.9, None, None)])
    again.forget(other)
    assert again.event_sighting("ev1").owner == cid and [c.id for c in again.clusters()] == [cid]
    # Naming: the gallery's add and the unknowns' move in one MULTI across both stores' keys (one hash tag).
    gallery = GalleryStore(cluster_client, "cluster-unknowns")
    gallery.clear()
    named = name_cluster(again, gallery, cid, "Dee", "m", min_similarity=-1.0)
    assert named.name == "Dee" and named.templates_added == 3 and gallery.get("Dee").templates == 3
    assert again.clusters() == [] and again.event_sighting("ev1").owner == named.identity_id


def test_replicated_writes_wait_for_the_replica_and_say_so_when_it_does_not_answer(cluster_client, redis_cluster):
    store = GalleryStore(cluster_client, "cluster-wait", wait_replicas=1, wait_timeout_ms=300)
    store.clear()
    store.add("Ada", unit(1, seed=1), ["a0"], "m")
    replica = redis_cluster.replica_of(redis_cluster.master_of(store.keys.head))
    with redis_cluster.admin(replica) as c:  # a replica that confirmed the write has it (READONLY reads)
        c.execute_command("READONLY")
        assert c.hlen(store.keys.names) == 1
    replica.proc.send_signal(signal.SIGSTOP)  # shorter than cluster-node-timeout: nobody fails over
    try:
        started = time.monotonic()
        # WAIT runs on the connection that wrote: a WAIT sent on another (idle) connection would return at once
        with pytest.raises(GalleryError, match=r"only 0 of 1 replica\(s\) confirmed it within 300 ms"):
            store.add("Bob", unit(1, seed=2), ["b0"], "m")
        assert 0.25 < time.monotonic() - started < 3.0
    finally:
        replica.proc.send_signal(signal.SIGCONT)
    assert store.get("Bob").templates == 1  # on the master all along; and writes confirm again:
    store.add("Cy", unit(1, seed=3), ["c0"], "m")
    unreplicated = GalleryStore(cluster_client, "cluster-wait")
    assert sorted(i.name for i in unreplicated.identities()) == ["Ada", "Bob", "Cy"]


def test_wait_settings_are_checked():
    with pytest.raises(GalleryError, match="wait_replicas must be >= 0"):
        GalleryStore(None, "g", wait_replicas=-1)


def test_replicated_writes_on_a_server_without_replicas_fail_plainly(redis_client):
    store = GalleryStore(redis_client, "no-replica", wait_replicas=1, wait_timeout_ms=100)
    with pytest.raises(GalleryError, match=r"only 0 of 1 replica\(s\) confirmed it within 100 ms"):
        store.add("Ada", unit(1, seed=1), ["a0"], "m")
    assert GalleryStore(redis_client, "no-replica").get("Ada").templates == 1  # written, just not confirmed
    GalleryStore(redis_client, "no-replica").add("Bob", unit(1, seed=2), ["b0"], "m")  # the default never WAITs
