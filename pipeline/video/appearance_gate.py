"""The appearance gate: the scene-cut test (`pipeline.video.scene_cut`) inside one track's box.

A cut that keeps the background but puts another person where a track's box was (a studio, a grid of video
calls, a reel of faces) leaves the frame-level cut test silent and the IoU tracker content: same place, same
size. Only the face under the box changed. So on every frame, detected or not, the tracker
(`IouTracker`, `appearance_jump`) compares its box (the prediction on skipped frames) in this frame with the
same place in the previous frame: `appearance_change(previous, image, box)`.

The box in this frame, GATE_SIDE px square and grey, is the template; the previous frame's region around the
same box, SEARCH_SCALE times as large, is searched for it (normalised cross-correlation, so exposure and
contrast do not count) over shifts of up to 25 % of the box. The change is 1 - the best correlation: ~0 for
the same face, which moves by a fraction of its box between two frames; a different face is at its best
position no more like it than another face is. Cost: ~0.06 ms per track per frame whatever the box size (two
small resizes, the larger boxes sampled down first, and a 13x13 correlation).

Calibration (`IouTracker`'s own measure on every frame of every non-tentative track, with the pipeline's
tracking: MTCNN every 3rd frame, each of the three detection phases, scene cuts ending tracks; the reel is
`bench.reel`'s, seed 0; 1 - correlation, 0 to 2):

| footage | track-frames | p50 | p99 | p99.9 | max | > 0.30 |
|---|---|---|---|---|---|---|
| Hamilton (short_hamilton_clip.mp4, between its cuts at 20/82/211) | 1203 | 0.012 | 0.19 | 0.30 | 0.35 | 2 |
| crowd (facenet_pytorch_samples/video.mp4) | 1318 | 0.028 | 0.19 | 0.26 | 0.31 | 1 |
| meeting (opencv_tutorial_media/faces.mp4) | 1386 | 0.018 | 0.16 | 0.29 | 0.38 | 2 |
| reel, same person | 7298 | 0.002 | 0.04 | 0.06 | 0.09 | 0 |
| reel, same-position cut to another face | 62 | 0.59 | - | - | min 0.32, 5th percentile 0.35 | 62 |

`DEFAULT_APPEARANCE_JUMP` 0.30 sits above the 99.9th percentile of continuous footage and below every
same-position cut of the reel, leaning low: a missed cut shows a wrong name for up to a re-verification
period, a false alarm costs one re-verification and at most the name for the 1-2 frames until the next
detection. The five continuous track-frames above it (0.13 %) are a hand passing over Lin-Manuel Miranda's
face (Hamilton frame 141), a head turn behind a hand (meeting frame 111) and a crowd face crossing another
(frame 86): with the Hamilton pair enrolled, his name is hidden on 0-2 of its ~122 named frames, none split.
Two simpler tests were measured and rejected: comparing with
the thumbnail at the track's last detection (over 1-3 frames the face moves and turns and the predicted box
drifts: continuous footage reaches 0.87-1.22 with the same 24 px correlation, 0.57-0.62 with the shift
search, while the reel's cuts start at 0.35 and 0.32), and the mean absolute grey difference instead of the
correlation (continuous footage up to 23 grey levels, cuts from 23).
"""

from __future__ import annotations

import cv2
import numpy as np

GATE_SIDE = 24  # px of the template: eyes, nose, mouth and hairline still apart; blind to pixel noise
SEARCH_SCALE = 1.5  # the previous frame's region searched, in box sizes: shifts of up to 25 % of the box
SEARCH_SIDE = 36  # GATE_SIDE * SEARCH_SCALE
PRESAMPLE = 3  # a box region larger than this many thumbnails is sampled down before the area average
MIN_BOX_SIDE = 8  # px of the box inside the image below which nothing is compared
MIN_TEXTURE = 2.0  # grey levels (std of the template): below it the correlation is noise (a blank box)
DEFAULT_APPEARANCE_JUMP = 0.30  # 1 - normalised correlation; see the calibration above


def box_region(image_bgr: np.ndarray, box, scale: float, side: int) -> np.ndarray | None:
    """The grey `side` x `side` float32 thumbnail of `box` (xyxy) grown `scale` times about its centre;
    outside the image the edge is repeated. None when less than MIN_BOX_SIDE of it lies inside the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    half_w, half_h = (x2 - x1) * scale / 2.0, (y2 - y1) * scale / 2.0
    left, top = round(cx - half_w), round(cy - half_h)
    right, bottom = round(cx + half_w), round(cy + half_h)
    height, width = image_bgr.shape[:2]
    a, b, c, d = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if c - a < MIN_BOX_SIDE or d - b < MIN_BOX_SIDE:
        return None
    region = image_bgr[b:d, a:c]
    # A large box is sampled down to PRESAMPLE x the thumbnail first (nearest pixels: the cost follows the
    # thumbnail, not the box area); the area average that follows still sees PRESAMPLE^2 pixels per pixel.
    fx = min(PRESAMPLE * side / max(right - left, 1), 1.0)
    fy = min(PRESAMPLE * side / max(bottom - top, 1), 1.0)
    if fx < 1.0 or fy < 1.0:
        size = (max(round((c - a) * fx), 1), max(round((d - b) * fy), 1))
        region = cv2.resize(region, size, interpolation=cv2.INTER_NEAREST)
    pads = [round(v) for v in ((b - top) * fy, (bottom - d) * fy, (a - left) * fx, (right - c) * fx)]
    if any(pads):
        region = cv2.copyMakeBorder(region, *pads, cv2.BORDER_REPLICATE)
    small = cv2.resize(region, (side, side), interpolation=cv2.INTER_AREA)
    return (cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small).astype(np.float32)


def appearance_change(previous_bgr: np.ndarray | None, image_bgr: np.ndarray, box) -> float:
    """1 - the best normalised correlation of `box` in `image_bgr` with the region about the same box in
    `previous_bgr` (the frame before): 0 (same content) to 2. 0 when there is nothing to compare (no or a
    differently sized previous frame, a box off the image, a blank box)."""
    if previous_bgr is None or previous_bgr.shape != image_bgr.shape:
        return 0.0
    template = box_region(image_bgr, box, 1.0, GATE_SIDE)
    search = box_region(previous_bgr, box, SEARCH_SCALE, SEARCH_SIDE)
    if template is None or search is None or float(template.std()) < MIN_TEXTURE:
        return 0.0
    best = float(cv2.matchTemplate(search, template, cv2.TM_CCOEFF_NORMED).max())
    return 1.0 - best if np.isfinite(best) else 0.0
