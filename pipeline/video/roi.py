"""Region-of-interest detection: between full scans, the detector sees only crops around the live tracks and
around motion, on every frame.

- `TrackRegions`: each camera's live tracks (latest box, a velocity), published by the tracking stage after
  every update (recognise thread) and read by the detect thread. The detect thread runs up to `stage_queue`
  batches ahead of the tracker, so boxes are moved forward to the frame being detected by their velocity
  (`predicted`), and a scene cut (`mark_cut`) drops a camera's tracks until the tracker has seen that cut.
- `grow_regions`: boxes grown by `margin` box sides on every side (a face region at the face's own scale),
  at least `min_side` px, merged while any two overlap, clipped to the frame.
- `region_scales`: per region, how far its crop may be shrunk so that the smallest face it was grown from is
  still `face_px` (the stage uses 2x the minimum face size) wide: a close-up's region is searched at the
  face's scale, not for 40 px faces. Never enlarged; regions from motion (face size unknown) stay at 1.
- `roi_detect`: every region of every frame cropped (at scale 1, MTCNN's minimum face size applies in crop
  pixels = frame pixels) and detected in one `detect()` call (crops may differ in size); boxes and landmarks
  mapped back to the frame, duplicates across regions removed by IoU, and a face cut by a region's inner
  border dropped where another region holds it whole.

Measured on the Hamilton clip (640x360, 275 frames, detector alone, CPU ms per frame, a loaded 2-core box):
every frame full-frame 16.7-18.9; full_scan_every 15 with roi_margin 1.0: 12.6 (57 % of the pixels saved:
close-ups' regions often cover 60 % of the frame, which is then scanned whole); roi_margin 0.5: 9.2 (76 %).
MTCNN is not shift-invariant: the same face found in a crop comes out a few px off the full-frame box (IoU
0.75-0.97 on the clip; shifting the whole frame by (5, 3) px gives 0.87-0.96).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.core.faces import Faces
from pipeline.core.protocols import Detector
from pipeline.video.tracker import Track, iou_matrix

Box = tuple[int, int, int, int]  # xyxy, integer frame pixels, x2/y2 exclusive
VELOCITY_SMOOTHING = 0.5  # weight of the newest velocity, as the tracker's
MAX_AHEAD = 10  # frames a box is moved by its velocity at most: a lost track's guess stops drifting
MIN_REGION_SIDE = 96  # px: 2x the run's 40 px minimum face, so a small face still has P-Net context
DUPLICATE_IOU = 0.4  # detections of one face from two regions
CUT_OVERLAP = 0.5  # share of a border-cut face's box inside a whole face found elsewhere: the same face
BORDER_PX = 2.0  # a box this close to a region's inner edge (not the frame's) is cut by the region


@dataclass
class _Published:
    box: np.ndarray  # (4,) float64 xyxy, last observed
    last_frame: int
    velocity: np.ndarray  # (4,) px per frame


class TrackRegions:
    """Thread-safe: `publish` (tracking stage) and `predicted` / `mark_cut` (detect stage), per camera."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracks: dict[str, dict[int, _Published]] = {}
        self._cut_at: dict[str, int] = {}  # camera -> frame index of its latest cut seen by the detect thread

    def publish(self, camera: str, frame_index: int, tracks: Sequence[Track]) -> None:
        """The camera's live tracks after the tracker's update at `frame_index` (ended ones are forgotten)."""
        with self._lock:
            if frame_index < self._cut_at.get(camera, -1):
                return  # tracks of before a cut the detect thread already saw: their people are gone
            old = self._tracks.get(camera, {})
            fresh = {}
            for track in tracks:
                box = np.asarray(track.box, np.float64)
                before = old.get(track.id)
                velocity = np.zeros(4) if before is None else before.velocity
                if before is not None and track.last_frame > before.last_frame:
                    step = (box - before.box) / (track.last_frame - before.last_frame)
                    velocity = VELOCITY_SMOOTHING * step + (1 - VELOCITY_SMOOTHING) * before.velocity
                fresh[track.id] = _Published(box, int(track.last_frame), velocity)
            self._tracks[camera] = fresh

    def mark_cut(self, camera: str, frame_index: int) -> None:
        """A hard cut precedes `frame_index`: forget the camera's tracks, ignore publications from before it."""
        with self._lock:
            self._cut_at[camera] = int(frame_index)
            self._tracks.pop(camera, None)

    def forget(self, camera: str) -> None:
        """The camera is gone (its source closed): no tracks, no cut."""
        with self._lock:
            self._tracks.pop(camera, None)
            self._cut_at.pop(camera, None)

    def predicted(self, camera: str, frame_index: int) -> np.ndarray:
        """(N, 4) the camera's live tracks' boxes moved by their velocity to `frame_index`."""
        with self._lock:
            tracks = list(self._tracks.get(camera, {}).values())
        if not tracks:
            return np.zeros((0, 4), np.float64)
        ahead = np.array([np.clip(frame_index - t.last_frame, 0, MAX_AHEAD) for t in tracks], np.float64)
        return np.stack([t.box for t in tracks]) + ahead[:, None] * np.stack([t.velocity for t in tracks])

    def live(self, camera: str) -> int:
        with self._lock:
            return len(self._tracks.get(camera, {}))


def grow_boxes(boxes: np.ndarray, margin: float, by_shorter_side: bool = False) -> np.ndarray:
    """xyxy boxes grown by `margin` times their width (x) and height (y) on each side; `by_shorter_side`: by
    the shorter side on both axes (motion regions, which can be long and thin)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if by_shorter_side:
        w = h = np.minimum(w, h)
    pad = np.stack([-w, -h, w, h], axis=1) * margin
    return boxes + pad


def grow_regions(boxes: np.ndarray, frame_shape: Sequence[int], min_side: int = MIN_REGION_SIDE) -> list[Box]:
    """Already grown boxes -> regions of at least `min_side` px (or the frame), merged while any two overlap
    (their bounding box), clipped to the frame; integer pixels."""
    height, width = int(frame_shape[0]), int(frame_shape[1])
    regions = [_fit(b, width, height, min_side) for b in np.asarray(boxes, np.float64).reshape(-1, 4)]
    regions = [r for r in regions if r[2] > r[0] and r[3] > r[1]]
    merged = True
    while merged:  # a handful of boxes: the quadratic loop is microseconds
        merged = False
        for i in range(len(regions)):
            for j in range(i + 1, len(regions)):
                if _overlap(regions[i], regions[j]):
                    a, b = regions[i], regions.pop(j)
                    regions[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    merged = True
                    break
            if merged:
                break
    return sorted(regions)


def region_pixels(regions: Sequence[Box]) -> int:
    return int(sum((r[2] - r[0]) * (r[3] - r[1]) for r in regions))


def region_scales(regions: Sequence[Box], boxes: np.ndarray, face_px: float) -> list[float]:
    """Per region, the factor its crop is shrunk by so that the smallest face it was grown from (`boxes`, the
    ungrown boxes) is still `face_px` wide: a close-up's region need not be searched for faces of the minimum
    size. 1 where no box is centred inside (a motion region: the face's size is unknown) or `face_px` is 0."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    scales = []
    for x0, y0, x1, y1 in regions:
        inside = (centres[:, 0] >= x0) & (centres[:, 0] < x1) & (centres[:, 1] >= y0) & (centres[:, 1] < y1)
        smallest = sides[inside].min() if face_px > 0 and inside.any() else 0.0
        scales.append(float(min(1.0, face_px / smallest)) if smallest > 0 else 1.0)
    return scales


def roi_detect(detector: Detector, frames: Sequence[np.ndarray], regions: Sequence[Sequence[Box]],
               scales: Sequence[Sequence[float]] | None = None) -> list[Faces]:
    """Faces of each frame found inside its regions (frame coordinates), all crops in one `detect()` call.
    `scales`: per region, shrink its crop by this factor first (`region_scales`); None: crops as they are.
    A frame without regions gets no faces."""
    crops, owners = [], []
    for k, (frame, boxes) in enumerate(zip(frames, regions, strict=True)):
        for j, box in enumerate(boxes):
            x0, y0, x1, y1 = box
            crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
            factor = 1.0 if scales is None else float(scales[k][j])
            size = (max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor)))
            if size != (x1 - x0, y1 - y0):
                crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
            crops.append(crop)
            owners.append((k, box, (size[0] / (x1 - x0), size[1] / (y1 - y0))))
    found = detector.detect(crops) if crops else []
    per_frame: list[list[tuple[Faces, Box]]] = [[] for _ in frames]
    for (k, box, (sx, sy)), faces in zip(owners, found, strict=True):
        offset = np.array([box[0], box[1]], np.float32)
        stretch = np.array([sx, sy], np.float32)
        per_frame[k].append((Faces(faces.xyxy / np.tile(stretch, 2) + np.tile(offset, 2),
                                   faces.landmarks / stretch + offset, faces.score), box))
    return [_settle(parts, frame.shape) for parts, frame in zip(per_frame, frames, strict=True)]


def _settle(parts: list[tuple[Faces, Box]], frame_shape: Sequence[int]) -> Faces:
    """One frame's faces from all its regions: whole faces before border-cut ones, then by score; a face is
    dropped when a kept one is the same face (IoU), or when it is cut and mostly inside a kept one."""
    if not parts:
        return Faces.empty()
    faces = Faces.concat([f for f, _ in parts])
    if len(faces) == 0:
        return faces
    cut = np.concatenate([_cut_by_border(f.xyxy, box, frame_shape) for f, box in parts])
    order = np.lexsort((-faces.score, cut))  # whole first, then by descending score
    kept: list[int] = []
    for i in order:
        if kept:
            others = faces.xyxy[kept]
            if iou_matrix(faces.xyxy[i], others).max() > DUPLICATE_IOU:
                continue
            if cut[i] and _inside_share(faces.xyxy[i], others).max() > CUT_OVERLAP:
                continue
        kept.append(int(i))
    return faces[np.sort(np.asarray(kept, np.intp))]


def _cut_by_border(xyxy: np.ndarray, box: Box, frame_shape: Sequence[int]) -> np.ndarray:
    """Which boxes touch an edge of `box` that is not also the frame's edge."""
    height, width = int(frame_shape[0]), int(frame_shape[1])
    x0, y0, x1, y1 = box
    inner = [(x0 > 0, xyxy[:, 0] <= x0 + BORDER_PX), (y0 > 0, xyxy[:, 1] <= y0 + BORDER_PX),
             (x1 < width, xyxy[:, 2] >= x1 - BORDER_PX), (y1 < height, xyxy[:, 3] >= y1 - BORDER_PX)]
    cut = np.zeros(len(xyxy), bool)
    for is_inner, touches in inner:
        if is_inner:
            cut |= touches
    return cut


def _inside_share(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Share of `box`'s area inside each of `others`."""
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-9)
    return inter / area


def _fit(box: np.ndarray, width: int, height: int, min_side: int) -> Box:
    """`box` widened about its centre to `min_side` (at most the frame), shifted inside the frame, clipped."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = _span(x0, x1, width, min_side)
    y0, y1 = _span(y0, y1, height, min_side)
    return x0, y0, x1, y1


def _span(lo: float, hi: float, limit: int, min_side: int) -> tuple[int, int]:
    """[lo, hi) clipped to [0, limit), then widened to `min_side` (at most `limit`) and kept inside."""
    lo, hi = max(lo, 0.0), min(hi, float(limit))
    side = min(max(hi - lo, float(min_side)), float(limit))
    lo = min(max((lo + hi) / 2 - side / 2, 0.0), limit - side)
    return int(np.floor(lo)), min(limit, int(np.ceil(lo + side)))


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
