"""The consumer-group reader on a real Redis: ack after the handler, take-over of a dead consumer's entries,
resuming after a restart, dead letters."""

import json
import logging
import threading
import time

import pytest

from pipeline.events import IDENTITY_CONFIRMED, Event, StreamConsumer, groups
from pipeline.events.sinks import _fields

KEY = "fs:{test}:events"


def add(client, n: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        e = Event(IDENTITY_CONFIRMED, "cam0", i, f"cam0-t{i}", "ann", 0.8, i, 1000.0 + i, event_id=f"e{i}")
        client.xadd(KEY, _fields(e))
        ids.append(e.event_id)
    return ids


def pending(client, group="g") -> int:
    return client.xpending(KEY, group)["pending"]


def test_each_event_once_in_order_then_acked(redis_client):
    add(redis_client, 5)
    c = StreamConsumer(redis_client, KEY, "g", "c1", start_id="0", count=2)
    seen = []
    while c.poll(lambda e: seen.append(e.event_id), block_ms=10):
        pass
    assert seen == [f"e{i}" for i in range(5)]
    assert pending(redis_client) == 0 and c.handled == 5
    add(redis_client, 2, start=5)  # new ones after the first batch
    assert c.poll(lambda e: seen.append(e.event_id), block_ms=10) == 2 and seen[-2:] == ["e5", "e6"]
    info = groups(redis_client, KEY)
    assert info == [{"name": "g", "consumers": 1, "pending": 0, "lag": 0, "last_delivered_id": info[0]["last_delivered_id"],
                     "dead_letters": 0}]
    assert groups(redis_client, "fs:{none}:events") == []


def test_start_from_dollar_skips_history_and_groups_are_independent(redis_client):
    add(redis_client, 3)
    new = StreamConsumer(redis_client, KEY, "live", "c1")  # "$": only what comes after the group exists
    assert new.poll(lambda e: None, block_ms=10) == 0
    add(redis_client, 1, start=3)
    seen = []
    new.poll(lambda e: seen.append(e.event_id), block_ms=10)
    other = []
    StreamConsumer(redis_client, KEY, "all", "c1", start_id="0").poll(lambda e: other.append(e.event_id), 10)
    assert seen == ["e3"] and other == ["e0", "e1", "e2", "e3"]


def test_handler_failure_keeps_it_and_the_rest_pending_in_order(redis_client):
    add(redis_client, 4)
    c = StreamConsumer(redis_client, KEY, "g", "c1", start_id="0")
    seen = []

    def flaky(e):
        if e.event_id == "e2" and "fail" not in seen:
            seen.append("fail")
            raise ConnectionError("broker down")
        seen.append(e.event_id)

    with pytest.raises(ConnectionError):
        c.poll(flaky, block_ms=10)
    assert seen == ["e0", "e1", "fail"] and pending(redis_client) == 2  # e0, e1 acked; e2, e3 pending
    while c.poll(flaky, block_ms=10):
        pass
    assert seen == ["e0", "e1", "fail", "e2", "e3"] and pending(redis_client) == 0 and c.failures == 1


def test_a_killed_consumer_is_taken_over_and_a_restart_resumes(redis_client):
    add(redis_client, 6)
    dead = StreamConsumer(redis_client, KEY, "g", "dead", start_id="0", count=6)

    def crash_mid_batch(e):
        if e.event_id == "e2":
            raise KeyboardInterrupt  # the process dies: nothing after e1 is acked

    with pytest.raises(KeyboardInterrupt):
        dead.poll(crash_mid_batch, block_ms=10)
    assert pending(redis_client) == 4
    (group,) = groups(redis_client, KEY, consumers=True)  # what `enroll.py events` shows an operator
    assert (group["pending"], group["lag"]) == (4, 0)
    assert [(m["name"], m["pending"]) for m in group["members"]] == [("dead", 4)] and group["members"][0]["idle_ms"] >= 0
    # Another consumer takes the dead one's entries once they are idle long enough.
    other = StreamConsumer(redis_client, KEY, "g", "other", claim_idle_ms=50)
    seen = []
    assert other.poll(lambda e: seen.append(e.event_id), block_ms=10) == 0  # not idle long enough yet
    time.sleep(0.1)
    other._next_claim = 0.0
    while other.poll(lambda e: seen.append(e.event_id), block_ms=10):
        pass
    assert seen == ["e2", "e3", "e4", "e5"] and other.claimed == 4 and pending(redis_client) == 0
    members = {m["name"]: m["pending"] for m in groups(redis_client, KEY, consumers=True)[0]["members"]}
    assert members == {"dead": 0, "other": 0}


def test_restart_rereads_own_pending_before_new_entries(redis_client):
    add(redis_client, 3)
    c = StreamConsumer(redis_client, KEY, "g", "c1", start_id="0")
    with pytest.raises(RuntimeError):
        c.poll(lambda e: (_ for _ in ()).throw(RuntimeError("crash")), block_ms=10)
    add(redis_client, 2, start=3)
    seen = []
    again = StreamConsumer(redis_client, KEY, "g", "c1")  # a new process, same consumer name
    while again.poll(lambda e: seen.append(e.event_id), block_ms=10):
        pass
    assert seen == ["e0", "e1", "e2", "e3", "e4"] and pending(redis_client) == 0


def test_unreadable_entries_are_dead_letters_not_retried(redis_client, caplog):
    add(redis_client, 1)
    redis_client.xadd(KEY, {"event_id": "x", "type": "identity_confirmed", "data": "{not json, Ann Secret"})
    redis_client.xadd(KEY, {"event_id": "y", "data": json.dumps({"type": "identity_confirmed"})})
    redis_client.xadd(KEY, {"event_id": "z"})
    add(redis_client, 1, start=1)
    c = StreamConsumer(redis_client, KEY, "g", "c1", start_id="0")
    seen = []
    with caplog.at_level(logging.ERROR):
        assert c.poll(lambda e: seen.append(e.event_id), block_ms=10) == 5
    assert seen == ["e0", "e1"] and c.dead_letters == 3 and pending(redis_client) == 0
    assert "Ann Secret" not in caplog.text and "dead letter" in caplog.text
    assert groups(redis_client, KEY)[0]["dead_letters"] == 3
    assert c.poll(lambda e: seen.append(e.event_id), block_ms=10) == 0


def test_entries_trimmed_while_pending_are_dead_letters(redis_client):
    add(redis_client, 3)
    c = StreamConsumer(redis_client, KEY, "g", "c1", start_id="0")
    with pytest.raises(RuntimeError):
        c.poll(lambda e: (_ for _ in ()).throw(RuntimeError("crash")), block_ms=10)
    redis_client.xtrim(KEY, maxlen=1, approximate=False)  # e0, e1 gone from the stream, still pending
    seen = []
    while c.poll(lambda e: seen.append(e.event_id), block_ms=10):
        pass
    assert seen == ["e2"] and c.dead_letters == 2 and pending(redis_client) == 0


def test_deleted_stream_recreates_the_group_and_run_stops(redis_client):
    c = StreamConsumer(redis_client, KEY, "g", "c1", start_id="0")
    c.poll(lambda e: None, block_ms=10)
    redis_client.delete(KEY)
    add(redis_client, 1)
    seen = []
    stop = threading.Event()
    thread = threading.Thread(target=c.run, args=(lambda e: seen.append(e.event_id), stop), kwargs={"block_ms": 50})
    thread.start()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(2)
    assert seen == ["e0"] and not thread.is_alive()
