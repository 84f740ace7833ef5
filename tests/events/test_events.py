"""Events and sinks: JSONL lines, the Redis Stream cap, and delivery through Redis outages (real servers)."""

import json
import threading
import time

import numpy as np
import pytest
import redis

from pipeline.core.errors import FacestreamError, GalleryError
from pipeline.events import (
    IDENTITY_CONFIRMED,
    TRACK_ENDED,
    TRACK_STARTED,
    Event,
    EventBus,
    JsonlSink,
    MemorySink,
    RedisStreamSink,
    encode_crop,
    events_key,
)
from pipeline.redis.server import EmbeddedRedis
from pipeline.video.tracker import Track

KEY = "fs:{test}:events"


def event(n: int, type: str = IDENTITY_CONFIRMED, **kwargs) -> Event:
    return Event(type, "cam0", n, f"cam0-t{n}", kwargs.pop("identity", "ann"), kwargs.pop("similarity", 0.81),
                 n, 1000.0 + n, **kwargs)


def stream_ids(client, key=KEY) -> list[str]:
    return [fields[b"event_id"].decode() for _, fields in client.xrange(key)]


def wait_until(predicate, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_event_json_round_trip_and_track_helper():
    t = Track(id=7, camera="door", box=np.zeros(4, np.float32), anon_id="door-t7", identity=None, similarity=0.42)
    e = Event.for_track(TRACK_ENDED, t, frame=120, time=5.5, extra={"hits": 30})
    data = e.to_json()
    assert {k: data[k] for k in ("type", "camera", "track", "anon_id", "identity", "similarity", "frame", "time")} == {
        "type": "track_ended", "camera": "door", "track": 7, "anon_id": "door-t7", "identity": None,
        "similarity": 0.42, "frame": 120, "time": 5.5}
    assert data["extra"] == {"hits": 30} and len(data["event_id"]) == 32 and "crop_jpeg_b64" not in data
    assert Event.from_json(json.loads(json.dumps(data))) == e
    assert event(1, similarity=float("nan")).to_json()["similarity"] is None  # NaN is not JSON
    assert event(1).event_id != event(1).event_id
    assert events_key("main") == "fs:{main}:events"
    with pytest.raises(GalleryError):
        events_key("bad}name")


def test_jsonl_lines_parse_even_with_concurrent_writers(tmp_path):
    path = tmp_path / "out" / "events.jsonl"
    sinks = [JsonlSink(path), JsonlSink(path)]  # two writers on one file (e.g. two workers)
    crop = encode_crop(np.full((40, 40, 3), 128, np.uint8))
    threads = [threading.Thread(target=lambda s=s, k=k: [s.emit(event(k * 1000 + i, crop_jpeg_b64=crop,
                                                                       extra={"note": "line\nbreak"}))
                                                          for i in range(150)]) for k, s in enumerate(sinks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sink in sinks:
        sink.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 301
    parsed = [json.loads(line) for line in lines[:-1]]
    assert sorted(p["track"] for p in parsed) == sorted([i for i in range(150)] + [1000 + i for i in range(150)])
    assert all(p["extra"]["note"] == "line\nbreak" and p["crop_jpeg_b64"] == crop for p in parsed)
    with pytest.raises(FacestreamError, match="closed"):
        sinks[0].emit(event(1))


def test_bus_strips_crops_by_default_counts_types_and_survives_a_broken_sink(tmp_path):
    class Broken:
        def emit(self, e):
            raise OSError("disk gone")

        def flush(self, timeout=None):
            return True

        def close(self, timeout=None):
            pass

    memory = MemorySink()
    crop = encode_crop(np.zeros((8, 8, 3), np.uint8))
    with EventBus([Broken(), memory, JsonlSink(tmp_path / "e.jsonl")]) as bus:
        bus.emit(event(1, TRACK_STARTED, crop_jpeg_b64=crop))
        bus.emit(event(1, crop_jpeg_b64=crop))
        bus.emit(event(1, TRACK_ENDED))
    assert [e.type for e in memory.events] == [TRACK_STARTED, IDENTITY_CONFIRMED, TRACK_ENDED]
    assert all(e.crop_jpeg_b64 is None for e in memory.events)
    assert "crop_jpeg_b64" not in (tmp_path / "e.jsonl").read_text()
    assert bus.counts == {TRACK_STARTED: 1, IDENTITY_CONFIRMED: 1, TRACK_ENDED: 1} and bus.sink_errors == 3
    with_crops = EventBus([memory], include_crops=True)
    assert with_crops.emit(event(2, crop_jpeg_b64=crop)).crop_jpeg_b64 == crop


def test_stream_is_capped_at_maxlen(redis_client):
    exact = RedisStreamSink(redis_client, KEY, maxlen=50, approximate=False)
    sent = [event(i) for i in range(200)]
    for e in sent:
        exact.emit(e)
    assert exact.flush(timeout=10)
    exact.close()
    assert redis_client.xlen(KEY) == 50
    assert stream_ids(redis_client) == [e.event_id for e in sent[-50:]]  # the newest, in order
    data = json.loads(redis_client.xrange(KEY)[-1][1][b"data"])
    assert data["event_id"] == sent[-1].event_id and data["type"] == IDENTITY_CONFIRMED

    approximate = RedisStreamSink(redis_client, "fs:{test}:approx", maxlen=100)
    for i in range(1000):
        approximate.emit(event(i))
    approximate.close(timeout=10)
    assert 100 <= redis_client.xlen("fs:{test}:approx") < 300  # trimmed by whole nodes of ~100 entries
    assert redis_client.ping()  # the caller's client still works (the sink used its own)


def test_events_survive_a_redis_restart_exactly_once_in_order(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        sink = RedisStreamSink(server.client, KEY, backoff_initial=0.05, backoff_max=0.5)
        sent = [event(i) for i in range(12)]
        for e in sent[:5]:
            sink.emit(e)
        assert sink.flush(timeout=10)
        first_port = server.port
        server.stop()
        for e in sent[5:]:
            sink.emit(e)
        assert wait_until(lambda: sink.stats()["failures"] >= 2)  # it noticed, and kept retrying
        assert sink.pending == 7
        server.start()
        assert server.port == first_port  # the embedded server comes back where it was
        assert sink.flush(timeout=20), sink.stats()
        sink.close()
        client = server.client()
        assert stream_ids(client) == [e.event_id for e in sent]
        assert sink.stats()["delivered"] == 12 and sink.stats()["dropped"] == 0
        client.close()
    finally:
        server.stop()


class FlakyPipeline:
    """Executes the XADDs, then reports a lost connection: the writes happened, the reply did not arrive."""

    def __init__(self, pipe, state):
        self.pipe, self.state = pipe, state

    def xadd(self, *args, **kwargs):
        self.pipe.xadd(*args, **kwargs)

    def execute(self):
        result = self.pipe.execute()
        if self.state["fail"] > 0:
            self.state["fail"] -= 1
            raise redis.ConnectionError("connection reset by peer")
        return result


class FlakyClient:
    def __init__(self, client, state):
        self.client, self.state = client, state

    def pipeline(self, transaction=False):
        return FlakyPipeline(self.client.pipeline(transaction=transaction), self.state)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_an_ambiguous_write_is_not_duplicated(redis_server, redis_client):
    state = {"fail": 1}
    sink = RedisStreamSink(lambda: FlakyClient(redis_server.client(), state), KEY, backoff_initial=0.01)
    redis_client.xadd(KEY, {"event_id": "someone-else"})  # another worker's entry before ours
    sent = [event(i) for i in range(3)]
    for e in sent:
        sink.emit(e)
    assert sink.flush(timeout=10)
    sink.emit(extra := event(3))
    sink.close()
    assert stream_ids(redis_client) == ["someone-else"] + [e.event_id for e in sent + [extra]]
    assert sink.stats()["failures"] == 1 and sink.stats()["duplicates_skipped"] == 3


def test_buffer_is_bounded_and_drops_the_oldest_while_redis_is_down(redis_server, redis_client):
    up = threading.Event()

    def factory():
        if not up.is_set():
            raise redis.ConnectionError("connection refused")
        return redis_server.client()

    sink = RedisStreamSink(factory, KEY, buffer_size=5, backoff_initial=0.02, backoff_max=0.05)
    sent = [event(i) for i in range(8)]
    for e in sent:
        sink.emit(e)
    assert sink.stats()["dropped"] == 3 and sink.pending == 5
    assert not sink.flush(timeout=0.2)
    up.set()
    assert sink.flush(timeout=10)
    sink.close()
    delivered = stream_ids(redis_client)
    order = [e.event_id for e in sent]
    # Five survive, in emission order; which ones were dropped depends on whether the sender thread had a
    # batch in flight (never dropped) when the buffer overflowed.
    assert len(delivered) == 5 and set(delivered) <= set(order)
    assert delivered == sorted(delivered, key=order.index)
    with pytest.raises(FacestreamError, match="closed"):
        sink.emit(event(9))


def test_bus_close_flushes_every_sink(redis_client, tmp_path):
    bus = EventBus([JsonlSink(tmp_path / "e.jsonl"), RedisStreamSink(redis_client, KEY)])
    for i in range(20):
        bus.emit(event(i))
    bus.close()  # the Ctrl-C path: nothing queued may be lost
    assert redis_client.xlen(KEY) == 20
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 20
    assert not [t for t in threading.enumerate() if t.name.startswith("events-") and t.is_alive()]


def test_a_stamp_marks_events_and_holds_back_those_of_a_lost_lease():
    from dataclasses import replace as with_fields

    from pipeline.events import EventBus, MemorySink

    held = {"door": 7}  # camera -> fencing token of the lease this worker holds

    def stamp(event):
        token = held.get(event.camera)
        return None if token is None else with_fields(event, extra={**event.extra, "lease": token})

    sink = MemorySink()
    bus = EventBus([sink], stamp=stamp)
    door = Event(TRACK_STARTED, "door", 1, "door-t1", None, None, 3, 1.0)
    hall = Event(TRACK_STARTED, "hall", 1, "hall-t1", None, None, 3, 1.0)
    assert bus.emit(door).extra == {"lease": 7}
    assert bus.emit(hall) is None
    assert [e.extra for e in sink.events] == [{"lease": 7}]
    assert bus.held_back == 1 and bus.counts[TRACK_STARTED] == 1
