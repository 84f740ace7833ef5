"""fps_cap: frames over a camera's cap are dropped in the reader thread (grabbed, never retrieved), counted in
`frames_skipped_fps`; by media time for files (the real meeting clip), by the clock for live sources."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from pipeline.core.errors import SourceError
from pipeline.video.sources import FrameSource

MEETING = "opencv_tutorial_media/faces.mp4"  # 1280x720, 25 fps, 241 frames, 9.64 s


class CountingCapture:
    """OpenCV's capture with its grab/retrieve calls counted (retrieve: the decode to BGR we want to skip)."""

    def __init__(self, path: str):
        self.capture = cv2.VideoCapture(path)
        self.grabs = self.retrieves = 0

    def isOpened(self) -> bool:
        return self.capture.isOpened()

    def grab(self) -> bool:
        self.grabs += 1
        return self.capture.grab()

    def retrieve(self):
        self.retrieves += 1
        return self.capture.retrieve()

    def read(self):
        raise AssertionError("a capped source must grab and retrieve, not read")

    def get(self, prop):
        return self.capture.get(prop)

    def release(self) -> None:
        self.capture.release()


class LiveCapture:
    """A 100 fps camera without grab/retrieve (read only): the cap still holds, after the read."""

    def __init__(self):
        self.count = 0

    def isOpened(self) -> bool:
        return True

    def read(self):
        time.sleep(0.01)
        self.count += 1
        return True, np.full((6, 8, 3), self.count % 256, np.uint8)

    def release(self) -> None:
        pass


def drain(source: FrameSource, limit_s: float = 30.0) -> list:
    frames, deadline = [], time.monotonic() + limit_s
    while time.monotonic() < deadline:
        frame = source.read(timeout=0.5)
        if frame is None:
            if source.finished:
                return frames
            continue
        frames.append(frame)
    raise AssertionError("source did not finish")


@pytest.mark.parametrize("cap", [10.0, 7.5])
def test_a_capped_file_keeps_about_cap_frames_per_media_second(shared_data, cap):
    captures = []

    def opener(spec):
        captures.append(CountingCapture(spec))
        return captures[-1]

    with FrameSource(str(shared_data / MEETING), "meeting", fps_cap=cap, opener=opener) as source:
        frames = drain(source)
        stats = source.stats
    duration = 241 / 25.0
    assert abs(len(frames) - cap * duration) <= 1.5, len(frames)
    assert stats.frames_read == len(frames) and stats.frames_skipped_fps == 241 - len(frames)
    assert captures[0].grabs >= 241 and captures[0].retrieves == len(frames)  # skipped frames never retrieved
    times = np.array([f.timestamp for f in frames])
    assert np.all(np.diff(times) >= 1 / cap - 1 / 25 - 1e-6)  # never closer than the cap, give or take a frame
    for second in range(int(duration)):  # and never more than the cap in any media second
        assert np.sum((times >= second) & (times < second + 1)) <= np.ceil(cap)
    indices = [f.index for f in frames]  # the source's frame numbers: skipped frames take theirs
    assert indices[0] == 0 and indices == sorted(indices) and indices[-1] >= 235
    expected = [k for k in range(241) if np.floor(k / 25 * cap + 1e-6) > np.floor((k - 1) / 25 * cap + 1e-6)]
    assert indices == [0] + expected[1:]


def test_no_cap_reads_every_frame(shared_data):
    with FrameSource(str(shared_data / MEETING), "meeting") as source:
        frames = drain(source)
        assert source.stats.frames_skipped_fps == 0
    assert len(frames) == 241 and [f.index for f in frames] == list(range(241))


def test_a_capped_live_source_keeps_about_cap_frames_per_second():
    source = FrameSource("0", "cam0", fps_cap=20, opener=lambda spec: LiveCapture(), queue_size=1000)
    with source:
        time.sleep(1.5)
        stats = source.stats
    kept_rate = stats.frames_read / 1.5
    assert 12 <= kept_rate <= 22, stats
    assert stats.frames_skipped_fps > stats.frames_read  # ~100 fps offered
    assert stats.frames_dropped == 0


@pytest.mark.parametrize("cap", [0, -5])
def test_a_cap_must_be_positive(cap):
    with pytest.raises(SourceError, match="fps_cap of cam0 must be > 0"):
        FrameSource("0", "cam0", fps_cap=cap, opener=lambda spec: LiveCapture())
