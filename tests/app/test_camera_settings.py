"""Per-camera settings: `cameras.<name>` over `camera_defaults`, disabled cameras never opened, fps caps passed
to the sources, motion gates and detect settings resolved to plain values, bad masks refused at load."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from pipeline.app.config import load_app_config
from pipeline.app.services import (
    camera_settings,
    detect_settings,
    frame_sources,
    motion_gate,
    unmatched_cameras,
)
from pipeline.core.errors import ConfigError
from pipeline.video.motion import MotionGate
from pipeline.video.source_group import SourceGroup

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]
TRIANGLE = [[10, 10], [50, 10], [10, 50]]


def config(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_app_config(path)


class Camera:
    def __init__(self):
        self.count = 0

    def isOpened(self) -> bool:
        return True

    def read(self):
        time.sleep(0.005)
        self.count += 1
        return True, np.zeros((6, 8, 3), np.uint8)

    def release(self) -> None:
        pass


def test_a_camera_without_a_section_gets_the_defaults(tmp_path):
    cfg = config(tmp_path, "camera_defaults:\n  fps_cap: 5\n  min_face_size: 30\n")
    assert camera_settings(cfg, "hall") == cfg.camera_defaults
    assert camera_settings(cfg, "hall").fps_cap == 5


def test_a_camera_section_replaces_only_the_fields_it_sets(tmp_path):
    cfg = config(tmp_path, f"""
camera_defaults:
  fps_cap: 5
  min_face_size: 30
  masks: [{SQUARE}]
  motion: {{enabled: true, sensitivity: 20, width: 200}}
cameras:
  door:
    fps_cap: 12
    masks: [{TRIANGLE}]
    motion: {{sensitivity: 8}}
  yard:
    enabled: false
    masks: []
    fps_cap: null
""")
    door = camera_settings(cfg, "door")
    assert door.fps_cap == 12 and door.min_face_size == 30  # set here / from the defaults
    assert door.masks == [[tuple(p) for p in TRIANGLE]]  # the camera's masks replace the defaults'
    assert (door.motion.enabled, door.motion.sensitivity, door.motion.width) == (True, 8, 200)  # field by field
    yard = camera_settings(cfg, "yard")
    assert not yard.enabled and yard.masks == [] and yard.fps_cap is None  # explicit null/empty replace too
    assert yard.min_face_size == 30 and yard.motion.sensitivity == 20
    assert camera_settings(cfg, "hall").masks == [[tuple(p) for p in SQUARE]]


def test_disabled_cameras_are_never_opened_and_fps_caps_reach_the_sources(tmp_path, caplog):
    cfg = config(tmp_path, "cameras:\n  cam1: {enabled: false}\n  cam2: {fps_cap: 4}\n")
    opened = []

    def opener(spec):
        opened.append(spec)
        return Camera()

    with caplog.at_level(logging.INFO, logger="pipeline.app.services"):
        sources = frame_sources(cfg, [("cam0", "0"), ("cam1", "1"), ("cam2", "2")], opener=opener)
    assert [s.camera for s in sources] == ["cam0", "cam2"]
    assert [s.fps_cap for s in sources] == [None, 4.0]
    assert "not opened: cam1" in caplog.text
    with SourceGroup(sources) as group:
        deadline = time.monotonic() + 5
        while not all(s.stats.frames_read for s in group.sources) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert sorted(set(opened)) == ["0", "2"]


def test_every_camera_disabled_is_a_config_error(tmp_path):
    cfg = config(tmp_path, "camera_defaults: {enabled: false}\ncameras:\n  cam1: {fps_cap: 3}\n")
    with pytest.raises(ConfigError, match="every camera given is disabled.*cam0, cam1"):
        frame_sources(cfg, [("cam0", "0"), ("cam1", "1")], opener=lambda spec: Camera())


def test_unmatched_camera_sections_are_named(tmp_path):
    cfg = config(tmp_path, "cameras:\n  door: {fps_cap: 3}\n  dor: {fps_cap: 3}\n")
    assert unmatched_cameras(cfg, ["door", "yard"]) == ["dor"]
    assert unmatched_cameras(cfg, ["door", "dor"]) == []


def test_motion_gate_only_where_enabled(tmp_path):
    cfg = config(tmp_path, f"""
cameras:
  door:
    masks: [{TRIANGLE}]
    motion: {{enabled: true, sensitivity: 9, min_area: 0.01, width: 120, alpha: 0.05}}
""")
    assert motion_gate(cfg, "hall") is None
    gate = motion_gate(cfg, "door")
    assert isinstance(gate, MotionGate)
    assert (gate.sensitivity, gate.min_area, gate.width, gate.alpha) == (9, 0.01, 120, 0.05)
    assert len(gate.masks) == 1 and gate.masks[0].tolist() == TRIANGLE


def test_detect_settings_fall_back_to_run_and_detector(tmp_path):
    cfg = config(tmp_path, f"""
run: {{min_face_size: 40}}
detector: {{max_side: 1280}}
cameras:
  door: {{min_face_size: 24, detect_max_side: 960, masks: [{TRIANGLE}]}}
""")
    assert detect_settings(cfg, "door") == {"min_face_size": 24, "max_side": 960,
                                            "masks": [[tuple(p) for p in TRIANGLE]]}
    assert detect_settings(cfg, "hall") == {"min_face_size": 40, "max_side": 1280, "masks": []}
    cfg = config(tmp_path, "run: {min_face_size: null}\ndetector: {min_face_size: 20, max_side: null}\n")
    assert detect_settings(cfg, "hall") == {"min_face_size": 20, "max_side": None, "masks": []}


@pytest.mark.parametrize("text, message", [
    ("cameras:\n  door:\n    masks: [[[0, 0], [5, 5]]]\n",
     r"invalid value for 'cameras.door.masks' in .*mask 0 needs at least 3 \[x, y\] points to be a polygon, got 2"),
    ("camera_defaults:\n  masks: [[[0, 0], [5, 5], [9, 0]], []]\n",
     r"invalid value for 'camera_defaults.masks' in .*mask 1 needs at least 3"),
    ("cameras:\n  door:\n    masks: [[[0, 0], [5, -5], [9, 0]]]\n", r"mask 0 has a negative coordinate"),
    ("cameras:\n  door:\n    masks: [[0, 0, 5]]\n", r"invalid value for 'cameras.door.masks.0.0'"),
    ("cameras:\n  door: {fps_cap: 0}\n", r"invalid value for 'cameras.door.fps_cap' in .*greater than 0"),
    ("camera_defaults: {fps_cap: -2}\n", r"invalid value for 'camera_defaults.fps_cap'"),
    ("cameras:\n  door: {motion: {sensitivty: 3}}\n", r"unknown key 'cameras.door.motion.sensitivty'"),
])
def test_bad_camera_sections_are_refused_at_load(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as err:
        config(tmp_path, text)
    assert "\n" not in str(err.value)
