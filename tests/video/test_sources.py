"""Frame sources: kind detection, drop/wait policies, reconnection with backoff, clean shutdown.

Live cameras are simulated with injected openers (fault injection); files are real: the Hamilton clip from
../shared/data and tiny videos written into tmp_path.
"""

import inspect
import threading
import time

import cv2
import numpy as np
import pytest

from pipeline.app.config import SourceConfig, load_app_config
from pipeline.app.services import frame_sources
from pipeline.core.errors import ConfigError, SourceError
from pipeline.core.frames import Frame
from pipeline.core.urls import redact
from pipeline.video.capture import default_camera_name, source_kind
from pipeline.video.source_group import SourceGroup
from pipeline.video.sources import FrameSource

CLIP = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"


class FakeCapture:
    """A camera: `frames` frames (None = endless), one every `delay` s, then reads that fail."""

    def __init__(self, frames: int | None = None, delay: float = 0.002):
        self.frames, self.delay, self.count, self.released = frames, delay, 0, False

    def isOpened(self) -> bool:
        return True

    def read(self):
        time.sleep(self.delay)
        if self.frames is not None and self.count >= self.frames:
            return False, None
        self.count += 1
        return True, np.full((6, 8, 3), self.count % 256, np.uint8)

    def release(self) -> None:
        self.released = True


class ScriptedOpener:
    """Returns (or raises) the next scripted item on each call and records when it was called."""

    def __init__(self, script):
        self.script, self.calls, self.captures = list(script), [], []

    def __call__(self, spec):
        self.calls.append(time.monotonic())
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        capture = item() if callable(item) else item
        self.captures.append(capture)
        return capture


def source_threads():
    return [t for t in threading.enumerate() if t.name.startswith("source-") and t.is_alive()]


def write_video(path, frames: int, fps: float, size=(32, 24)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (i * 20) % 256, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("spec, kind", [
    ("0", "webcam"), ("1", "webcam"), ("/dev/video2", "webcam"),
    ("rtsp://user:secret@10.0.0.5:554/stream1", "stream"), ("http://cam.local/video.mjpg", "stream"),
    ("https://example.org/live.m3u8", "stream"), ("RTMP://example.org/app/key", "stream"),
])
def test_source_kind_of_live_specs(spec, kind):
    assert source_kind(spec) == kind


def test_source_kind_of_a_file_and_names(tmp_path):
    video = write_video(tmp_path / "door cam.avi", 2, 10)
    assert source_kind(str(video)) == "file"
    assert default_camera_name(str(video), "file") == "door_cam"
    assert default_camera_name("0", "webcam") == "cam0"
    assert default_camera_name("rtsp://u:p@10.0.0.5:554/live/1", "stream") == "10.0.0.5_live_1"
    assert redact("rtsp://u:secret@10.0.0.5:554/s") == "rtsp://u:***@10.0.0.5:554/s"
    assert redact("0") == "0" and redact("clips/a.mp4") == "clips/a.mp4"  # webcams and files as they are


def test_missing_file_is_a_source_error_naming_it(tmp_path):
    missing = tmp_path / "nope" / "clip.mp4"
    with pytest.raises(SourceError, match="clip.mp4"):
        source_kind(str(missing))
    with pytest.raises(SourceError, match=str(missing)):
        FrameSource(str(missing))
    with pytest.raises(SourceError, match="not a file"):
        source_kind(str(tmp_path))


def test_unreadable_file_fails_at_start_naming_it(tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    source = FrameSource(str(bad))
    with pytest.raises(SourceError, match="garbage.mp4"):
        source.start()
    assert source.finished and source.stats.state == "failed"
    source.stop()


def test_bad_settings_are_config_errors():
    """Checked once, where config is read (the sources take plain values)."""
    with pytest.raises(ConfigError, match="sources.policy"):
        load_app_config(None, ["sources.policy=newest"])
    with pytest.raises(ConfigError, match=r"backoff_initial \(5.0\) exceeds backoff_max \(1.0\)"):
        load_app_config(None, ["sources.backoff_initial=5", "sources.backoff_max=1"])


def test_sources_take_the_config_section_and_its_defaults():
    cfg = load_app_config(None, ["sources.queue_size=7", "sources.stall_seconds=2"])
    door, hall = frame_sources(cfg, [("door", "0"), ("hall", "1")], opener=lambda s: FakeCapture())
    assert (door.camera, hall.camera, door.queue_size, hall.stall_seconds) == ("door", "hall", 7, 2.0)
    parameters = inspect.signature(FrameSource).parameters
    assert {name: parameters[name].default for name in SourceConfig.model_fields} == SourceConfig().model_dump()


def test_read_before_start_is_an_error_not_a_hang():
    with pytest.raises(SourceError, match="before start"):
        FrameSource("0", opener=lambda s: FakeCapture()).read()


def test_frame_rejects_a_non_bgr_image():
    with pytest.raises(SourceError, match="BGR uint8"):
        Frame("cam0", 0, 0.0, np.zeros((4, 4), np.float32))


def test_file_policy_delivers_every_frame_in_order(shared_data):
    """The real clip: 275 frames, a consumer slower than the decoder, a 2-frame queue: nothing dropped."""
    with FrameSource(str(shared_data / CLIP), queue_size=2) as source:
        assert source.policy == "wait" and source.kind == "file" and not source.reconnect
        frames = []
        while not source.finished:
            frame = source.read(timeout=1.0)
            if frame is not None:
                frames.append((frame.index, frame.timestamp, frame.image.shape))
                if len(frames) % 25 == 0:
                    time.sleep(0.02)  # let the reader fill the queue and wait for room
        stats = source.stats
    assert [i for i, _, _ in frames] == list(range(275))
    assert stats.frames_read == 275 and stats.frames_dropped == 0 and stats.state == "finished"
    times = np.array([t for _, t, _ in frames])
    assert np.all(np.diff(times) > 0)
    assert times[-1] == pytest.approx(274 / 29.97, abs=0.01)  # media time, not wall clock
    assert frames[0][2] == (360, 640, 3)


def test_drop_oldest_keeps_the_newest_frames_and_counts_drops():
    capture = FakeCapture(frames=120, delay=0.001)
    source = FrameSource("0", queue_size=4, reconnect=False, opener=lambda s: capture).start()
    assert source.policy == "drop_oldest"
    seen = []
    while source.stats.state == "running" and len(seen) < 5:  # a consumer far slower than the camera
        frame = source.read(timeout=0.5)
        if frame is not None:
            seen.append(frame.index)
        time.sleep(0.02)
    deadline = time.monotonic() + 5
    while source.stats.state == "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    rest = []
    while (frame := source.read(timeout=0)) is not None:
        rest.append(frame.index)
    stats = source.stats
    source.stop()
    assert stats.frames_read == 120
    assert rest == [116, 117, 118, 119]  # what was left queued: exactly the newest frames
    assert seen == sorted(seen) and stats.frames_dropped > 0
    assert stats.frames_read == len(seen) + len(rest) + stats.frames_dropped
    assert capture.released


def test_reconnect_backs_off_exponentially_while_another_camera_keeps_delivering():
    """Camera A delivers 5 frames, breaks, fails to open 4 times, then works; camera B never stops."""
    down = OSError("camera unplugged")
    flaky = ScriptedOpener([lambda: FakeCapture(frames=5), down, down, down, down,
                            lambda: FakeCapture(delay=0.005)])
    # A deep queue: this is about reconnecting, and a loaded machine must not drop (drop-oldest) A's frames.
    a = FrameSource("0", "a", backoff_initial=0.05, backoff_max=0.2, opener=flaky, queue_size=1000)
    b = FrameSource("1", "b", opener=lambda s: FakeCapture(delay=0.005))
    got = {"a": [], "b": []}
    with SourceGroup([a, b]) as group:
        deadline = time.monotonic() + 10
        while len(flaky.calls) < 6 or len(got["a"]) < 10:
            assert time.monotonic() < deadline, f"no recovery: {group.stats()}"
            for frame in group.next_batch(max_wait=0.05):
                got[frame.camera].append((frame.index, time.monotonic()))
        stats = group.stats()
    gaps = np.diff(flaky.calls[1:6])  # the waits before attempts 3..6
    assert np.all(gaps >= np.array([0.1, 0.2, 0.2, 0.2]) * 0.9), gaps  # 0.05 x 2^n: grows...
    assert np.all(gaps[2:] < 0.38), gaps  # ...and stays at the 0.2 cap (uncapped: 0.4, 0.8)
    outage = (flaky.calls[1], flaky.calls[5])
    assert sum(outage[0] < t < outage[1] for _, t in got["b"]) >= 10  # B delivered throughout
    indices = [i for i, _ in got["a"]]
    assert indices == list(range(len(indices))) and len(indices) >= 10  # 5 before, 5+ after, in order
    assert stats["a"].reconnects == 1 and stats["a"].errors == 5
    assert "camera unplugged" in stats["a"].last_error or "stopped delivering" in stats["a"].last_error
    assert stats["b"].reconnects == 0 and stats["b"].errors == 0
    assert not source_threads()


def test_gives_up_after_max_reconnects():
    opener = ScriptedOpener([OSError("no such camera")])
    with FrameSource("0", backoff_initial=0.01, backoff_max=0.02, max_reconnects=2, opener=opener) as source:
        assert source.read(timeout=5) is None
        assert source.finished
        stats = source.stats
    assert stats.state == "failed" and "gave up after 3 failed attempts" in stats.last_error
    assert len(opener.calls) == 3


def test_a_dead_stream_fails_with_the_password_redacted():
    """The real OpenCV/FFmpeg opener against a closed port: refused at once, retried, then given up."""
    with FrameSource("rtsp://viewer:hunter2@127.0.0.1:9/live", backoff_initial=0.02, max_reconnects=1) as source:
        assert source.kind == "stream" and source.policy == "drop_oldest"
        assert source.read(timeout=10) is None and source.finished
        stats = source.stats
    assert stats.state == "failed" and stats.errors == 2
    assert "viewer:***@127.0.0.1:9" in stats.last_error and "hunter2" not in stats.last_error
    echo = ScriptedOpener([OSError("cannot connect to rtsp://viewer:hunter2@10.1.1.1/live")])
    with pytest.raises(SourceError) as error:  # the backend's message echoes the URL: scrubbed too
        FrameSource("rtsp://viewer:hunter2@10.1.1.1/live", reconnect=False, opener=echo).start()
    assert "hunter2" not in str(error.value) and "viewer:***@10.1.1.1" in str(error.value)


def test_group_survives_a_camera_that_cannot_start_and_fails_if_none_can():
    good = FrameSource("0", "good", opener=lambda s: FakeCapture())
    bad = FrameSource("1", "bad", reconnect=False, opener=ScriptedOpener([OSError("busy")]))
    with SourceGroup([good, bad]) as group:
        frames = [f for _ in range(20) for f in group.next_batch(0.05)]
        assert frames and {f.camera for f in frames} == {"good"}
        assert group.stats()["bad"].state == "failed"
    with pytest.raises(SourceError, match="no source could be opened"):
        SourceGroup([FrameSource("1", "x", reconnect=False, opener=ScriptedOpener([OSError("busy")]))]).start()
    with pytest.raises(SourceError, match="unique"):
        SourceGroup([FrameSource("0", "same", opener=FakeCapture), FrameSource("1", "same", opener=FakeCapture)])


def test_next_batch_gives_one_frame_per_camera_oldest_first(tmp_path):
    one = FrameSource(str(write_video(tmp_path / "one.avi", 6, 25)), queue_size=8)
    two = FrameSource(str(write_video(tmp_path / "two.avi", 3, 25)), queue_size=8)
    batches = []
    with SourceGroup([one, two]) as group:
        time.sleep(0.2)  # both files fully queued
        while not group.finished:
            batches.append(sorted((f.camera, f.index) for f in group.next_batch(0.2)))
    assert batches[0] == [("one", 0), ("two", 0)]
    assert [b for b in batches if b] == [[("one", i), ("two", i)] for i in range(3)] + [[("one", i)] for i in (3, 4, 5)]
    assert group.next_batch(0.01) == []


def test_realtime_file_is_paced_at_its_frame_rate(tmp_path):
    video = write_video(tmp_path / "paced.avi", 10, 50)
    started = time.monotonic()
    with FrameSource(str(video), realtime=True) as source:
        frames = [f for f in iter(lambda: source.read(timeout=1), None)]
    elapsed = time.monotonic() - started
    assert [f.index for f in frames] == list(range(10))
    assert [f.timestamp for f in frames] == pytest.approx([i / 50 for i in range(10)], abs=1e-3)
    assert elapsed >= 0.17  # 9 frame intervals of 20 ms


def test_stop_joins_every_thread_and_releases_captures(shared_data):
    live = ScriptedOpener([lambda: FakeCapture(delay=0.001)])
    sources = [
        FrameSource("0", "live", opener=live),  # endless, dropping
        FrameSource(str(shared_data / CLIP), "file", queue_size=1),  # reader blocked waiting for room
        FrameSource("2", "dead", backoff_initial=5, backoff_max=5, opener=ScriptedOpener([OSError("gone")])),
    ]
    group = SourceGroup(sources).start()
    time.sleep(0.2)
    assert len(source_threads()) == 3
    assert sources[2].stats.state == "reconnecting"
    started = time.monotonic()
    group.stop(timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert not source_threads()
    assert all(s.finished and s.stats.state == "stopped" for s in sources)
    assert live.captures[0].released
    group.stop()  # idempotent
    assert sources[1].read(timeout=0) is None
