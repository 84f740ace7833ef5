"""A worker's cameras come and go while it runs: `SourceGroup.add/remove` (keep_open), and a closed camera's
tracks end with their track_ended events, in the recognise stage and through the whole runner."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from pipeline.core.errors import SourceError
from pipeline.video.source_group import SourceGroup
from pipeline.video.sources import FrameSource
from tests.video.test_sources import FakeCapture
from tests.video.test_stages import batch, brief, faces_at, stage

DOOR_X = 10


def live(camera: str) -> FrameSource:
    return FrameSource(str(hash(camera) % 9), camera, opener=lambda spec: FakeCapture(delay=0.005))


def frames_from(group: SourceGroup, seconds: float = 0.3) -> set[str]:
    seen, deadline = set(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen |= {frame.camera for frame in group.next_batch(0.05)}
    return seen


def test_a_kept_open_group_takes_cameras_in_and_lets_them_go():
    group = SourceGroup([], keep_open=True)
    group.start()
    try:
        assert group.next_batch(0.05) == [] and not group.finished  # no camera yet: waiting, not done
        group.add(live("door"))
        group.add(live("hall"))
        assert frames_from(group) == {"door", "hall"}
        with pytest.raises(SourceError, match="camera door is already read by this group"):
            group.add(live("door"))
        assert group.remove("door") and not group.remove("door")
        assert group.take_closed() == ["door"] and group.take_closed() == []
        assert frames_from(group) == {"hall"}
        assert set(group.stats()) == {"door", "hall"} and group.stats()["door"].frames_read > 0
    finally:
        group.stop()
    assert group.finished
    with pytest.raises(SourceError, match="the group is stopped"):
        group.add(live("gate"))


def test_a_closed_cameras_tracks_end_and_the_other_cameras_go_on():
    recognise, bus, _ = stage(confirm_hits=1)
    for i in range(3):
        recognise.process(batch(i, ("door", faces_at(DOOR_X)), ("hall", faces_at(200))))
    before = len(bus.events)
    recognise.process(replace(batch(3, ("hall", faces_at(200))), closed=("door",)))
    ended = [brief(e) for e in bus.events[before:] if e.type == "track_ended"]
    assert ended == [("track_ended", "door", 1, 2, "ann")]  # at the camera's last frame, its name kept
    assert recognise.tracking.trackers["hall"].tracks  # the other camera's track lives on
