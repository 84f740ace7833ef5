"""`Faces`: the detector's output for one frame, as parallel columns (supervision's `Detections` idea).

Every column has the same length N; row i of each column describes face i. Landmarks are in image pixel
coordinates, ordered left eye, right eye, nose, mouth left, mouth right ("left" = smaller x in the image,
the subject's right), which is the order MTCNN emits and the ArcFace alignment template expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import EngineError

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

Index = int | slice | np.ndarray | list[int] | list[bool]


def _as_float32(name: str, value: object) -> np.ndarray:
    try:
        return np.ascontiguousarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EngineError(f"{name} must be convertible to a float32 array, got {type(value).__name__}: {exc}") from exc


@dataclass(frozen=True)
class Faces:
    """N detected faces: `xyxy` (N, 4), `landmarks` (N, 5, 2), `score` (N,), all float32."""

    xyxy: np.ndarray
    landmarks: np.ndarray
    score: np.ndarray

    def __post_init__(self) -> None:
        # Coerce once here so every consumer can rely on dtype and contiguity without re-checking.
        for name in ("xyxy", "landmarks", "score"):
            object.__setattr__(self, name, _as_float32(name, getattr(self, name)))
        validate_faces(self.xyxy, self.landmarks, self.score)

    @classmethod
    def empty(cls) -> Faces:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros((0,), np.float32))

    @classmethod
    def concat(cls, parts: list[Faces]) -> Faces:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.landmarks for p in parts]),
            np.concatenate([p.score for p in parts]),
        )

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def __getitem__(self, index: Index) -> Faces:
        """Rows selected by an int, a slice, a boolean mask or an index array; always returns `Faces`."""
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= int(index) < len(self):
                raise IndexError(f"face index {int(index)} out of range for {len(self)} faces")
            index = slice(int(index), int(index) + 1 if int(index) != -1 else None)
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool and index.shape != (len(self),):
                raise IndexError(f"boolean mask must have shape ({len(self)},), got {index.shape}")
            if index.dtype != bool and not np.issubdtype(index.dtype, np.integer) and index.size > 0:
                raise IndexError(f"face index array must be bool or integer, got {index.dtype}")
            if index.dtype != bool:
                index = index.astype(np.intp)
        return Faces(self.xyxy[index], self.landmarks[index], self.score[index])

    @property
    def width(self) -> np.ndarray:
        return self.xyxy[:, 2] - self.xyxy[:, 0]

    @property
    def height(self) -> np.ndarray:
        return self.xyxy[:, 3] - self.xyxy[:, 1]

    @property
    def area(self) -> np.ndarray:
        return self.width * self.height

    def scaled(self, factor: float) -> Faces:
        """The same faces in an image resized by `factor` (e.g. 1/s to undo a downscale by s)."""
        return Faces(self.xyxy * factor, self.landmarks * factor, self.score)


def validate_faces(xyxy: np.ndarray, landmarks: np.ndarray, score: np.ndarray) -> None:
    """Raise EngineError saying expected vs actual shape when the columns are malformed or disagree on N."""
    if score.ndim != 1:
        raise EngineError(f"score must have shape (N,), got {score.shape}")
    n = score.shape[0]
    if xyxy.ndim != 2 or xyxy.shape[1] != 4:
        raise EngineError(f"xyxy must have shape (N, 4), got {xyxy.shape}")
    if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
        raise EngineError(f"landmarks must have shape (N, 5, 2), got {landmarks.shape}")
    if xyxy.shape[0] != n or landmarks.shape[0] != n:
        raise EngineError(
            f"columns must have the same length N: xyxy has {xyxy.shape[0]}, "
            f"landmarks has {landmarks.shape[0]}, score has {n}"
        )
