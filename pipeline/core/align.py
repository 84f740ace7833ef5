"""Face alignment: a similarity transform (rotation, uniform scale, translation) that maps the 5 detected
landmarks onto a template, then one warp. Pure functions; the template travels with the embedder's model card.

Umeyama's closed-form least squares is used rather than `cv2.estimateAffinePartial2D`: with 5 points and
no outliers to reject, RANSAC/LMEDS only add randomness, and the result must be reproducible.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.core.errors import EngineError
from pipeline.core.faces import Faces

# InsightFace's ArcFace template for 112x112 crops, in pixels: eyes, nose, mouth corners (image left first).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def default_template(size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """The ArcFace template scaled to `size` (height, width) in that crop's pixel coordinates."""
    height, width = _check_size(size)
    return ARCFACE_112 * np.array([width / 112.0, height / 112.0], np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity matrix M minimising sum ||M [src;1] - dst||^2 (Umeyama 1991, no reflection)."""
    src, dst = _points("src", src), _points("dst", dst)
    if src.shape != dst.shape:
        raise EngineError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var < 1e-12:
        raise EngineError("src points are all identical; a similarity transform is undefined")
    u, sigma, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ d @ vt
    scale = (sigma * np.diag(d)).sum() / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]]).astype(np.float64)


def align(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: tuple[int, int] = (112, 112),
    template: np.ndarray | None = None,
) -> np.ndarray:
    """The face warped so its landmarks (5, 2) land on `template`: uint8 (height, width, 3).

    `size` is (height, width), as in model cards; `template` (5, 2) is in the output crop's pixels (default: ArcFace's,
    scaled to `size`). Pixels from outside the image are black.
    """
    height, width = _check_size(size)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise EngineError(f"image must be a uint8 (H, W, 3) array, got {got}")
    target = default_template(size) if template is None else _points("template", template)
    matrix = similarity_transform(_points("landmarks", landmarks), target)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def align_faces(
    image: np.ndarray, faces: Faces, size: tuple[int, int] = (112, 112), template: np.ndarray | None = None
) -> np.ndarray:
    """Every face of `faces` aligned: uint8 (N, height, width, 3); N may be 0."""
    height, width = _check_size(size)
    crops = [align(image, points, size, template) for points in faces.landmarks]
    return np.stack(crops) if crops else np.zeros((0, height, width, 3), np.uint8)


def _points(name: str, points: object) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.shape != (5, 2):
        raise EngineError(f"{name} must have shape (5, 2), got {array.shape}")
    if not np.isfinite(array).all():
        raise EngineError(f"{name} must be finite, got {array.tolist()}")
    return array


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
        raise EngineError(f"size must be (height, width) positive ints, got {size!r}")
    return int(size[0]), int(size[1])
