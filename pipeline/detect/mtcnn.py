"""MTCNN (Zhang et al. 2016): an image pyramid through P-Net, then R-Net and O-Net on square crops.

Batched over frames: frames of the same size share one P-Net call per pyramid level, and the R-Net and
O-Net crops of all frames go through their nets in one batch each. Every box carries the index of its
frame, so NMS and the final split never mix frames.

Input is BGR uint8 (OpenCV's convention); the pretrained nets expect RGB scaled to about [-1, 1].
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.errors import EngineError
from pipeline.core.faces import Faces
from pipeline.detect.boxes import batched_nms, crop_patches, regress, square
from pipeline.detect.export import DEFAULT_MODEL_DIR, cached_onnx
from pipeline.detect.net_engines import NetEngine

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnxruntime")
PYRAMIDS = ("area", "fast", "octave")
# "octave" pyramid: a level is INTER_AREA-resized from the smallest halved copy at least this much larger.
OCTAVE_RATIO = 2.0
PNET_CELL, PNET_STRIDE = 12, 2
# NMS overlap thresholds of the reference implementation: within a pyramid level, across levels, after
# R-Net, and after O-Net (the last one by the smaller box's area, to drop boxes nested in a bigger face).
NMS_LEVEL, NMS_FRAME, NMS_RNET, NMS_ONET = 0.5, 0.7, 0.7, 0.7


def to_net_input(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) BGR uint8 -> (N, 3, H, W) float32 RGB, (x - 127.5) / 128 as the nets were trained."""
    x = np.ascontiguousarray(pixels[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
    x -= 127.5
    x *= 0.0078125
    return x


def pyramid_scales(
    height: int, width: int, min_face_size: float, factor: float, max_face_size: float | None = None
) -> list[float]:
    """Scales at which a face of `min_face_size` px becomes P-Net's 12 px cell, down to a 12 px image, or
    to the last level whose cell is a face of at most `max_face_size` px (P-Net's cells at a level find
    faces of about 12 / scale px; a larger face is found, if at all, at a level this skips)."""
    scale = PNET_CELL / min_face_size
    side = min(height, width) * scale
    smallest = 0.0 if max_face_size is None else PNET_CELL / max_face_size
    scales = []
    while side >= PNET_CELL and scale >= smallest * (1 - 1e-9):
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def pyramid_levels(frame: np.ndarray, scales: list[float], mode: str) -> list[np.ndarray]:
    """The frame resized to each scale (size int(side * scale + 1), as the reference implementation).

    "area": every level by INTER_AREA from the full frame, like the reference; P-Net's scores on
    borderline textures (grass, foliage) are sensitive to resampling, and this reproduces its results.
    "octave": every level by INTER_AREA too, but from the smallest of the frame's 2x box-halved copies
    that is still >= OCTAVE_RATIO times the level. INTER_AREA's cost follows the *source* size (~1 ms per
    level at 640x360 however small the level), so this is ~1.5x cheaper (≈7 ms vs ≈11 ms); an area average
    of exact 2x2 box averages differs from the direct one by ~0.3 grey levels on average. Same results on
    the test photos; on video it flips some borderline (score < 0.8) detections either way.
    "fast": only level 0 by INTER_AREA, each later level by bilinear from the one above (steps of ~1.4x
    alias little). About 4x cheaper (≈3 ms vs ≈12 ms at 640x360 on one core); on the test photos it
    finds the same faces but lets through one or two more low-score (< 0.8) false positives.
    """
    height, width = frame.shape[:2]
    sources = [frame]
    levels: list[np.ndarray] = []
    for scale in scales:
        size = (int(width * scale + 1), int(height * scale + 1))
        if mode == "fast" and levels:
            levels.append(cv2.resize(levels[-1], size, interpolation=cv2.INTER_LINEAR))
            continue
        source = frame
        if mode == "octave":
            source = octave_source(sources, size)
        levels.append(cv2.resize(source, size, interpolation=cv2.INTER_AREA))
    return levels


def octave_source(sources: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """The smallest 2x-halved copy (extending `sources` as needed) still OCTAVE_RATIO times `size`."""
    while True:
        height, width = sources[-1].shape[:2]
        half = (width // 2, height // 2)
        if min(half[0] / size[0], half[1] / size[1]) < OCTAVE_RATIO:
            return sources[-1]
        sources.append(cv2.resize(sources[-1], half, interpolation=cv2.INTER_AREA))


def validate_image(image: object, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise EngineError(f"image {index} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise EngineError(f"image {index} must have dtype uint8 (BGR), got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise EngineError(f"image {index} must have shape (H, W, 3) (BGR), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise EngineError(f"image {index} is empty: shape {image.shape}")
    return image


def check_sizes(min_face_size: float, max_side: int | None, max_face_size: float | None) -> None:
    """EngineError naming the first size setting MTCNN cannot work with."""
    if min_face_size < PNET_CELL:
        raise EngineError(f"min_face_size must be >= {PNET_CELL} px (P-Net's cell), got {min_face_size}")
    if max_side is not None and max_side < PNET_CELL:
        raise EngineError(f"max_side must be None or >= {PNET_CELL}, got {max_side}")
    if max_face_size is not None and max_face_size < min_face_size:
        raise EngineError(f"max_face_size must be None or >= min_face_size ({min_face_size}), got {max_face_size}")


class Candidates:
    """Boxes moving through the cascade: xyxy (N, 4), score (N,), the frame each came from, and P-Net's
    not yet applied box offsets (N, 4) between stage 1's two NMS passes."""

    def __init__(
        self, xyxy: np.ndarray, score: np.ndarray, frame: np.ndarray, offsets: np.ndarray | None = None
    ) -> None:
        self.xyxy = xyxy.astype(np.float32, copy=False)
        self.score = score.astype(np.float32, copy=False)
        self.frame = frame.astype(np.intp, copy=False)
        self.offsets = offsets if offsets is None else offsets.astype(np.float32, copy=False)

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        if not parts:
            return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.intp), np.zeros((0, 4)))
        columns = [np.concatenate([getattr(p, k) for p in parts]) for k in ("xyxy", "score", "frame")]
        offsets = None if any(p.offsets is None for p in parts) else np.concatenate([p.offsets for p in parts])
        return cls(*columns, offsets)

    def take(self, index: np.ndarray) -> Candidates:
        offsets = None if self.offsets is None else self.offsets[index]
        return Candidates(self.xyxy[index], self.score[index], self.frame[index], offsets)

    def __len__(self) -> int:
        return len(self.score)


class MTCNN:
    """Face detector with 5 landmarks. `detect(frames)` -> one `Faces` per frame, boxes in input pixels.

    `engine`: "onnxruntime" (default; ~2.5x faster than "torch" on CPU, see `ChannelPReLU`) or "torch"
    (the reference). `max_side`: frames whose longer side exceeds it are detected on a downscaled copy
    (results are mapped back); a 4000 px phone photo costs ~40x a 640 px frame for the same faces, whose
    size then matters relative to `min_face_size` in the downscaled copy. `pyramid`: "area" (reference
    resampling), "octave" or "fast" (see `pyramid_levels`). `model_dir`: where the ONNX engine caches
    exports. `threads`: ONNX Runtime's intra-op threads (0 = its default, one per core). The default is 1:
    these nets are too small to split well, and on a 2-core machine shared with other work ORT's spinning
    worker threads made detection ~3x slower. torch's thread count is the caller's `torch.set_num_threads`.
    `max_face_size`: the largest face worth finding (px, in the detected frame, like `min_face_size`);
    pyramid levels whose P-Net cell is a larger face are skipped (None: every level down to a 12 px image).
    They are the smallest levels but give R-Net its biggest, dearest crops: at 640x360 with 40 px minimum
    faces, 200 drops 2 of 7 levels and ~12-14% of the CPU. Faces somewhat larger than it are still found, from
    the smaller levels' partial-face proposals after regression, but no longer reliably.
    """

    def __init__(
        self,
        min_face_size: float = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
        engine: str = "onnxruntime",
        device: str = "cpu",
        *,
        max_side: int | None = None,
        pyramid: str = "area",
        model_dir: str | Path = DEFAULT_MODEL_DIR,
        threads: int = 1,
        max_face_size: float | None = None,
    ) -> None:
        check_sizes(min_face_size, max_side, max_face_size)
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise EngineError(f"thresholds must be 3 probabilities (P, R, O-Net), got {tuple(thresholds)}")
        if not 0.0 < scale_factor < 1.0:
            raise EngineError(f"scale_factor must be in (0, 1), got {scale_factor}")
        if pyramid not in PYRAMIDS:
            raise EngineError(f"pyramid must be one of {PYRAMIDS}, got {pyramid!r}")
        self.pyramid = pyramid
        self.max_face_size = None if max_face_size is None else float(max_face_size)
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)
        self.max_side = max_side
        self.engine = engine
        self.pnet, self.rnet, self.onet = self._runners(engine, device, Path(model_dir), threads)

    def variant(self, *, min_face_size: float | None = None, max_side: int | None = None) -> MTCNN:
        """The same nets (engines shared, nothing loaded again) with a camera's own minimum face size and
        detect resolution; None keeps this detector's value."""
        min_face = self.min_face_size if min_face_size is None else float(min_face_size)
        side = self.max_side if max_side is None else int(max_side)
        check_sizes(min_face, side, self.max_face_size)
        other = copy.copy(self)
        other.min_face_size, other.max_side = min_face, side
        return other

    @staticmethod
    def _runners(engine: str, device: str, model_dir: Path, threads: int) -> list[NetEngine]:
        if engine == "torch":
            return [NetEngine.torch(name, device) for name in ("pnet", "rnet", "onet")]
        if engine == "onnxruntime":
            paths = cached_onnx(model_dir)
            return [NetEngine.onnx(name, paths[name], device, threads) for name in ("pnet", "rnet", "onet")]
        raise EngineError(f"unknown MTCNN engine {engine!r}; expected one of {ENGINES}")

    def detect_one(self, image: np.ndarray) -> Faces:
        return self.detect([image])[0]

    def detect(self, images: Sequence[np.ndarray]) -> list[Faces]:
        """Detect faces in each BGR uint8 frame; frames may differ in size."""
        if isinstance(images, np.ndarray):
            raise EngineError("detect takes a list of frames; use detect_one for a single (H, W, 3) image")
        frames = [validate_image(image, i) for i, image in enumerate(images)]
        if not frames:
            return []
        frames, scales = zip(*(self._fit(frame) for frame in frames), strict=True)
        candidates = self._propose(list(frames))
        candidates = self._refine(list(frames), candidates)
        candidates, landmarks = self._output(list(frames), candidates)
        results = []
        for i, scale in enumerate(scales):
            mine = candidates.frame == i
            faces = Faces(candidates.xyxy[mine], landmarks[mine], candidates.score[mine])
            results.append(faces if scale == 1.0 else faces.scaled(1.0 / scale))
        return results

    def _fit(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """The frame downscaled to `max_side` if it is larger, and the scale used."""
        longest = max(frame.shape[:2])
        if self.max_side is None or longest <= self.max_side:
            return frame, 1.0
        scale = self.max_side / longest
        size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), scale

    def _propose(self, frames: list[np.ndarray]) -> Candidates:
        """Stage 1: P-Net over each frame's pyramid; same-size frames share each level's batch."""
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, frame in enumerate(frames):
            by_shape[frame.shape].append(i)
        parts = []
        for (height, width, _), ids in by_shape.items():
            scales = pyramid_scales(height, width, self.min_face_size, self.scale_factor, self.max_face_size)
            pyramids = [pyramid_levels(frames[i], scales, self.pyramid) for i in ids]
            for level, scale in enumerate(scales):
                batch = np.stack([pyramid[level] for pyramid in pyramids])
                found = self._level_boxes(batch, scale, np.asarray(ids))
                keep = batched_nms(found.xyxy, found.score, found.frame, NMS_LEVEL)
                parts.append(found.take(keep))
        found = Candidates.concat(parts)
        found = found.take(batched_nms(found.xyxy, found.score, found.frame, NMS_FRAME))
        return Candidates(square(regress(found.xyxy, found.offsets, inclusive=False)), found.score, found.frame)

    def _level_boxes(self, batch: np.ndarray, scale: float, ids: np.ndarray) -> Candidates:
        """Boxes of P-Net cells above threshold at one pyramid level, in frame pixels, with their offsets."""
        reg, prob = self.pnet(to_net_input(batch))
        n, rows, cols = np.nonzero(prob[:, 1] >= self.thresholds[0])
        cells = np.stack([cols, rows], axis=1).astype(np.float32)
        top_left = np.floor((PNET_STRIDE * cells + 1) / scale)
        bottom_right = np.floor((PNET_STRIDE * cells + PNET_CELL) / scale)
        xyxy = np.concatenate([top_left, bottom_right], axis=1)
        return Candidates(xyxy, prob[n, 1, rows, cols], ids[n], reg[n, :, rows, cols])

    def _refine(self, frames: list[np.ndarray], found: Candidates) -> Candidates:
        """Stage 2: R-Net rescores 24x24 crops of every frame's proposals in one batch and nudges the boxes."""
        if len(found) == 0:
            return found
        reg, prob = self.rnet(to_net_input(crop_patches(frames, found.xyxy, found.frame, 24)))
        passed = np.flatnonzero(prob[:, 1] > self.thresholds[1])
        found = Candidates(found.xyxy[passed], prob[passed, 1], found.frame[passed])
        keep = batched_nms(found.xyxy, found.score, found.frame, NMS_RNET)
        xyxy = square(regress(found.xyxy[keep], reg[passed][keep]))
        return Candidates(xyxy, found.score[keep], found.frame[keep])

    def _output(self, frames: list[np.ndarray], found: Candidates) -> tuple[Candidates, np.ndarray]:
        """Stage 3: O-Net on 48x48 crops gives final scores, box offsets and the 5 landmarks."""
        if len(found) == 0:
            return found, np.zeros((0, 5, 2), np.float32)
        reg, points, prob = self.onet(to_net_input(crop_patches(frames, found.xyxy, found.frame, 48)))
        passed = np.flatnonzero(prob[:, 1] > self.thresholds[2])
        boxes = found.xyxy[passed]
        # Landmarks are fractions of the (inclusive-width) box that O-Net saw, before its regression.
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        xs = w * points[passed, :5] + boxes[:, :1] - 1
        ys = h * points[passed, 5:] + boxes[:, 1:2] - 1
        landmarks = np.stack([xs, ys], axis=2).astype(np.float32)
        found = Candidates(regress(boxes, reg[passed]), prob[passed, 1], found.frame[passed])
        keep = batched_nms(found.xyxy, found.score, found.frame, NMS_ONET, mode="min")
        return found.take(keep), landmarks[keep]
