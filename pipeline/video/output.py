"""Annotated output: boxes with a name or an anonymous id, similarity and track id drawn on each frame,
written to a video file per camera and/or shown in a window.

Drawing is `draw_labels(image, labels)` over `BoxLabel`s (a box, its text, known or not), a pure function
on a copy. `VideoOutput` opens one writer per camera lazily, at that camera's first frame (the size is
known only then): with one camera the file is exactly the path asked for, with several each camera gets
`<stem>.<camera><suffix>`. `--show` needs OpenCV's HighGUI, which opencv-python-headless does not have:
`check_display()` finds that out before any work starts and says so.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from pipeline.core.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

KNOWN_COLOUR = (0, 200, 0)  # BGR: confirmed identity
UNKNOWN_COLOUR = (0, 165, 255)  # orange: a tracked face not (yet) recognised
PREDICTED_COLOUR = (160, 160, 160)  # grey: a track carried between detections, not seen in this frame
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
WINDOW = "facestream"


@dataclass(frozen=True)
class BoxLabel:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    text: str
    known: bool = False
    predicted: bool = False  # carried by the tracker, not detected in this frame


def draw_labels(image: np.ndarray, labels: Sequence[BoxLabel], header: str | None = None) -> np.ndarray:
    """A copy of `image` with each box and its text; `header` (e.g. camera and frame) at the top left."""
    canvas = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 500))
    for label in labels:
        colour = KNOWN_COLOUR if label.known else UNKNOWN_COLOUR
        if label.predicted:
            colour = tuple(int(0.5 * c + 0.5 * g) for c, g in zip(colour, PREDICTED_COLOUR))
        x1, y1, x2, y2 = (int(round(v)) for v in label.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thick)
        if label.text:
            _text(canvas, label.text, (x1, y1), colour, thick)
    if header:
        _text(canvas, header, (0, 0), (255, 255, 255), thick)
    return canvas


def _text(canvas: np.ndarray, text: str, corner: tuple[int, int], colour: tuple, thick: int) -> None:
    scale = 0.45 * thick
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x, y = max(corner[0], 0), max(corner[1], h + base)  # keep the label inside the frame at the top edge
    cv2.rectangle(canvas, (x, y - h - base), (x + w, y), colour, -1)
    cv2.putText(canvas, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)


def check_display() -> None:
    """ConfigError unless OpenCV can open a window (opencv-python-headless cannot)."""
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise ConfigError("--show needs an OpenCV build with a GUI; this one is opencv-python-headless, which has "
                          "no windows (cv2.imshow is not implemented). Write the annotated video with "
                          "--output-video PATH instead, or install opencv-python in place of the headless "
                          "package on a machine with a display") from None


def camera_slug(camera: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(camera)).strip("_") or "camera"


class VideoOutput:
    """`write(camera, image, labels, header)` per processed frame; `close()` finalises every file."""

    def __init__(self, path: str | Path | None, fps: float = 25.0, cameras: Sequence[str] = (), show: bool = False):
        self.path = Path(path) if path is not None else None
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.cameras = list(cameras)
        self.show = show
        self.frames_written = 0
        self._writers: dict[str, cv2.VideoWriter] = {}
        self.files: dict[str, str] = {}
        if show:
            check_display()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self.path is not None or self.show

    def target(self, camera: str) -> Path:
        if len(self.cameras) <= 1:
            return self.path
        return self.path.with_name(f"{self.path.stem}.{camera_slug(camera)}{self.path.suffix}")

    def write(self, camera: str, image: np.ndarray, labels: Sequence[BoxLabel], header: str | None = None) -> None:
        if not self.enabled:
            return
        canvas = draw_labels(image, labels, header)
        if self.path is not None:
            self._writer(camera, canvas).write(canvas)
            self.frames_written += 1
        if self.show:
            cv2.imshow(f"{WINDOW} {camera}", canvas)
            cv2.waitKey(1)

    def _writer(self, camera: str, canvas: np.ndarray) -> cv2.VideoWriter:
        writer = self._writers.get(camera)
        if writer is None:
            target = self.target(camera)
            fourcc = cv2.VideoWriter_fourcc(*FOURCC.get(target.suffix.lower(), "mp4v"))
            size = (canvas.shape[1], canvas.shape[0])
            writer = cv2.VideoWriter(str(target), fourcc, self.fps, size)
            if not writer.isOpened():
                raise SourceError(f"cannot write video {target} ({target.suffix} at {size[0]}x{size[1]}); "
                                  f"try a .avi or .mp4 path in a writable folder")
            self._writers[camera] = writer
            self.files[camera] = str(target)
            log.info("writing annotated video of camera %s to %s", camera, target)
        return writer

    def close(self) -> None:
        for writer in self._writers.values():
            writer.release()
        self._writers.clear()
        if self.show:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
