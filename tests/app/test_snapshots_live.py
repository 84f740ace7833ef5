"""A real streaming Session on the Hamilton clip with console.snapshots on: it leaves its camera's latest
annotated frame (JPEG, downscaled) and health record in Redis, both expiring; with snapshots off, neither."""

from __future__ import annotations

import json

import cv2
import numpy as np

from pipeline.app.config import load_app_config
from pipeline.app.session import RunOptions, Session

CLIP = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"
GALLERY = "test-snapshots"


def run(redis_server, shared_data, overrides: list[str]) -> dict:
    cfg = load_app_config(None, overrides)
    opts = RunOptions(sources=[("stage", str(shared_data / CLIP))], gallery=GALLERY, redis_url=redis_server.url,
                      max_frames=40)
    session = Session(cfg, opts)
    try:
        return session.run()
    finally:
        session.close()


def test_a_session_publishes_its_cameras_frame_and_health(redis_client, redis_server, shared_data):
    summary = run(redis_server, shared_data, ["console.snapshots=true", "console.snapshot_px=320",
                                              "console.snapshot_ttl_s=60"])
    live, health = "fs:{test-snapshots}:live:stage", "fs:{test-snapshots}:camera:stage"
    image = cv2.imdecode(np.frombuffer(redis_client.get(live), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and max(image.shape[:2]) == 320
    record = json.loads(redis_client.get(health))
    assert record["camera"] == "stage" and record["frames_read"] >= 40 and record["frame"] is not None
    assert record["state"] in ("running", "finished", "stopped")
    for key in (live, health):
        assert 0 < redis_client.pttl(key) <= 60_000
    snapshots = summary["snapshots"]
    assert snapshots["published"] >= 1 and snapshots["failures"] == 0
    assert snapshots["published"] + snapshots["skipped"] + snapshots["replaced"] == summary["frames"]


def test_snapshots_are_off_by_default(redis_client, redis_server, shared_data):
    summary = run(redis_server, shared_data, [])
    assert summary["snapshots"] is None
    assert not [k for k in redis_client.scan_iter("fs:*") if b":live:" in k or b":camera:" in k]
