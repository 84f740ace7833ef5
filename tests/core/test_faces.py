"""Faces: shape validation with expected-vs-actual messages, and row selection that always returns Faces."""

import numpy as np
import pytest

from pipeline.core.errors import EngineError
from pipeline.core.faces import Faces


def make_faces(n: int) -> Faces:
    xyxy = np.array([[i, i, i + 10, i + 20] for i in range(n)], np.float32).reshape(-1, 4)
    landmarks = np.arange(n * 10, dtype=np.float32).reshape(n, 5, 2)
    return Faces(xyxy, landmarks, np.linspace(0.9, 0.99, n, dtype=np.float32))


@pytest.mark.parametrize(
    ("xyxy", "landmarks", "score", "message"),
    [
        ((3, 4), (3, 68, 2), (3,), r"landmarks must have shape \(N, 5, 2\), got \(3, 68, 2\)"),
        ((3, 5), (3, 5, 2), (3,), r"xyxy must have shape \(N, 4\), got \(3, 5\)"),
        ((3, 4), (3, 5, 2), (3, 1), r"score must have shape \(N,\), got \(3, 1\)"),
        ((2, 4), (3, 5, 2), (3,), "xyxy has 2, landmarks has 3, score has 3"),
    ],
)
def test_validation_says_expected_and_actual(xyxy, landmarks, score, message):
    with pytest.raises(EngineError, match=message):
        Faces(np.zeros(xyxy), np.zeros(landmarks), np.zeros(score))


def test_columns_are_float32_and_empty_is_valid():
    faces = Faces(np.zeros((1, 4), np.float64), np.zeros((1, 5, 2), np.int64), [0.5])
    assert faces.xyxy.dtype == faces.landmarks.dtype == faces.score.dtype == np.float32
    empty = Faces.empty()
    assert len(empty) == 0 and empty.landmarks.shape == (0, 5, 2)


def test_is_frozen():
    faces = make_faces(2)
    with pytest.raises(AttributeError):
        faces.score = np.zeros(2)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("index", "rows"),
    [(0, [0]), (-1, [3]), (-2, [2]), (slice(1, 3), [1, 2]), (np.array([True, False, True, False]), [0, 2]),
     (np.array([3, 1]), [3, 1]), ([2], [2]), (np.array([], np.int64), [])],
)  # fmt: skip
def test_indexing_returns_faces(index, rows):
    faces = make_faces(4)
    picked = faces[index]
    assert isinstance(picked, Faces)
    np.testing.assert_array_equal(picked.xyxy, faces.xyxy[rows])
    np.testing.assert_array_equal(picked.landmarks, faces.landmarks[rows])
    np.testing.assert_array_equal(picked.score, faces.score[rows])


def test_bad_indices_raise():
    faces = make_faces(3)
    with pytest.raises(IndexError, match="out of range"):
        faces[3]
    with pytest.raises(IndexError, match=r"mask must have shape \(3,\)"):
        faces[np.array([True, False])]


def test_geometry():
    faces = make_faces(2)
    np.testing.assert_array_equal(faces.width, [10, 10])
    np.testing.assert_array_equal(faces.height, [20, 20])
    np.testing.assert_array_equal(faces.area, [200, 200])
    np.testing.assert_allclose(faces.scaled(2.0).xyxy, faces.xyxy * 2)
    assert len(Faces.concat([faces, faces[0]])) == 3
