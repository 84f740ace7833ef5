"""Per-camera detection settings (`cameras.<name>.min_face_size`, `detect_max_side`): a camera's frames go to its
own detector (the shared nets at its sizes), in both detect paths, and region-of-interest crops of a camera
detected at a lower resolution are shrunk like its full frames."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.frames import Frame
from pipeline.video.metrics import StageMetrics
from pipeline.video.stages import CameraDetector, DetectStage
from tests.video.test_roi import SHAPE, SquareDetector


def frame(camera: str, index: int, x: int) -> Frame:
    image = np.full(SHAPE, 40, np.uint8)
    image[100:160, x:x + 60] = 255
    return Frame(camera, index, index / 25, image)


@pytest.mark.parametrize("full_scan_every", [0, 15])
def test_each_camera_is_detected_by_its_own_detector(full_scan_every):
    shared, door = SquareDetector(), SquareDetector()
    stage = DetectStage(shared, 1, StageMetrics(), full_scan_every=full_scan_every,
                        cameras={"door": CameraDetector(door, min_face=80)})
    for i in range(4):
        detected = stage.process([frame("hall", i, 100 + 4 * i), frame("door", i, 300)], [0.0, 0.0])
        np.testing.assert_allclose(detected.faces[0].xyxy, [[100 + 4 * i, 100, 160 + 4 * i, 160]])
        np.testing.assert_allclose(detected.faces[1].xyxy, [[300, 100, 360, 160]])
    assert len(shared.calls) == len(door.calls) == 4  # one call per detector per batch, each its own frames
    assert all(len(call) == 1 for call in shared.calls + door.calls)


def test_roi_crops_of_a_camera_detected_at_lower_resolution_are_shrunk_like_its_frames():
    door = SquareDetector()
    stage = DetectStage(SquareDetector(), 1, StageMetrics(), full_scan_every=15,
                        cameras={"door": CameraDetector(door, min_face=20, max_side=320)})  # half of 640
    first = stage.process([frame("door", 0, 300)], [0.0])
    assert door.calls[0] == [SHAPE[:2]]  # a full scan: the detector downscales whole frames itself
    np.testing.assert_allclose(first.faces[0].xyxy, [[300, 100, 360, 160]])
    for i in range(1, 4):
        detected = stage.process([frame("door", i, 300 + 4 * i)], [0.0])
        (crop,) = door.calls[i]
        assert crop[0] <= 0.5 * SHAPE[0] and crop[1] <= 0.5 * SHAPE[1]  # at the camera's detect resolution
        np.testing.assert_allclose(detected.faces[0].xyxy, [[300 + 4 * i, 100, 360 + 4 * i, 160]], atol=2)
    assert stage.roi.roi_frames == 3
    # Pixels are counted at the detect resolution: a full scan of this camera costs a quarter of the frame.
    assert stage.roi.pixels_total == 4 * SHAPE[0] * SHAPE[1] // 4


def test_only_cameras_with_their_own_sizes_get_a_detector_and_it_shares_the_nets():
    from pipeline.app.config import load_app_config
    from pipeline.app.services import camera_detectors, make_detector

    cfg = load_app_config(None, ["cameras.door.min_face_size=80", "cameras.gate.detect_max_side=640",
                                 "cameras.hall.enabled=true"])
    detector = make_detector(cfg, cfg.run.min_face_size)
    own = camera_detectors(cfg, detector, ["door", "gate", "hall"])
    assert sorted(own) == ["door", "gate"]
    assert (own["door"].min_face, own["door"].max_side) == (80, cfg.detector.max_side)
    assert own["door"].detector.min_face_size == 80 and own["door"].detector.pnet is detector.pnet
    assert (own["gate"].min_face, own["gate"].max_side) == (40, 640) and own["gate"].detector.max_side == 640
    assert (detector.min_face_size, detector.max_side) == (40, cfg.detector.max_side)  # the run's own: untouched


def test_a_variant_is_checked_like_a_new_detector():
    from pipeline.core.errors import EngineError
    from pipeline.detect import MTCNN

    detector = MTCNN(min_face_size=40, max_face_size=200)
    with pytest.raises(EngineError, match="min_face_size must be >= 12"):
        detector.variant(min_face_size=8)
    with pytest.raises(EngineError, match=r"max_face_size must be None or >= min_face_size \(300.0\)"):
        detector.variant(min_face_size=300)
