"""Evidence below the strict gates: the weight of a weak face, and the video judge keeping such a face's crop
while enrolment's judge (no evidence) rejects it."""

from __future__ import annotations

import cv2
import pytest
from test_judge import AGEITGEY, detector, embedder  # noqa: F401 - module fixtures

from pipeline.app.config import EvidenceConfig
from pipeline.core.images import read_image
from pipeline.recognise.judge import FaceJudge
from pipeline.recognise.quality import TOO_SMALL, EvidenceGates, QualityGates

STRICT = {"face_px": 80.0, "score": 0.99, "yaw": 10.0, "pitch": 5.0, "sharpness": 120.0}


@pytest.mark.parametrize("change, weight", [
    ({}, 0.5),  # passes the strict gates too: the best weak weight (the judge gives such faces 1)
    ({"face_px": 36.0}, 0.1),  # at the floor: a fifth of the best
    ({"face_px": 43.0}, 0.1 + 0.4 * 0.5),  # half-way between floor and strict gate
    ({"face_px": 35.0}, 0.0),  # below the floor: not evidence
    ({"yaw": -52.5}, 0.3),  # half-way from 45 to 60 degrees
    ({"yaw": 61.0}, 0.0),
    ({"score": 0.89}, 0.0),
    ({"sharpness": 15.0, "face_px": 43.0}, 0.1),  # the worst measure decides
])
def test_weight_falls_from_the_strict_gate_to_the_floor(change, weight):
    gates = EvidenceGates(QualityGates())
    assert gates.weight({**STRICT, **change}) == pytest.approx(weight)


def test_defaults_equal_the_config_section():
    import inspect

    parameters = inspect.signature(EvidenceGates).parameters
    expected = EvidenceConfig().model_dump(exclude={"enabled", "every", "eager_frames"})
    assert {name: parameters[name].default for name in expected} == expected


def test_a_small_face_is_weak_evidence_in_video_only(detector, embedder, shared_data):  # noqa: F811
    image = read_image(shared_data / AGEITGEY / "other_photos" / "obama.jpg")
    faces = detector.detect_one(image)
    side = float(min(faces.width[0], faces.height[0]))
    small = cv2.resize(image, None, fx=44 / side, fy=44 / side, interpolation=cv2.INTER_AREA)  # a ~44 px face
    found = detector.detect_one(small)
    assert len(found) >= 1
    strict = FaceJudge(embedder, QualityGates()).judge(small, found, 0)
    assert (strict.crop, strict.verdict.reason, strict.weight) == (None, TOO_SMALL, 0.0)
    video = FaceJudge(embedder, QualityGates(), evidence=EvidenceGates(QualityGates())).judge(small, found, 0)
    assert not video.ok and video.usable and video.verdict.reason == TOO_SMALL
    assert 0.0 < video.weight < 0.5 and video.crop.shape == (*embedder.size, 3)


def test_the_embedding_schedule_defaults_equal_the_match_stage():
    """evidence.every and evidence.eager_frames are the match stage's schedule (pipeline/video/match_stage.py)."""
    import inspect

    from pipeline.video.match_stage import MatchStage

    parameters = inspect.signature(MatchStage).parameters
    config = EvidenceConfig()
    assert (parameters["weak_every"].default, parameters["weak_eager_frames"].default) == (config.every,
                                                                                         config.eager_frames)
