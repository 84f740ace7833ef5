"""The streaming runner on real clips against a real Redis: several cameras at once, identities confirmed on
the right camera, frames dropped (and counted) when a live source outpaces a slow stage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.app.config import AppConfig, load_app_config
from pipeline.app.session import RunOptions, Session

CLIP = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"
PHOTOS = {"Lin-Manuel Miranda": "ageitgey_face_recognition_examples/reference_photos/lin-manuel-miranda.png",
          "Alex Lacamoire": "ageitgey_face_recognition_examples/reference_photos/alex-lacamoire.png"}
GALLERY = "test-runner"


@pytest.fixture(scope="module")
def demo_gallery(enrol_photos) -> str:
    """The clip's two people enrolled through the library (largest face of each photo), not the CLI."""
    return enrol_photos(GALLERY, PHOTOS)


def run_session(cfg: AppConfig, opts: RunOptions, slow_detect_s: float = 0.0) -> dict:
    session = Session(cfg, opts)
    try:
        if slow_detect_s:
            session.runner.detect.detector = SlowDetector(session.detector, slow_detect_s)
        summary = session.run()
    finally:
        session.close()
    return summary


class SlowDetector:
    """The real detector plus a fixed delay per call: a stage slower than the source."""

    def __init__(self, detector, delay: float):
        self.detector, self.delay = detector, delay

    def detect(self, images):
        time.sleep(self.delay)
        return self.detector.detect(images)


@pytest.fixture(scope="module")
def two_cameras(tmp_path_factory, redis_server, shared_data, demo_gallery) -> tuple[dict, list[dict]]:
    """The Hamilton clip as two cameras at once, every frame (files wait for the consumer)."""
    out = tmp_path_factory.mktemp("two_cameras")
    cfg = load_app_config(None, [])
    clip = str(shared_data / CLIP)
    opts = RunOptions(sources=[("left", clip), ("right", clip)], gallery=demo_gallery, redis_url=redis_server.url,
                      events=out / "events.jsonl", output_video=out / "annotated.mp4")
    summary = run_session(cfg, opts)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    summary["video_files"] = {camera: Path(path) for camera, path in summary["outputs"]["videos"].items()}
    return summary, events


def test_two_cameras_are_both_processed(two_cameras):
    summary, _ = two_cameras
    assert set(summary["sources"]) == {"left", "right"}
    for camera in ("left", "right"):
        assert summary["sources"][camera]["frames_processed"] == 275
        assert summary["sources"][camera]["frames_dropped"] == 0  # files wait: nothing is lost
        assert summary["video_files"][camera].stat().st_size > 100_000
    assert summary["frames"] == 550


def test_lin_manuel_miranda_confirmed_on_each_camera_and_nobody_else(two_cameras):
    summary, events = two_cameras
    confirmed = [e for e in events if e["type"] == "identity_confirmed"]
    named = {(e["camera"], e["identity"]) for e in confirmed if e["identity"]}
    assert named == {("left", "Lin-Manuel Miranda"), ("right", "Lin-Manuel Miranda")}
    assert {e["identity"] for e in events} <= {None, "Lin-Manuel Miranda"}
    assert summary["identities_seen"] == {"Lin-Manuel Miranda": 2}
    # Close-up from ~frame 80; the voter needs 3 good frames.
    assert all(80 <= e["frame"] <= 140 for e in confirmed if e["identity"])


def test_events_carry_their_own_camera(two_cameras):
    _, events = two_cameras
    for camera in ("left", "right"):
        mine = [e for e in events if e["camera"] == camera]
        assert mine and all(e["anon_id"].startswith(f"{camera}-t") for e in mine)
        started = {e["track"] for e in mine if e["type"] == "track_started"}
        ended = {e["track"] for e in mine if e["type"] == "track_ended"}
        assert started == ended  # every announced track is ended, at the latest at the end of the stream


def test_live_source_drops_frames_behind_a_slow_stage_and_counts_them(redis_server, shared_data, demo_gallery):
    cfg = load_app_config(None, ["sources.policy=drop_oldest", "sources.queue_size=2", "run.detect_every=1"])
    opts = RunOptions(sources=[("live", str(shared_data / CLIP))], gallery=demo_gallery, redis_url=redis_server.url)
    summary = run_session(cfg, opts, slow_detect_s=0.05)
    source = summary["sources"]["live"]
    assert source["frames_dropped"] > 0
    assert source["frames_read"] == 275
    assert source["frames_processed"] + source["frames_dropped"] <= 275
    assert summary["frames_dropped"] == source["frames_dropped"]
    assert summary["frames"] == source["frames_processed"] < 275
