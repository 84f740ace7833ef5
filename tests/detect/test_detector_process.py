"""MTCNN in a process of its own (`DetectorProcess`): the same faces as in-process on real photos and video
frames (batches of mixed sizes, a batch larger than the shared block, a camera's variant), the same refusals
of bad input, and clear errors when the child cannot start, dies or was closed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.core.errors import EngineError
from pipeline.core.images import read_image
from pipeline.detect import MTCNN
from pipeline.detect import process as process_module
from pipeline.detect.process import DetectorProcess

PHOTOS = ["compreface_sample_images/images/016_8.jpg", "dlib_face_detection_examples/2008_002506.jpg"]
CLIP = "opencv_tutorial_media/faces.mp4"


@pytest.fixture(scope="module")
def remote():
    detector = DetectorProcess(min_face_size=40, max_side=1024)
    yield detector
    detector.close()


def frames(shared_data, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(shared_data / CLIP))
    out = [capture.read()[1] for _ in range(count)]
    capture.release()
    return out


def assert_same(found, expected) -> None:
    assert len(found) == len(expected)
    for a, b in zip(found, expected, strict=True):
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        np.testing.assert_array_equal(a.score, b.score)


def test_the_same_faces_as_in_process_for_mixed_batches(remote, shared_data, monkeypatch):
    local = MTCNN(min_face_size=40, max_side=1024)
    images = [read_image(shared_data / p) for p in PHOTOS] + frames(shared_data, 3)
    assert_same(remote.detect(images), local.detect(images))
    assert sum(len(f) for f in remote.detect(images)) >= 5
    # A batch larger than the shared block: the block grows, the answers do not change.
    many = frames(shared_data, 14)  # 14 x 2.8 MB 720p frames > the 32 MiB block
    assert sum(f.nbytes for f in many) > remote._memory.size
    assert_same(remote.detect(many), local.detect(many))
    assert remote._memory.size >= sum(f.nbytes for f in many)


def test_a_cameras_variant_detects_at_its_own_sizes(remote, shared_data):
    image = frames(shared_data, 1)[0]
    local = MTCNN(min_face_size=40, max_side=1024)
    for sizes in ({"min_face_size": 120}, {"max_side": 320}):
        assert_same(remote.variant(**sizes).detect([image]), local.variant(**sizes).detect([image]))
    assert len(remote.variant(min_face_size=400).detect_one(image)) == 0  # no face that large in the clip


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((40, 40, 3), np.float32), "dtype uint8"),
    (np.zeros((0, 40, 3), np.uint8), "empty"),
    ("frame.jpg", "numpy array"),
])
def test_bad_frames_are_refused_before_they_reach_the_child(remote, image, message):
    with pytest.raises(EngineError, match=message):
        remote.detect([image])
    assert len(remote.detect([np.zeros((60, 60, 3), np.uint8)])[0]) == 0  # the child serves on


def test_settings_the_child_cannot_build_are_a_clear_error():
    with pytest.raises(EngineError, match="could not build MTCNN: unknown MTCNN engine 'nope'"):
        DetectorProcess(min_face_size=40, engine="nope")
    with pytest.raises(EngineError, match="min_face_size must be >= 12"):
        DetectorProcess(min_face_size=5)  # refused before any process starts


def test_a_dead_child_and_a_closed_detector_say_so():
    detector = DetectorProcess(min_face_size=40)
    image = np.zeros((60, 60, 3), np.uint8)
    detector._child.kill()
    detector._child.wait()
    with pytest.raises(EngineError, match=r"the detector process died \(exit code -9\)"):
        detector.detect([image])
    detector.close()
    detector.close()  # twice is fine
    with pytest.raises(EngineError, match="the detector process is closed"):
        detector.detect([image])


def test_the_child_exits_when_its_parent_goes(tmp_path):
    """A parent killed outright (no close): the child's read ends, and it exits on its own."""
    import subprocess
    import sys
    import time

    script = ("import sys, time; from pipeline.detect.process import DetectorProcess; "
              "d = DetectorProcess(min_face_size=40); print(d._child.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child_pid):
        time.sleep(0.1)
    assert not _alive(child_pid)
    assert process_module.START_TIMEOUT_S > 0


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"  # a zombie has exited (its parent reaps it)


def test_the_childs_cpu_is_accounted(remote, shared_data):
    before = remote.cpu_s()
    remote.detect(frames(shared_data, 6))
    assert remote.cpu_s() > before


def test_a_pool_shares_the_frames_out_and_returns_them_in_order(shared_data):
    from pipeline.detect.process import DetectorPool, share_out

    assert share_out([100, 10, 90, 5], 2) == [[0, 3], [1, 2]]  # largest first, to the least loaded
    assert share_out([7], 3) == [[0], [], []]
    local = MTCNN(min_face_size=40, max_side=1024)
    images = frames(shared_data, 3) + [read_image(shared_data / p) for p in PHOTOS]
    pool = DetectorPool(2, min_face_size=40, max_side=1024)
    try:
        assert_same(pool.detect(images), local.detect(images))
        assert_same(pool.variant(min_face_size=120).detect(images), local.variant(min_face_size=120).detect(images))
        assert pool.detect([]) == [] and pool.cpu_s() > 0
    finally:
        pool.close()
    with pytest.raises(EngineError, match="the detector process is closed"):
        pool.detect(images)
