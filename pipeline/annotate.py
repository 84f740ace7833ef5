"""Drawing detections on frames for display and annotated video; always on a copy, never the input."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from pipeline.core.errors import EngineError
from pipeline.core.faces import Faces

BOX_COLOUR = (0, 200, 0)  # BGR
# One colour per landmark (eyes blue, nose green, mouth red) so a swapped order is visible at a glance.
LANDMARK_COLOURS = ((255, 0, 0), (255, 128, 0), (0, 255, 0), (0, 0, 255), (0, 128, 255))


def annotate(
    image: np.ndarray,
    faces: Faces,
    labels: Sequence[str] | None = None,
    colour: tuple[int, int, int] = BOX_COLOUR,
    landmarks: bool = True,
) -> np.ndarray:
    """A copy of `image` (BGR uint8) with each face's box, landmarks and label (default: its score)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise EngineError(f"image must be a BGR uint8 (H, W, 3) array, got {got}")
    if labels is not None and len(labels) != len(faces):
        raise EngineError(f"labels must have one entry per face: {len(faces)} faces, got {len(labels)} labels")
    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for i in range(len(faces)):
        x1, y1, x2, y2 = (int(round(v)) for v in faces.xyxy[i])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        if landmarks:
            for (x, y), point_colour in zip(faces.landmarks[i], LANDMARK_COLOURS, strict=True):
                cv2.circle(canvas, (int(round(x)), int(round(y))), thickness + 1, point_colour, -1)
        text = labels[i] if labels is not None else f"{faces.score[i]:.2f}"
        if text:
            _label(canvas, text, (x1, y1), colour, thickness)
    return canvas


def _label(canvas: np.ndarray, text: str, corner: tuple[int, int], colour: tuple[int, int, int], thick: int) -> None:
    scale = 0.4 * thick
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x, y = corner[0], max(corner[1], h + baseline)  # keep the label inside the frame at the top edge
    cv2.rectangle(canvas, (x, y - h - baseline), (x + w, y), colour, -1)
    cv2.putText(canvas, text, (x, y - baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
