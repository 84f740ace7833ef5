"""FaceJudge: crop -> quality gate -> embed, against the gates checked on the embedder's own crop (the oracle),
on real photos and their downscaled copies; the size gate before any crop; no crop reuse for a model whose
crops frame the face differently."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.core.align import ARCFACE_112
from pipeline.core.images import read_image
from pipeline.recognise.embedder import Embedder
from pipeline.recognise.judge import FaceJudge
from pipeline.recognise.quality import TOO_SMALL, QualityGates

AGEITGEY = "ageitgey_face_recognition_examples"
PHOTOS = ["other_photos/two_people.jpg", "other_photos/obama-480p.jpg", "knn_examples/test/obama_and_biden.jpg",
          "knn_examples/test/kit_with_rose.jpg"]


@pytest.fixture(scope="module")
def detector():
    from pipeline.detect import MTCNN

    return MTCNN(max_side=1280)


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


class CountingEmbedder:
    """The real embedder, counting the crops it is asked for; optionally another model's template."""

    def __init__(self, embedder: Embedder, template=None, size=None):
        self.embedder, self.calls = embedder, 0
        self.template = embedder.template if template is None else template
        self.size = embedder.size if size is None else size

    def crops(self, image, faces):
        self.calls += 1
        return self.embedder.crops(image, faces)

    def embed(self, crops):
        return self.embedder.embed(crops)


class SpyGates(QualityGates):
    def check(self, image_bgr, face_index, faces, crop=None):
        self.crop = crop
        return super().check(image_bgr, face_index, faces, crop)


def scenes(detector, shared_data):
    for name in PHOTOS:
        image = read_image(shared_data / AGEITGEY / name)
        for scale in (1.0, 0.3):
            copy = image if scale == 1 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            yield copy, detector.detect_one(copy)


def test_verdicts_equal_the_gates_on_the_embedders_crop(detector, embedder, shared_data):
    gates, judge = QualityGates(), FaceJudge(embedder, QualityGates())
    reasons = set()
    for image, faces in scenes(detector, shared_data):
        for i in range(len(faces)):
            crop = embedder.crops(image, faces[i])[0]
            expected, judged = gates.check(image, i, faces, crop), judge.judge(image, faces, i)
            reasons.add(expected.reason)
            assert judged.verdict.reason == expected.reason
            if expected.reason != TOO_SMALL:
                assert judged.verdict.measures == expected.measures
            assert (judged.crop is not None) == expected.ok
            if expected.ok:
                assert np.array_equal(judged.crop, crop)
                assert np.allclose(judge.embed([judged.crop]), embedder.embed(crop[None]), atol=1e-6)
    assert {None, TOO_SMALL} <= reasons  # the photos exercise both a pass and the size gate


def test_a_face_too_small_is_rejected_before_any_crop(detector, embedder, shared_data):
    image = read_image(shared_data / AGEITGEY / "other_photos" / "obama.jpg")
    tiny = cv2.resize(image, None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA)
    faces = detector.detect_one(tiny)
    counting = CountingEmbedder(embedder)
    judged = FaceJudge(counting, QualityGates()).judge(tiny, faces, 0)
    assert (judged.crop, judged.verdict.reason, counting.calls) == (None, TOO_SMALL, 0)
    assert judged.verdict.measures == {"face_px": QualityGates().measure(tiny, 0, faces)["face_px"]}
    # Enrolment reports every measure of a rejection: the same verdict, measured in full.
    full = FaceJudge(counting, QualityGates(), measure_rejected=True).judge(tiny, faces, 0)
    assert full.verdict == QualityGates().check(tiny, 0, faces, embedder.crops(tiny, faces[0])[0])
    assert full.crop is None and set(full.verdict.measures) == {"face_px", "score", "yaw", "pitch", "sharpness"}


def test_the_crop_is_reused_for_sharpness_only_when_it_frames_the_face_alike(detector, embedder, shared_data):
    image = read_image(shared_data / AGEITGEY / "other_photos" / "obama.jpg")
    faces = detector.detect_one(image)
    gates = SpyGates()
    FaceJudge(embedder, gates).judge(image, faces, 0)
    assert gates.crop is not None and gates.crop.shape == (*embedder.size, 3)
    # Another model's template (ArcFace's 112 px) frames the face differently: the gates align their own crop.
    other = CountingEmbedder(embedder, template=ARCFACE_112 * 150 / 112)
    FaceJudge(other, gates).judge(image, faces, 0)
    assert gates.crop is None and other.calls == 1
