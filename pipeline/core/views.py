"""Test-time views of aligned crops, as a model card asks for them: the crop itself, its mirror image
(`flip_average`), and copies shifted by a few pixels (`test_time_shifts`).

The embedder sums a crop's embeddings over its views and renormalises: a face seen from a slightly different
place or in a mirror is the same person, so the sum is steadier against landmark jitter than any one view. The
trainer's old-model targets use the same views, so "harmonic with" means harmonic with what galleries hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def views(crops: np.ndarray, shifts: Sequence[tuple[int, int]] = (), flip: bool = False) -> list[np.ndarray]:
    """(N, h, w, 3) crops and their variants: each shift (dx, dy) in pixels (edge pixels repeated into the
    gap), then the mirror image of every one of those when `flip`."""
    out = [crops, *(shifted(crops, dx, dy) for dx, dy in shifts)]
    if flip:
        out += [mirrored(view) for view in out]
    return out


def mirrored(crops: np.ndarray) -> np.ndarray:
    """The mirror image of every crop, as a new array. One cv2.flip over the crops stacked as one tall image (each
    row is mirrored on its own, so each crop is): 7x faster than copying numpy's reversed view of 3-byte pixels."""
    if not len(crops):
        return crops.copy()
    crops = np.ascontiguousarray(crops)
    n, height, width = crops.shape[:3]
    return cv2.flip(crops.reshape(n * height, width, -1), 1).reshape(crops.shape)


def horizontal_shifts(pixels: Sequence[int]) -> list[tuple[int, int]]:
    """(p, 0) and (-p, 0) for each p: the shifts `--shift-average` asks for. Horizontal only: on LFW, adding the
    vertical pair cost as much again and moved DIR at FPIR 1% by 0.06 points (models/MODEL_CARD.md)."""
    return [shift for p in pixels for shift in ((int(p), 0), (-int(p), 0))]


def shifted(crops: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`crops` moved right by dx and down by dy pixels; the uncovered edge repeats the nearest row/column."""
    height, width = crops.shape[1:3]
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    return np.stack([cv2.warpAffine(crop, move, (width, height), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_REPLICATE) for crop in crops]) if len(crops) else crops
