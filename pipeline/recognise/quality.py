"""Face-quality gates: whether a detected face is good enough to enrol, or to vote in the live pipeline.

Four measures per face, each with its own threshold and reason:

- `face_px` — the shorter side of the detector's box, in image pixels ("face too small").
- `score` — the detector's confidence ("low detection score").
- `yaw`, `pitch` — head pose in degrees estimated from the 5 landmarks alone ("extreme pose"), see
  `estimate_pose`.
- `sharpness` — variance of the Laplacian of the aligned grayscale crop ("too blurred"), see `sharpness`.

Gates are checked in the order size, pose, score, sharpness; the first failure is the reason. A tiny face
is also blurred and its landmarks unreliable, so "too small" is the more useful thing to tell; a turned head
lowers the detector's confidence too (profiles score 0.91-0.99), so "extreme pose" comes before the score.
Every measure is computed and returned whatever the verdict, for logs and calibration.

Calibration of the defaults (MTCNN + the default dlib-ResNet embedder, 150 px crops; shared test data):
- min_face_px 50: ten frontal photos downscaled until the face box measured N px; cosine of each
  template to the full-size one, worst case: 0.82 at 30 px, 0.87 at 40, 0.92 at 50, 0.95 at 60.
  The smallest real faces that must pass: 54 (obama-240p), 75 (kit_with_rose); LFW: 68 px minimum.
- min_sharpness 30: the same photos blurred (Gaussian sigma 1-6 per 150 px of face): sigma 2 keeps
  cosine >= 0.91 and measures 37-86; sigma 3 gives 0.82-0.89 and 15-44; sigma >= 4 gives <= 0.82 and
  <= 26. Sharp photos and video frames measure 93-1577 (LFW's soft 250 px JPEGs: 5th percentile 37, 3% below 30).
- max_yaw 45: near-frontal faces estimate |yaw| <= 30 (ageitgey photos), LFW 99th percentile 42; the
  profile close-up in the Hamilton clip (frames 20-45) estimates 53-72.
- max_pitch 35: frontal photos |pitch| <= 24, LFW max 31 (no real extreme-pitch photo in the data;
  checked on synthetic landmarks).
- min_score 0.93: every real face seen scores >= 0.954 (frontal photos >= 0.976, LFW >= 0.992, small
  faces in the Hamilton crowd shots >= 0.954); the false positives seen (hair, streamers, background)
  score 0.72-0.89.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.core.align import align
from pipeline.core.errors import EngineError
from pipeline.core.faces import Faces

TOO_SMALL = "face too small"
LOW_SCORE = "low detection score"
EXTREME_POSE = "extreme pose"
TOO_BLURRED = "too blurred"
REASONS = (TOO_SMALL, EXTREME_POSE, LOW_SCORE, TOO_BLURRED)

# Sharpness is measured on the crop resized to this side, so that it does not depend on the embedder's
# crop size (a Laplacian's variance grows with resolution); the central window avoids the crop's edges,
# where background and the black fill of a warp reaching outside the image make strong false edges.
SHARPNESS_SIDE = 112
# The face's place in the crop sharpness is measured on: the default embedder's 5-point template (dlib's
# 150 px chip as MTCNN's landmarks land on it) scaled to SHARPNESS_SIDE. Fixed here, not taken from the
# model card, so that the threshold means the same whatever embedder the pipeline runs.
SHARPNESS_TEMPLATE = np.array([[47.83, 45.91], [102.32, 45.91], [75.05, 78.15], [50.90, 105.24],
                               [99.05, 105.35]], np.float32) * (SHARPNESS_SIDE / 150.0)
SHARPNESS_WINDOW = (0.15, 0.85)  # fraction of the side, both axes: eyes to chin, cheek to cheek

# Pose model (see `estimate_pose`): nose-tip depth in front of the eye/mouth plane, relative to the half
# width of the eye/mouth quadrilateral (yaw) and to the eye-to-mouth height (pitch); typical adult
# proportions (eyes ~63 mm apart, mouth corners ~50 mm, eye-to-mouth ~70 mm, nose tip ~30 mm proud).
YAW_DEPTH_RATIO = 1.0
PITCH_DEPTH_RATIO = 0.45
# Where the nose sits between the eye line (0) and the mouth line (1) on a level frontal face, as MTCNN
# places its landmarks: median 0.55 over 24 frontal faces of the ageitgey photos, 0.53 over 200 LFW faces.
FRONTAL_NOSE_HEIGHT = 0.54


@dataclass(frozen=True)
class QualityVerdict:
    ok: bool
    reason: str | None  # one of REASONS, None when ok
    measures: dict = field(default_factory=dict)


class QualityGates:
    """`QualityGates(min_face_px=50, ...).check(image_bgr, i, faces, crop)` -> `QualityVerdict`.

    Plain values, checked where config is read (`pipeline.app.config.QualityConfig`); the defaults here equal
    that section's (a test keeps them in step).
    """

    def __init__(self, min_face_px: float = 50, min_sharpness: float = 30.0, max_yaw: float = 45.0,
                 max_pitch: float = 35.0, min_score: float = 0.93):
        self.min_face_px = float(min_face_px)
        self.min_sharpness = float(min_sharpness)
        self.max_yaw = float(max_yaw)
        self.max_pitch = float(max_pitch)
        self.min_score = float(min_score)

    def candidates(self, faces: Faces) -> np.ndarray:
        """Indices of the faces big and confident enough to be a photo's subject, largest first.

        Tiny background faces and low-score false positives (a patch of hair, a poster) are not
        candidates, so they neither count as a second person nor hide the real one.
        """
        side = np.minimum(faces.width, faces.height)
        keep = np.flatnonzero((side >= self.min_face_px) & (faces.score >= self.min_score))
        return keep[np.argsort(-faces.area[keep], kind="stable")]

    def measure(self, image_bgr: np.ndarray, face_index: int, faces: Faces,
                crop: np.ndarray | None = None) -> dict:
        """face_px, score, yaw, pitch, sharpness of face `face_index` (rounded for display)."""
        if not 0 <= face_index < len(faces):
            raise EngineError(f"face_index {face_index} out of range for {len(faces)} faces")
        box, points = faces.xyxy[face_index], faces.landmarks[face_index]
        if crop is None:
            crop = align(image_bgr, points, size=(SHARPNESS_SIDE, SHARPNESS_SIDE), template=SHARPNESS_TEMPLATE)
        yaw, pitch = estimate_pose(points)
        return {"face_px": face_px(box),
                "score": round(float(faces.score[face_index]), 4),
                "yaw": round(yaw, 1), "pitch": round(pitch, 1),
                "sharpness": round(sharpness(crop), 1)}

    def check(self, image_bgr: np.ndarray, face_index: int, faces: Faces,
              crop: np.ndarray | None = None) -> QualityVerdict:
        """The verdict on face `face_index` of `faces` (detected in `image_bgr`).

        `crop`: an aligned crop of the face with SHARPNESS_TEMPLATE's geometry at any square size (RGB or BGR;
        e.g. the default embedder's own crop, to save a warp; `crop_fits` says whether a model's crops do),
        or None to align one here. A crop aligned to another template frames the face differently and would
        shift the sharpness measure.
        """
        m = self.measure(image_bgr, face_index, faces, crop)
        if m["face_px"] < self.min_face_px:
            reason = TOO_SMALL
        elif abs(m["yaw"]) > self.max_yaw or abs(m["pitch"]) > self.max_pitch:
            reason = EXTREME_POSE
        elif m["score"] < self.min_score:
            reason = LOW_SCORE
        elif m["sharpness"] < self.min_sharpness:
            reason = TOO_BLURRED
        else:
            reason = None
        return QualityVerdict(ok=reason is None, reason=reason, measures=m)


def face_px(box: np.ndarray) -> float:
    """The size gate's measure: the shorter side of an xyxy box, rounded as shown (the gate compares this)."""
    return round(float(min(box[2] - box[0], box[3] - box[1])), 1)


def crop_fits(template: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether crops aligned to `template` at `size` (height, width) frame the face as SHARPNESS_TEMPLATE does,
    so that they can be passed to `check` as they are (true of the default embedder's crops)."""
    height, width = size
    return height == width and np.allclose(np.asarray(template, np.float64) / width,
                                           SHARPNESS_TEMPLATE / SHARPNESS_SIDE, atol=2e-3)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian over the central window of `crop` resized to SHARPNESS_SIDE px.

    Resizing normalises for crop size; the grey level is not normalised on purpose: a face too dark or
    washed out to show edges is as useless to the embedder as a blurred one.
    """
    if crop.ndim == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)  # R/B order barely matters for edge energy
    gray = cv2.resize(crop, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    lo, hi = (int(round(f * SHARPNESS_SIDE)) for f in SHARPNESS_WINDOW)
    laplacian = cv2.Laplacian(gray[lo:hi, lo:hi].astype(np.float32), cv2.CV_32F, ksize=1)
    return float(laplacian.var())


def estimate_pose(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees from 5 landmarks (left eye, right eye, nose, mouth left, mouth right).

    A rough geometric estimate, good enough to gate on, not a measurement. Roll is removed first (rotate
    so the eye-to-eye and mouth-corner directions, averaged, are horizontal). Then:

    - yaw: the nose tip stands proud of the eye/mouth plane by depth D, so turning the head by `yaw` moves it
      sideways by D·sin(yaw) from the face's midline (the mean x of the four eye/mouth points) while the
      face's half width W shrinks to W·cos(yaw): offset / half-width = (D/W)·tan(yaw), D/W ≈ YAW_DEPTH_RATIO.
      Positive = nose towards the image's right.
    - pitch: likewise vertically, with the nose's relative height t between the eye line (0) and the mouth
      line (1): (t - FRONTAL_NOSE_HEIGHT) = (D/H)·tan(pitch), H the eye-to-mouth height, D/H ≈
      PITCH_DEPTH_RATIO. Positive = nose towards the mouth (head tilted down).

    Both saturate near ±90° only in theory: on a true profile MTCNN squeezes the hidden eye and mouth corner
    onto the visible ones, so estimates of 45–70° are what profiles actually give.
    """
    points = np.asarray(landmarks, np.float64)
    if points.shape != (5, 2):
        raise EngineError(f"landmarks must have shape (5, 2), got {points.shape}")
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    across = (right_eye - left_eye) + (mouth_right - mouth_left)
    angle = math.atan2(across[1], across[0])
    cos, sin = math.cos(-angle), math.sin(-angle)
    level = (points - points[[0, 1, 3, 4]].mean(axis=0)) @ np.array([[cos, sin], [-sin, cos]])
    left_eye, right_eye, nose, mouth_left, mouth_right = level
    half_width = max((right_eye[0] - left_eye[0] + mouth_right[0] - mouth_left[0]) / 4.0, 1e-6)
    yaw = math.degrees(math.atan(nose[0] / half_width / YAW_DEPTH_RATIO))
    eye_y, mouth_y = (left_eye[1] + right_eye[1]) / 2.0, (mouth_left[1] + mouth_right[1]) / 2.0
    height = max(mouth_y - eye_y, 1e-6)
    t = (nose[1] - eye_y) / height
    pitch = math.degrees(math.atan((t - FRONTAL_NOSE_HEIGHT) / PITCH_DEPTH_RATIO))
    return yaw, pitch


class EvidenceGates:
    """Hard minimums below the strict gates: a face that fails `QualityGates` but passes these is still embedded
    in video and votes as weak evidence, with `weight(measures)` in (0, `max_weight`].

    The weight falls linearly, measure by measure, from `max_weight` at the strict gate to a fifth of it at the
    hard minimum, and the worst measure decides (a sharp profile is as weak as its pose). Faces passing the strict
    gates weigh 1. Weak evidence alone never confirms a name (`IdentityVoter.min_strong_votes`).

    Calibration (same photos and clips as the strict gates above): cosine to the full-size template is 0.87
    worst case at 40 px (RunConfig.min_face_size keeps smaller faces from being detected at all), so the size
    floor is 36 px; Gaussian sigma 3 keeps cosine 0.82-0.89 and measures sharpness 15-44, so the floor is 15;
    the Hamilton profile close-up estimates yaw 53-72, and MTCNN's landmarks on a full profile are unreliable,
    so yaw stops at 60; pitch at 45; the detector's false positives score 0.72-0.89, so score stops at 0.90.
    """

    def __init__(self, strict: QualityGates, min_face_px: float = 36, min_sharpness: float = 15.0,
                 max_yaw: float = 60.0, max_pitch: float = 45.0, min_score: float = 0.90, max_weight: float = 0.5):
        self.strict = strict
        self.min_face_px = float(min_face_px)
        self.min_sharpness = float(min_sharpness)
        self.max_yaw = float(max_yaw)
        self.max_pitch = float(max_pitch)
        self.min_score = float(min_score)
        self.max_weight = float(max_weight)

    def weight(self, measures: dict) -> float:
        """0 below any hard minimum, else the weak vote's weight (also for faces the strict gates pass: use
        their verdict first, they weigh 1)."""
        s = self.strict
        factors = (_rising(measures["face_px"], self.min_face_px, s.min_face_px),
                   _rising(measures["score"], self.min_score, s.min_score),
                   _rising(measures["sharpness"], self.min_sharpness, s.min_sharpness),
                   _falling(abs(measures["yaw"]), s.max_yaw, self.max_yaw),
                   _falling(abs(measures["pitch"]), s.max_pitch, self.max_pitch))
        worst = min(factors)
        return 0.0 if worst < 0 else self.max_weight * (0.2 + 0.8 * worst)


def _rising(value: float, floor: float, strict: float) -> float:
    """-1 below `floor`, 0..1 from `floor` to `strict`, 1 above."""
    if value < floor:
        return -1.0
    return 1.0 if value >= strict or strict <= floor else (value - floor) / (strict - floor)


def _falling(value: float, strict: float, ceiling: float) -> float:
    """1 up to `strict`, 1..0 up to `ceiling`, -1 beyond."""
    if value > ceiling:
        return -1.0
    return 1.0 if value <= strict or ceiling <= strict else (ceiling - value) / (ceiling - strict)


def face_quality(measures: dict) -> float:
    """A [0, 1] ranking of faces that passed the gates, for choosing which to keep (sightings, naming): larger
    (saturating at 112 px, the embedder's crop), sharper (saturating at 100, ~3x the gate), more frontal."""
    size = min(float(measures.get("face_px", 0.0)) / 112.0, 1.0)
    sharp = min(float(measures.get("sharpness", 0.0)) / 100.0, 1.0)
    pose = max(0.0, math.cos(math.radians(float(measures.get("yaw", 90.0))))
               * math.cos(math.radians(float(measures.get("pitch", 90.0)))))
    return round(size * (0.5 + 0.5 * sharp) * pose * float(measures.get("score", 0.0)), 4)
