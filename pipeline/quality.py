"""Face-quality gates: whether a detected face is good enough to enrol, or to vote in the live pipeline.

Four measures per face, each with its own threshold and reason:

- `face_px` — the shorter side of the detector's box, in image pixels ("face too small").
- `score` — the detector's confidence ("low detection score").
- `yaw`, `pitch` — head pose in degrees estimated from the 5 landmarks alone ("extreme pose"), see
  `estimate_pose`.
- `sharpness` — variance of the Laplacian of the aligned grayscale crop ("too blurred"), see `sharpness`.

Gates are checked in that order and the first failure is the reason: a tiny face is also blurred and its
landmarks are unreliable, so "too small" is the more useful thing to tell a person enrolling a photo.
Every measure is computed and returned whatever the verdict, for logs and calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydantic import Field

from pipeline.align import align
from pipeline.config import Section
from pipeline.errors import EngineError
from pipeline.faces import Faces

TOO_SMALL = "face too small"
LOW_SCORE = "low detection score"
EXTREME_POSE = "extreme pose"
TOO_BLURRED = "too blurred"
REASONS = (TOO_SMALL, LOW_SCORE, EXTREME_POSE, TOO_BLURRED)

# Sharpness is measured on the crop resized to this side, so that it does not depend on the embedder's
# crop size (a Laplacian's variance grows with resolution); the central window avoids the crop's edges,
# where background and the black fill of a warp reaching outside the image make strong false edges.
SHARPNESS_SIDE = 112
SHARPNESS_WINDOW = (0.15, 0.85)  # fraction of the side, both axes: eyes to chin, cheek to cheek

# Pose model (see `estimate_pose`): nose-tip depth in front of the eye/mouth plane, relative to the half
# width of the eye/mouth quadrilateral (yaw) and to the eye-to-mouth height (pitch); typical adult
# proportions (eyes ~63 mm apart, mouth corners ~50 mm, eye-to-mouth ~70 mm, nose tip ~30 mm proud).
YAW_DEPTH_RATIO = 1.0
PITCH_DEPTH_RATIO = 0.45
# Where the nose sits between the eye line (0) and the mouth line (1) on a level frontal face, as MTCNN
# places its landmarks (median over the frontal calibration photos).
FRONTAL_NOSE_HEIGHT = 0.54


class QualityConfig(Section):
    """Gate thresholds; defaults calibrated on the shared test photos (see the module's calibration notes)."""

    min_face_px: int = Field(60, ge=0, description="shorter side of the detector's box, px")
    min_sharpness: float = Field(40.0, ge=0, description="variance of the Laplacian, 112 px crop")
    max_yaw: float = Field(40.0, gt=0, le=90, description="degrees, landmark estimate")
    max_pitch: float = Field(35.0, gt=0, le=90, description="degrees, landmark estimate")
    min_score: float = Field(0.95, ge=0, le=1, description="detector confidence")


@dataclass(frozen=True)
class QualityVerdict:
    ok: bool
    reason: str | None  # one of REASONS, None when ok
    measures: dict = field(default_factory=dict)


class QualityGates:
    """`QualityGates(min_face_px=60, ...).check(image_bgr, i, faces, crop)` -> `QualityVerdict`."""

    def __init__(self, min_face_px: float = QualityConfig().min_face_px,
                 min_sharpness: float = QualityConfig().min_sharpness,
                 max_yaw: float = QualityConfig().max_yaw,
                 max_pitch: float = QualityConfig().max_pitch,
                 min_score: float = QualityConfig().min_score):
        QualityConfig(min_face_px=min_face_px, min_sharpness=min_sharpness, max_yaw=max_yaw,
                      max_pitch=max_pitch, min_score=min_score)  # validates ranges, raises pydantic's error
        self.min_face_px = float(min_face_px)
        self.min_sharpness = float(min_sharpness)
        self.max_yaw = float(max_yaw)
        self.max_pitch = float(max_pitch)
        self.min_score = float(min_score)

    @classmethod
    def from_config(cls, config: QualityConfig) -> QualityGates:
        return cls(**config.model_dump())

    def measure(self, image_bgr: np.ndarray, face_index: int, faces: Faces,
                crop: np.ndarray | None = None) -> dict:
        """face_px, score, yaw, pitch, sharpness of face `face_index` (rounded for display)."""
        if not 0 <= face_index < len(faces):
            raise EngineError(f"face_index {face_index} out of range for {len(faces)} faces")
        box, points = faces.xyxy[face_index], faces.landmarks[face_index]
        if crop is None:
            crop = align(image_bgr, points, size=(SHARPNESS_SIDE, SHARPNESS_SIDE))
        yaw, pitch = estimate_pose(points)
        return {"face_px": round(float(min(box[2] - box[0], box[3] - box[1])), 1),
                "score": round(float(faces.score[face_index]), 4),
                "yaw": round(yaw, 1), "pitch": round(pitch, 1),
                "sharpness": round(sharpness(crop), 1)}

    def check(self, image_bgr: np.ndarray, face_index: int, faces: Faces,
              crop: np.ndarray | None = None) -> QualityVerdict:
        """The verdict on face `face_index` of `faces` (detected in `image_bgr`).

        `crop`: the aligned crop the embedder will see (RGB or BGR, any square size), or None to align one
        here with the default template; pass the embedder's so sharpness is judged on what is embedded.
        """
        m = self.measure(image_bgr, face_index, faces, crop)
        if m["face_px"] < self.min_face_px:
            reason = TOO_SMALL
        elif m["score"] < self.min_score:
            reason = LOW_SCORE
        elif abs(m["yaw"]) > self.max_yaw or abs(m["pitch"]) > self.max_pitch:
            reason = EXTREME_POSE
        elif m["sharpness"] < self.min_sharpness:
            reason = TOO_BLURRED
        else:
            reason = None
        return QualityVerdict(ok=reason is None, reason=reason, measures=m)


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
