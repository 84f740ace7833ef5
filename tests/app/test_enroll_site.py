"""enroll.py's site commands on a real Redis: `events` (consumer groups of the event stream: lag, pending
entries, each consumer's pending and idle time)."""

from __future__ import annotations

import json

import pytest

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


# -- cameras --------------------------------------------------------------------------------------------------
def test_cameras_add_list_disable_enable_remove(redis_server, redis_client, capsys):
    from pipeline.cameras import LeaseManager

    url = "rtsp://viewer:hunter2@10.0.0.5/stream"
    code, out, _ = run(redis_server, capsys, "cameras", "add", "door", url, "--setting", "fps_cap=5",
                       "--setting", "motion.enabled=true", "--setting", "masks=[[[0, 0], [40, 0], [40, 40]]]")
    assert code == 0 and "camera door registered: rtsp://viewer:***@10.0.0.5/stream" in out
    assert run(redis_server, capsys, "cameras", "add", "hall", "http://10.0.0.6/video.mjpg", "--disabled")[0] == 0
    lease = LeaseManager(redis_client, "worker-a").claim("door")
    code, out, _ = run(redis_server, capsys, "cameras", "list", "--json")
    listed = json.loads(out)
    door, hall = listed["cameras"]
    assert door == {"name": "door", "url": "rtsp://viewer:***@10.0.0.5/stream", "enabled": True,
                    "settings": {"fps_cap": 5, "motion": {"enabled": True}, "masks": [[[0, 0], [40, 0], [40, 40]]]},
                    "worker": "worker-a", "lease": lease.token}
    assert (hall["enabled"], hall["worker"]) == (False, None)
    assert "hunter2" not in out
    code, out, _ = run(redis_server, capsys, "cameras", "list")
    assert "door" in out and "worker-a" in out and "2 cameras, 0 live workers: none" in out
    for verb in ("enable", "disable"):
        assert run(redis_server, capsys, "cameras", verb, "hall")[0] == 0
    assert run(redis_server, capsys, "cameras", "remove", "hall")[0] == 0
    assert [c["name"] for c in json.loads(run(redis_server, capsys, "cameras", "list", "--json")[1])["cameras"]] \
        == ["door"]


@pytest.mark.parametrize(("args", "message"), [
    (["--setting", "fps_cap=-1"], "fps_cap"),
    (["--setting", "nonsense=1"], "unknown key 'nonsense'"),
    (["--setting", "fps_cap"], "--setting must be KEY=VALUE"),
    (["--setting", "masks=[[[0, 0], [1, 1]]]"], "at least 3"),
])
def test_cameras_add_refuses_settings_run_py_would_refuse(redis_server, redis_client, capsys, args, message):
    code, out, err = run(redis_server, capsys, "cameras", "add", "door", "rtsp://10.0.0.5/s", *args)
    assert code == enroll.EXIT_ERROR and message in err
    assert json.loads(run(redis_server, capsys, "cameras", "list", "--json")[1])["cameras"] == []  # nothing stored


def test_cameras_load_is_all_or_nothing(redis_server, redis_client, capsys, tmp_path):
    good = tmp_path / "cameras.yaml"
    good.write_text("door: {url: 'rtsp://10.0.0.5/s', fps_cap: 5}\nhall: {url: 'http://10.0.0.6/v', enabled: false}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("gate: {url: 'rtsp://10.0.0.7/s'}\nyard: {url: 'rtsp://10.0.0.8/s', min_face_size: 2}\n")
    assert run(redis_server, capsys, "cameras", "load", str(good))[0] == 0
    code, _, err = run(redis_server, capsys, "cameras", "load", str(bad))
    assert code == enroll.EXIT_ERROR and "yard" in err and "min_face_size" in err
    names = [c["name"] for c in json.loads(run(redis_server, capsys, "cameras", "list", "--json")[1])["cameras"]]
    assert names == ["door", "hall"]  # the bad file wrote nothing, not even its good camera
    (tmp_path / "one.yaml").write_text("door: {url: 'rtsp://10.0.0.5/s'}\n")
    assert run(redis_server, capsys, "cameras", "load", str(tmp_path / "one.yaml"), "--prune")[0] == 0
    names = [c["name"] for c in json.loads(run(redis_server, capsys, "cameras", "list", "--json")[1])["cameras"]]
    assert names == ["door"]
