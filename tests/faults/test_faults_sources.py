"""Fault injection on live sources over a real network stream: an MJPEG camera server (multipart/x-mixed-replace,
as IP cameras serve it) on 127.0.0.1, read by OpenCV's FFmpeg backend like any http:// camera. One camera's server
stalls, hangs up, or sends corrupt JPEG parts; a second camera in the same SourceGroup must not notice.
"""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from bench.live_cameras import Camera, Connection, MjpegServer, clip_jpegs
from pipeline.app.config import load_app_config
from pipeline.app.services import frame_sources
from pipeline.core.errors import ConfigError
from pipeline.video.source_group import SourceGroup
from pipeline.video.sources import FrameSource

CLIP = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"
FPS = 25.0  # the servers' default


@pytest.fixture(scope="module")
def jpegs(shared_data) -> list[bytes]:
    return clip_jpegs(shared_data / CLIP, 25)


def sources_config(*overrides: str):
    """The config run.py would build from --set overrides (its `sources` section is what counts here)."""
    return load_app_config(None, ["sources.backoff_initial=0.1", "sources.backoff_max=2", *overrides])


def watch(group: SourceGroup, done, timeout: float) -> dict[str, list[float]]:
    """Consume the group like the runner does; each camera's frame arrival times, until `done()` or `timeout`."""
    arrivals: dict[str, list[float]] = defaultdict(list)
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        for frame in group.next_batch(0.05):
            arrivals[frame.camera].append(time.monotonic())
    return arrivals


def largest_gap(times: list[float]) -> float:
    return max(b - a for a, b in zip(times, times[1:]))


def assert_unaffected(source: FrameSource, times: list[float], seconds: float) -> None:
    """The healthy camera delivered all along: no pause (1 s: generous on a busy machine, shorter than the
    other camera's stall), no reconnect, no error."""
    stats = source.stats
    assert stats.reconnects == 0 and stats.errors == 0 and stats.read_failures == 0, stats
    assert stats.state == "running"
    assert len(times) >= 0.5 * FPS * seconds, f"{len(times)} frames in {seconds:.1f} s"
    assert largest_gap(times) < 1.0, f"the healthy camera paused {largest_gap(times):.2f} s"


def test_a_stalled_stream_is_reopened_after_stall_seconds(jpegs):
    """The server keeps the connection open but stops sending: FFmpeg's read timeout (`stall_seconds`) ends the
    blocked read, the source reconnects and resumes."""
    cameras = {"door": Camera([Connection(frames=15, then="stall"), Connection()]), "hall": Camera([Connection()])}
    with MjpegServer(jpegs, cameras) as server:
        cfg = sources_config("sources.stall_seconds=2")
        door, hall = frame_sources(cfg, [(n, server.url(n)) for n in ("door", "hall")])
        with SourceGroup([door, hall]) as group:
            started = time.monotonic()
            arrivals = watch(group, lambda: door.stats.reconnects and door.stats.frames_read >= 30, timeout=15)
            elapsed = time.monotonic() - started
            stats = door.stats
            assert stats.reconnects == 1 and stats.frames_read >= 30, stats
            assert "stopped delivering frames" in stats.last_error
            assert len(cameras["door"].opened) == 2
            stall = largest_gap(arrivals["door"])
            assert 1.9 <= stall < 2 + 2.5, f"reconnected {stall:.2f} s after the last frame (stall_seconds=2)"
            assert_unaffected(hall, arrivals["hall"], elapsed)


def test_a_stream_that_hangs_up_is_reopened_with_backoff(jpegs):
    """The server closes the connection, then refuses to send anything twice: each attempt waits twice as long
    (backoff_initial 0.1 s: 0.1, 0.2, 0.4), then the stream resumes."""
    cameras = {"door": Camera([Connection(frames=15), Connection(frames=0), Connection(frames=0), Connection()]),
               "hall": Camera([Connection()])}
    with MjpegServer(jpegs, cameras) as server:
        cfg = sources_config()
        door, hall = frame_sources(cfg, [(n, server.url(n)) for n in ("door", "hall")])
        with SourceGroup([door, hall]) as group:
            started = time.monotonic()
            arrivals = watch(group, lambda: len(cameras["door"].opened) >= 4 and door.stats.frames_read >= 30,
                             timeout=15)
            elapsed = time.monotonic() - started
            opened = cameras["door"].opened
            assert len(opened) == 4 and door.stats.frames_read >= 30, door.stats
            waits = [b - a for a, b in zip(opened[1:], opened[2:])]
            # Lower bounds only (a busy machine adds to each wait): the second empty attempt waited >= 0.2 s,
            # the third >= 0.4 s.
            assert waits[0] >= 0.2 and waits[1] >= 0.4 and waits[1] > waits[0], waits
            assert door.stats.state == "running" and door.stats.errors >= 3
            assert_unaffected(hall, arrivals["hall"], elapsed)


def test_corrupt_jpeg_parts_are_skipped_and_counted(jpegs):
    """Parts that are not JPEGs fail to decode: each is skipped and counted in `read_failures`, no reconnect.
    Truncated JPEGs are decoded by FFmpeg with the missing rows concealed, so they arrive as frames."""
    garbage, truncated = frozenset({10, 20, 21, 30}), frozenset({15, 25})
    sent = 45
    cameras = {"door": Camera([Connection(frames=sent, then="stall", garbage=garbage, truncated=truncated)]),
               "hall": Camera([Connection()])}
    with MjpegServer(jpegs, cameras) as server:
        cfg = sources_config()  # stall_seconds 5: the idle connection after the last part is not reopened yet
        door, hall = frame_sources(cfg, [(n, server.url(n)) for n in ("door", "hall")])
        with SourceGroup([door, hall]) as group:
            started = time.monotonic()
            arrivals = watch(group, lambda: door.stats.frames_read >= sent - len(garbage), timeout=15)
            elapsed = time.monotonic() - started
            stats = door.stats
            assert stats.frames_read == sent - len(garbage), stats
            assert stats.read_failures == len(garbage)  # two in a row (20, 21) are still not a broken stream
            assert stats.reconnects == 0 and stats.errors == 0 and stats.state == "running"
            assert len(cameras["door"].opened) == 1
            assert_unaffected(hall, arrivals["hall"], elapsed)
            server.closing.set()  # hang up the idle connection: stopping need not wait for the read timeout


@pytest.mark.parametrize("override, message", [
    ("sources.stall_seconds=0", "invalid value for 'sources.stall_seconds'"),
    ("sources.stall_seconds=soon", "invalid value for 'sources.stall_seconds'"),
    ("sources.stall_timeout=3", "unknown key 'sources.stall_timeout'"),
])
def test_stall_seconds_is_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_app_config(None, [override])
