"""The console's SnapshotPublisher against a real Redis, on a real frame of the Hamilton clip: at most `fps` frames
per camera per second (fake clock), downscaled, with a TTL, health for every camera; a dead Redis costs frames,
never the stream."""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.core.errors import ConfigError, SourceError
from pipeline.video.output import BoxLabel
from pipeline.video.snapshots import SnapshotPublisher
from pipeline.video.sources import FrameSource

CLIP = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"
LABELS = (BoxLabel((100, 50, 180, 150), "#1 Lin-Manuel Miranda 0.71", known=True),)


@pytest.fixture(scope="module")
def frame(shared_data) -> np.ndarray:
    capture = cv2.VideoCapture(str(shared_data / CLIP))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, image = capture.read()
    capture.release()
    assert ok
    return image


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Stats:
    fps: float = 25.0
    frames_read: int = 40
    frames_dropped: int = 2
    state: str = "running"
    errors: int = 0
    reconnects: int = 1


def publisher(client, clock, stats=None, **kw) -> SnapshotPublisher:
    settings = {"fps": 2.0, "px": 160, "ttl_s": 10.0} | kw
    return SnapshotPublisher(client, "g", stats_fn=lambda: stats or {"cam0": Stats()}, clock=clock, **settings)


def test_at_most_fps_frames_per_camera_per_second(redis_client, frame):
    clock = Clock()
    p = publisher(redis_client, clock)
    taken = []
    for step in range(30):  # 3 s of a 10 fps camera, and a second camera offered every frame too
        clock.now = 1000.0 + step * 0.1
        taken.append(p.offer("cam0", frame, LABELS, step))
        p.offer("cam1", frame, (), step)
        p.publish()
    assert sum(taken) == 6 and [i for i, t in enumerate(taken) if t] == [0, 5, 10, 15, 20, 25]
    assert p.published == 12 and p.skipped == 48 and p.replaced == 0
    assert p.health_published <= 2 * 6 + 2  # health too: at most fps per camera per second


def test_the_frame_is_annotated_downscaled_and_expires(redis_client, frame):
    p = publisher(redis_client, Clock(), px=160, ttl_s=7.5)
    p.offer("cam0", frame, LABELS, 100)
    assert p.publish() == 2
    jpeg = redis_client.get("fs:{g}:live:cam0")
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    h, w = frame.shape[:2]
    assert max(image.shape[:2]) == 160 and abs(image.shape[1] / image.shape[0] - w / h) < 0.02
    plain = cv2.resize(frame, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_AREA)
    box = (slice(round(50 * 160 / w), round(150 * 160 / w)), slice(round(100 * 160 / w), round(180 * 160 / w)))
    assert np.abs(image[box].astype(int) - plain[box]).mean() > 5  # the label is drawn on it
    for key in ("fs:{g}:live:cam0", "fs:{g}:camera:cam0"):
        assert 0 < redis_client.pttl(key) <= 7500


def test_a_small_frame_is_never_upscaled(redis_client, frame):
    p = publisher(redis_client, Clock(), px=1920)
    p.offer("cam0", frame, (), 1)
    p.publish()
    image = cv2.imdecode(np.frombuffer(redis_client.get("fs:{g}:live:cam0"), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == frame.shape


def test_health_names_every_camera_even_without_a_frame(redis_client, frame):
    stats = {"cam0": Stats(), "gate": Stats(state="reconnecting", fps=0.0, errors=3)}
    p = publisher(redis_client, Clock(), stats)
    p.offer("cam0", frame, LABELS * 2, 41)
    p.publish()
    cam0 = json.loads(redis_client.get("fs:{g}:camera:cam0"))
    assert cam0 | {"time": 0, "host": "", "pid": 0} == {
        "camera": "cam0", "fps": 25.0, "frames_read": 40, "frames_dropped": 2, "state": "running", "errors": 0,
        "reconnects": 1, "faces": 2, "frame": 41, "time": 0, "host": "", "pid": 0}
    assert abs(cam0["time"] - time.time()) < 5 and cam0["host"] == socket.gethostname() and cam0["pid"] > 0
    gate = json.loads(redis_client.get("fs:{g}:camera:gate"))
    assert (gate["state"], gate["errors"], gate["faces"], gate["frame"]) == ("reconnecting", 3, 0, None)
    assert redis_client.get("fs:{g}:live:gate") is None


def test_a_dead_redis_drops_frames_counts_them_and_logs_once_a_minute(frame, caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    clock = Clock()
    p = publisher(dead, clock)
    with caplog.at_level(logging.WARNING, logger="pipeline.video.snapshots"):
        for step in range(6):
            clock.now += 0.5
            assert p.offer("cam0", frame, LABELS, step)
            assert p.publish() == 0  # never raises
        clock.now += 61
        p.offer("cam0", frame, LABELS, 7)
        p.publish()
    assert (p.failures, p.dropped, p.published) == (7, 7, 0)
    assert len([r for r in caplog.records if "not published" in r.message]) == 2


def test_the_thread_publishes_and_offering_never_waits_for_redis(redis_client, frame):
    p = publisher(redis_client, time.monotonic, fps=2.0).start()
    p.offer("cam0", frame, LABELS, 1)
    deadline = time.monotonic() + 5
    while redis_client.get("fs:{g}:live:cam0") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.close()
    assert redis_client.get("fs:{g}:live:cam0") is not None and p.published >= 1

    class Stuck:  # a Redis that hangs: the publisher's thread waits, the stream does not
        def pipeline(self, transaction=False):
            time.sleep(2)
            raise redis.ConnectionError("timed out")
    slow = publisher(Stuck(), time.monotonic, fps=30.0).start()
    started = time.perf_counter()
    for step in range(100):
        slow.offer("cam0", frame, LABELS, step)
        time.sleep(0.001)
    assert time.perf_counter() - started < 1.0
    slow._stop.set()  # not close(): that would publish once more, against the stuck server


@pytest.mark.parametrize("bad", [{"fps": 0}, {"fps": 31}, {"px": 8}, {"ttl_s": 0}])
def test_bad_settings_are_refused(redis_client, bad):
    with pytest.raises(ConfigError):
        publisher(redis_client, Clock(), **bad)


@pytest.mark.parametrize("camera", ["front door", "a:b", "{g}", "x" * 129])
def test_sources_refuse_camera_names_unsafe_in_keys(camera):
    with pytest.raises(SourceError, match="invalid camera name"):
        FrameSource("rtsp://127.0.0.1:1/stream", camera)
