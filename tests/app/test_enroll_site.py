"""enroll.py's site commands on a real Redis: `events` (consumer groups of the event stream: lag, pending
entries, each consumer's pending and idle time)."""

from __future__ import annotations

import json

import enroll
from pipeline.events import IDENTITY_CONFIRMED, Event, StreamConsumer, events_key
from pipeline.events.sinks import _fields


def run(redis_server, capsys, *command: str, gallery: str = "site") -> tuple[int, str, str]:
    code = enroll.main(["--redis-url", redis_server.url, "--gallery", gallery, *command])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_events_shows_each_groups_lag_pending_and_consumers(redis_server, redis_client, capsys):
    stream = events_key("site")
    for i in range(5):
        redis_client.xadd(stream, _fields(Event(IDENTITY_CONFIRMED, "door", i, f"door-t{i}", "Ada", 0.8, i, 1.0)))
    mqtt = StreamConsumer(redis_client, stream, "mqtt", "bridge-1", start_id="0", count=3)

    def dies_on_the_third(event):
        if event.track == 2:
            raise RuntimeError("broker gone")

    try:
        mqtt.poll(dies_on_the_third, block_ms=10)
    except RuntimeError:
        pass
    code, out, _ = run(redis_server, capsys, "events")
    assert code == 0
    assert "fs:{site}:events: 5 events kept, 1 consumer group" in out
    assert out.splitlines()[2].split()[:4] == ["mqtt", "2", "1", "0"]  # 2 never delivered, 1 pending, 0 dead
    assert "bridge-1" in out and "pending      1" in out
    code, out, _ = run(redis_server, capsys, "events", "--json")
    (group,) = json.loads(out)["groups"]
    assert (group["lag"], group["pending"], group["members"][0]["pending"]) == (2, 1, 1)


def test_events_of_a_gallery_without_a_stream(redis_server, redis_client, capsys):
    code, out, _ = run(redis_server, capsys, "events", "--json", gallery="nobody")
    assert code == 0 and json.loads(out) == {"command": "events", "gallery": "nobody", "stream": "fs:{nobody}:events",
                                             "length": 0, "groups": []}
