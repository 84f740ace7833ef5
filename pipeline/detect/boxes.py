"""Box geometry for the MTCNN cascade, vectorised over all boxes of all frames in a batch.

Boxes are float32 (N, 4) x1, y1, x2, y2. MTCNN's regression and cropping treat coordinates as inclusive
pixel indices (width = x2 - x1 + 1), a convention inherited from the original MATLAB code that the
pretrained regressors were trained with, so it is kept here rather than "fixed".
"""

from __future__ import annotations

import cv2
import numpy as np


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    mode "union" divides the intersection by the union (IoU) and runs in OpenCV's C++ (`cv2.dnn.NMSBoxes`;
    P-Net's first level yields a thousand boxes per frame); "min" divides by the smaller box, which also
    removes a small box nested in a larger one (used on O-Net's few outputs). Areas are w * h without the
    MATLAB "+1", as in OpenCV and torchvision.
    """
    if len(boxes) == 0:
        return np.zeros(0, np.intp)
    if mode == "union" and scores.min() > 0:  # OpenCV drops scores <= its score threshold (>= 0)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
        keep = cv2.dnn.NMSBoxes(xywh, scores.astype(np.float32), 0.0, float(threshold))
        return np.asarray(keep, np.intp).reshape(-1)
    return greedy_nms(boxes, scores, threshold, mode)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """NumPy greedy NMS: the "min" mode, and the oracle the OpenCV "union" path is tested against."""
    if mode not in ("union", "min"):
        raise ValueError(f"NMS mode must be 'union' or 'min', got {mode!r}")
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        denom = np.minimum(areas[i], areas[rest]) if mode == "min" else areas[i] + areas[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-12) <= threshold]
    return np.asarray(keep, np.intp)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float, mode: str = "union"
) -> np.ndarray:
    """NMS applied independently within each group (frame, or frame and scale) in one pass.

    Shifting each group's boxes by a distinct offset larger than any coordinate makes boxes of different
    groups disjoint, so a single greedy pass never lets one frame's face suppress another's.
    """
    if len(boxes) == 0:
        return np.zeros(0, np.intp)
    span = float(np.abs(boxes).max()) * 2 + 2
    shifted = boxes + (groups.astype(np.float64) * span)[:, None]
    return nms(shifted, scores, threshold, mode)


def regress(boxes: np.ndarray, offsets: np.ndarray, inclusive: bool = True) -> np.ndarray:
    """Apply the nets' box regression: each edge moves by its offset times the box width or height."""
    extra = 1.0 if inclusive else 0.0
    w = boxes[:, 2] - boxes[:, 0] + extra
    h = boxes[:, 3] - boxes[:, 1] + extra
    return boxes + offsets * np.stack([w, h, w, h], axis=1)


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre, side = the longer edge (R-Net/O-Net take square crops)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def crop_patches(images: list[np.ndarray], boxes: np.ndarray, frame_ids: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 crops of `boxes`, zero-padded where a box leaves its image.

    Integer pixel bounds follow MTCNN's inclusive convention: x from trunc(x1) - 1 to trunc(x2) (exclusive).
    One cv2 call or two per box. What this costs (~2 ms a 640x360 video frame, ~4 ms at 720p, for ~100-150
    R-Net boxes) is `shrink`'s bilinear pass over (size * k)^2 pixels (~5 us a patch at k = 1, 25-170 us at
    k >= 4), not the loop, so batching does not pay: one cv2.remap per group of patches (all sampled in one
    call) took 2x the CPU (remap costs ~3x resize per pixel), one INTER_AREA call per k for the box averages
    of all patches saved nothing, and cutting big patches from 2x-halved copies of the frame (a quarter of
    the pixels) moved R-Net's scores enough to flip which of two near-equal boxes NMS keeps (boxes up to
    20 px apart on video, a face lost on the meeting clip). Measured for issue 17; the crops stay exact.
    """
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    bounds = np.trunc(boxes).astype(np.int64)
    bounds[:, :2] -= 1
    # Python ints: numpy scalars make each min/max/compare below several times slower.
    for k, ((x0, y0, x1, y1), frame) in enumerate(zip(bounds.tolist(), frame_ids.tolist())):
        image = images[frame]
        height, width = image.shape[:2]
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if cx1 <= cx0 or cy1 <= cy0:
            continue  # empty or entirely outside the image: an all-zero patch, which the nets score low
        patch = image[cy0:cy1, cx0:cx1]
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            patch = cv2.copyMakeBorder(
                patch, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1, cv2.BORDER_CONSTANT, value=(0, 0, 0)
            )
        out[k] = shrink(patch, size)
    return out


def shrink(patch: np.ndarray, size: int) -> np.ndarray:
    """Resize to (size, size) with area-like antialiasing at a fraction of INTER_AREA's cost.

    INTER_AREA at a fractional ratio is ~20x slower than bilinear; at an integer ratio it is a fast box
    filter. So: bilinear to the nearest integer multiple of `size` below the patch (a gentle < 2x step
    that aliases little), then an exact k x k box average.
    """
    factor = max(1, min(patch.shape[0], patch.shape[1]) // size)
    if factor == 1:
        return cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)
    patch = cv2.resize(patch, (size * factor, size * factor), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
