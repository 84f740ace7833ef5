"""Scene cuts on real frames: the Hamilton clip's three hard cuts are found and nothing else in the shared
clips is; a cut ends every track of that camera (track_ended, reason "scene cut")."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.core.faces import Faces
from pipeline.core.frames import Frame
from pipeline.video.scene_cut import SceneCutDetector
from pipeline.video.track_stage import TrackStage

HAMILTON = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"


def frames_of(path, start: int = 0, stop: int | None = None):
    capture = cv2.VideoCapture(str(path))
    index = 0
    try:
        while stop is None or index < stop:
            ok, image = capture.read()
            if not ok:
                return
            if index >= start:
                yield index, image
            index += 1
    finally:
        capture.release()


@pytest.mark.parametrize("around", [20, 82, 211])
def test_each_hamilton_cut_is_found_on_its_frame(shared_data, around):
    detector = SceneCutDetector()
    cuts = [i for i, image in frames_of(shared_data / HAMILTON, around - 6, around + 6) if detector.is_cut(image)]
    assert cuts == [around]


@pytest.mark.parametrize("clip, cuts", [
    (HAMILTON, [20, 82, 211]),
    ("facenet_pytorch_samples/video.mp4", []),  # crowd, continuous
    ("opencv_tutorial_media/faces.mp4", []),  # meeting, continuous
])
def test_whole_clips_give_exactly_their_cuts(shared_data, clip, cuts):
    detector = SceneCutDetector()
    assert [i for i, image in frames_of(shared_data / clip) if detector.is_cut(image)] == cuts


def test_a_change_of_frame_size_is_a_cut():
    detector = SceneCutDetector()
    assert not detector.is_cut(np.zeros((36, 64, 3), np.uint8))
    assert not detector.is_cut(np.zeros((36, 64, 3), np.uint8))
    assert detector.is_cut(np.zeros((72, 64, 3), np.uint8))


def test_a_cut_ends_every_track_of_its_camera_only(shared_data):
    before, after = (image for i, image in frames_of(shared_data / HAMILTON, 81, 83))
    face = Faces(np.array([[100, 100, 180, 180]], np.float32), np.zeros((1, 5, 2), np.float32),
                 np.array([0.99], np.float32))
    stage = TrackStage()
    for k in range(3):  # three hits: confirmed tracks on two cameras
        for camera in ("a", "b"):
            stage.update([Frame(camera, 79 + k, 0.0, before)], [face])
    a_track = stage.trackers["a"].tracks[0]
    cut, = stage.update([Frame("a", 82, 0.0, after)], [face])
    assert cut.cut and cut.ended == (a_track,)
    assert cut.assignments[0].is_new and cut.assignments[0].track is not a_track
    same, = stage.update([Frame("b", 82, 0.0, before)], [face])
    assert not same.cut and not same.ended and not same.assignments[0].is_new
