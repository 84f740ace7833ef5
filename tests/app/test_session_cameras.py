"""A worker's session: no camera at the start, cameras added and removed while it runs (what a lease brings
and takes away). A camera's settings are validated when it is added; a removed camera's tracks end, with their
events, before `remove_camera` returns; adding it again goes on with new track ids."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.app.config import load_app_config
from pipeline.app.session import RunOptions, Session
from pipeline.core.errors import ConfigError
from pipeline.events import MemorySink

CLIP = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"
PHOTOS = {"Lin-Manuel Miranda": "ageitgey_face_recognition_examples/reference_photos/lin-manuel-miranda.png"}


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_cameras_come_and_go_in_a_running_session(redis_server, shared_data, enrol_photos):
    gallery = enrol_photos("test-session-cameras", PHOTOS)
    cfg = load_app_config(None, ["sources.realtime=true"])  # paced: the clip plays for 11 s
    session = Session(cfg, RunOptions(sources=[], gallery=gallery, redis_url=redis_server.url, keep_open=True))
    sink = MemorySink()
    session.bus.sinks.append(sink)
    runner = threading.Thread(target=session.run, daemon=True)
    try:
        runner.start()
        time.sleep(0.3)
        assert runner.is_alive()  # no camera yet: the session waits, it does not end
        with pytest.raises(ConfigError, match="fps_cap"):
            session.add_camera("door", str(shared_data / CLIP), {"fps_cap": -1})
        assert "door" not in session.cfg.cameras
        session.add_camera("door", str(shared_data / CLIP), {"min_face_size": 40, "masks": []})
        wait_for(lambda: any(e.type == "track_started" for e in sink.events))
        assert session.remove_camera("door") and not session.remove_camera("door")
        started = {e.track for e in sink.events if e.type == "track_started"}
        ended = {e.track for e in sink.events if e.type == "track_ended"}
        assert started and started <= ended  # every announced track ended before remove_camera returned
        before = len(sink.events)
        session.add_camera("door", str(shared_data / CLIP))
        wait_for(lambda: any(e.type == "track_started" for e in sink.events[before:]))
        again = {e.track for e in sink.events[before:] if e.type == "track_started"}
        assert min(again) > max(started)  # the camera's track ids go on, never reused
    finally:
        session.runner.stop()
        runner.join(30)
        session.close()
    assert not runner.is_alive()
    assert session.summary()["sources"]["door"]["frames_read"] > 0
