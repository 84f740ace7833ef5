"""Alignment: the warp maps the landmarks onto the template; similarity_transform against a known transform."""

import numpy as np
import pytest

from pipeline.core.align import ARCFACE_112, align, align_faces, default_template, similarity_transform
from pipeline.core.errors import EngineError
from pipeline.core.faces import Faces


def rotation(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


@pytest.mark.parametrize(("scale", "theta", "shift"), [(1.0, 0.0, (0, 0)), (2.5, 0.4, (30, -12)), (0.3, -2.0, (5, 5))])
def test_similarity_transform_recovers_a_known_transform(scale, theta, shift):
    src = ARCFACE_112.astype(np.float64)
    dst = scale * src @ rotation(theta).T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation(theta), atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-8)


def landmark_image() -> tuple[np.ndarray, np.ndarray]:
    """A 400x300 image with 5 bright dots at a rotated, scaled copy of the template; returns it and the dots."""
    points = 2.2 * ARCFACE_112 @ rotation(0.35).T + (120, 40)
    image = np.zeros((300, 400, 3), np.uint8)
    for x, y in points:
        image[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2] = 255
    return image, points.astype(np.float32)


def brightest_blobs(crop: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Centroid of bright pixels near each template point."""
    gray = crop[:, :, 0].astype(np.float64)
    ys, xs = np.mgrid[: gray.shape[0], : gray.shape[1]]
    found = []
    for tx, ty in template:
        window = gray * ((np.abs(xs - tx) < 6) & (np.abs(ys - ty) < 6))
        found.append([(window * xs).sum() / window.sum(), (window * ys).sum() / window.sum()])
    return np.array(found)


@pytest.mark.parametrize("size", [(112, 112), (160, 160), (150, 150)])
def test_align_puts_landmarks_on_the_template(size):
    image, points = landmark_image()
    crop = align(image, points, size)
    assert crop.shape == (size[1], size[0], 3) and crop.dtype == np.uint8
    template = default_template(size)
    residual = np.abs(brightest_blobs(crop, template) - template).max()
    assert residual < 1.0, f"landmarks land {residual:.2f} px from the template"


def test_explicit_template_and_faces_batch():
    image, points = landmark_image()
    template = ARCFACE_112 * 0.5 + 20  # an arbitrary template in an 80-high, 100-wide output
    crops = align_faces(image, Faces(np.zeros((2, 4)), np.stack([points, points]), np.ones(2)), (80, 100), template)
    assert crops.shape == (2, 80, 100, 3) and crops.dtype == np.uint8
    assert np.abs(brightest_blobs(crops[0], template) - template).max() < 1.0
    assert align_faces(image, Faces.empty(), (80, 100)).shape == (0, 80, 100, 3)


@pytest.mark.parametrize(
    ("image", "landmarks", "size", "message"),
    [
        (np.zeros((10, 10, 3), np.uint8), np.zeros((68, 2)), (112, 112), r"landmarks must have shape \(5, 2\)"),
        (np.zeros((10, 10), np.uint8), ARCFACE_112, (112, 112), r"uint8 \(H, W, 3\)"),
        (np.zeros((10, 10, 3), np.float32), ARCFACE_112, (112, 112), r"uint8 \(H, W, 3\)"),
        (np.zeros((10, 10, 3), np.uint8), ARCFACE_112, (112,), "size must be"),
        (np.zeros((10, 10, 3), np.uint8), np.ones((5, 2)), (112, 112), "identical"),
    ],
)
def test_bad_inputs_raise(image, landmarks, size, message):
    with pytest.raises(EngineError, match=message):
        align(image, landmarks, size)
