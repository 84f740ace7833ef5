"""The in-memory gallery mirror against a real redis-server: following changes, gaps, outages."""

import socket
import time

import numpy as np
import pytest
import redis

from pipeline.core.errors import GalleryError
from pipeline.gallery import GalleryMirror, GalleryStore
from pipeline.gallery.codec import to_float
from pipeline.redis.server import EmbeddedRedis


def unit(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rows_by_name(snapshot) -> dict[str, np.ndarray]:
    decoded = to_float(snapshot.matrix, snapshot.scales)
    return {name: decoded[snapshot.owner == i] for i, name in enumerate(snapshot.names)}


def assert_same(mirror: GalleryMirror, store: GalleryStore) -> None:
    """The mirror holds exactly what a fresh snapshot of the store holds (rows per identity, any order)."""
    mine, fresh = rows_by_name(mirror.current()), rows_by_name(store.snapshot())
    assert sorted(mine) == sorted(fresh)
    for name in fresh:
        np.testing.assert_array_equal(np.sort(mine[name], axis=0), np.sort(fresh[name], axis=0))


@pytest.fixture
def store(redis_client) -> GalleryStore:
    return GalleryStore(redis_client, "mirror")


def test_mirror_follows_add_rename_remove(store):
    store.add("Ada", unit(2, seed=1), ["a0", "a1"], "m")
    with GalleryMirror(store, poll_ms=50) as mirror:
        first = mirror.current()
        assert first.names == ["Ada"] and first.matrix.shape == (2, 128) and mirror.healthy
        version = mirror.version
        store.add("Bob", unit(1, seed=2), ["b0"], "m")
        assert mirror.wait_for(lambda s: "Bob" in s.names, 2)
        assert mirror.version > version
        np.testing.assert_array_equal(mirror.current().matrix[:2], first.matrix)  # append keeps the prefix
        store.add("Ada", unit(1, seed=3), ["a2"], "m")
        store.rename("Bob", "Robert")
        assert mirror.wait_for(lambda s: "Robert" in s.names and len(s.owner) == 4, 2)
        store.remove("Ada")
        assert mirror.wait_for(lambda s: s.names == ["Robert"], 2)
        assert_same(mirror, store)
        assert mirror.current().stream_id == f"{store.head()[0]}-0"
        assert mirror.lag_s < 1.0
    assert first.names == ["Ada"] and len(first.owner) == 2  # old snapshots never change


def test_snapshot_arrays_are_read_only(store):
    store.add("Ada", unit(2), ["a0", "a1"], "m")
    with GalleryMirror(store) as mirror:
        with pytest.raises(ValueError):
            mirror.current().matrix[0, 0] = 0.0


def test_int8_mirror_keeps_codes_and_scales(redis_client):
    store = GalleryStore(redis_client, "m8", dtype="int8")
    rows = unit(3)
    store.add("Ada", rows, ["0", "1", "2"], "m")
    with GalleryMirror(store, poll_ms=50) as mirror:
        store.add("Bob", unit(1, seed=5), ["b"], "m")
        assert mirror.wait_for(lambda s: len(s.owner) == 4, 2)
        snap = mirror.current()
        assert snap.dtype == "int8" and snap.matrix.dtype == np.int8 and snap.scales.shape == (4,)
        assert np.abs(to_float(snap.matrix, snap.scales)[:3] - rows).max() < 0.005


def test_start_replays_changes_made_while_snapshotting(store, monkeypatch):
    store.add("Ada", unit(1), ["a"], "m")
    real = store.snapshot

    def slow_snapshot():
        snap = real()
        store.add("Late", unit(1, seed=1), ["l"], "m")  # lands after the snapshot's stream id
        monkeypatch.setattr(store, "snapshot", real)
        return snap

    monkeypatch.setattr(store, "snapshot", slow_snapshot)
    with GalleryMirror(store) as mirror:
        assert sorted(mirror.current().names) == ["Ada", "Late"]
        assert mirror.current().stream_id == "2-0"


def test_a_mirror_behind_a_trimmed_stream_resnapshots(store):
    store.add("Ada", unit(1), ["a"], "m")
    mirror = GalleryMirror(store, poll_ms=50).start()
    mirror.stop()  # frozen at change 1
    for i in range(5):
        store.add(f"p{i}", unit(1, seed=i), ["t"], "m")
    store.client.xtrim(store.keys.changes, maxlen=2, approximate=False)  # changes 2..4 are gone for good
    assert mirror._step() is False  # the gap is seen ...
    mirror._thread = None
    mirror.start()  # ... and a restart (what the thread does on False) re-snapshots
    assert sorted(mirror.current().names) == ["Ada"] + [f"p{i}" for i in range(5)]
    mirror.stop()


def test_mirror_recovers_after_the_gallery_is_flushed_and_rewritten(store):
    store.add("Ada", unit(1), ["a"], "m")
    with GalleryMirror(store, poll_ms=50) as mirror:
        store.client.flushall()  # change numbers restart: a new epoch must be noticed
        store.add("Bob", unit(1, seed=1), ["b"], "m")
        store.add("Cy", unit(1, seed=2), ["c"], "m")
        assert mirror.wait_for(lambda s: sorted(s.names) == ["Bob", "Cy"], 3)
        store.clear()
        assert mirror.wait_for(lambda s: len(s) == 0, 3)


def test_mirror_keeps_serving_while_redis_is_down_and_catches_up(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    store = GalleryStore(server.client(), "outage", reconnect=lambda: server.client())
    store.add("Ada", unit(1), ["a"], "m")
    mirror = GalleryMirror(store, poll_ms=50).start()
    try:
        old_port = server.port
        server.stop()
        deadline = time.monotonic() + 15
        while mirror.healthy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not mirror.healthy and mirror.last_error
        assert mirror.current().names == ["Ada"]  # still serving the last snapshot
        time.sleep(0.3)
        assert mirror.lag_s > 0.2

        with socket.socket() as squatter:  # its old port taken: it comes back on another, only a new client reaches it
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the mirror's TIME_WAIT
            squatter.bind(("127.0.0.1", old_port))
            squatter.listen()
            server.start()  # same data folder (AOF)
        assert server.port != old_port
        writer = GalleryStore(server.client(), "outage")
        assert writer.get("Ada").templates == 1
        writer.add("Bob", unit(1, seed=1), ["b"], "m")
        assert mirror.wait_for(lambda s: sorted(s.names) == ["Ada", "Bob"], 15)
        assert mirror.healthy and mirror.last_error is None and mirror.lag_s < 1.0
    finally:
        mirror.stop()
        server.stop()


def test_current_before_start_is_an_error(store):
    with pytest.raises(GalleryError, match="not started"):
        GalleryMirror(store).current()


def test_start_fails_clearly_when_redis_is_unreachable(tmp_path):
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(port=1, retry=Retry(NoBackoff(), 0), socket_connect_timeout=0.5)
    with pytest.raises(GalleryError, match="Redis failed to snapshot for gallery 'x'"):
        GalleryMirror(GalleryStore(client, "x")).start()


def test_mirror_of_an_empty_gallery_takes_the_dtype_of_its_first_writer(redis_client):
    with GalleryMirror(GalleryStore(redis_client, "fresh"), poll_ms=50) as mirror:  # guesses float32
        GalleryStore(redis_client, "fresh", dtype="int8").add("Ada", unit(2), ["a", "b"], "m")
        assert mirror.wait_for(lambda s: len(s.owner) == 2, 3)
        snap = mirror.current()
        assert snap.dtype == "int8" and snap.matrix.dtype == np.int8 and snap.scales.shape == (2,)
