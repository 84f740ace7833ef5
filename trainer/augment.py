"""Training-time augmentation of aligned face crops (uint8 RGB, H×W×3), NumPy and OpenCV only.

The order mimics how a camera degrades a face: geometry (small shift/scale), mirror, colour,
optional grayscale, and JPEG re-encoding last. Every random draw comes from one seeded NumPy
Generator. Note for DataLoader workers: each worker gets a copy with the same state, so give each
its own stream with `reseed(base_seed + worker_id)` in `worker_init_fn`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

from pipeline.core.errors import ConfigError, FacestreamError

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as OpenCV's RGB2GRAY


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths and probabilities; 0 turns an operation off."""

    flip_p: float = 0.5  # horizontal mirror
    brightness: float = 0.2  # pixel values × U(1 − b, 1 + b)
    contrast: float = 0.2  # distance from the image mean × U(1 − c, 1 + c)
    saturation: float = 0.2  # distance from the pixel's gray × U(1 − s, 1 + s)
    shift: float = 0.05  # translation up to this fraction of width / height
    scale: float = 0.05  # zoom by U(1 − s, 1 + s) about the centre
    jpeg_p: float = 0.3  # re-encode as JPEG ...
    jpeg_quality: tuple[int, int] = (40, 95)  # ... at a quality drawn uniformly from this range
    grayscale_p: float = 0.0

    def __post_init__(self):
        for name in ("flip_p", "jpeg_p", "grayscale_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment.{name} must be a probability in [0, 1], got {getattr(self, name)!r}")
        for name in ("brightness", "contrast", "saturation", "shift", "scale"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"augment.{name} must be in [0, 1), got {getattr(self, name)!r}")
        low, high = self.jpeg_quality
        if not 1 <= low <= high <= 100:
            raise ConfigError(f"augment.jpeg_quality must be (low, high) with 1 <= low <= high <= 100, got {low, high}")

    @classmethod
    def disabled(cls) -> AugmentConfig:
        """Every operation off: `Augment` then returns its input unchanged."""
        off = {f.name: 0.0 for f in fields(cls) if f.name != "jpeg_quality"}
        return cls(**off)


class Augment:
    """`augment(image) -> image`: a new uint8 array of the same shape, randomised by a seeded Generator."""

    def __init__(self, config: AugmentConfig | None = None, seed: int | np.random.Generator = 0):
        self.config = config or AugmentConfig()
        self.reseed(seed)

    def reseed(self, seed: int | np.random.Generator) -> None:
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be uint8 of shape (H, W, 3), got {image.dtype} {image.shape}")
        cfg, rng = self.config, self.rng
        out = image
        if cfg.shift > 0 or cfg.scale > 0:
            out = self._shift_scale(out)
        if cfg.flip_p > 0 and rng.random() < cfg.flip_p:
            out = np.ascontiguousarray(out[:, ::-1])
        if cfg.brightness > 0 or cfg.contrast > 0 or cfg.saturation > 0:
            out = self._colour(out)
        if cfg.grayscale_p > 0 and rng.random() < cfg.grayscale_p:
            out = np.repeat(cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
        if cfg.jpeg_p > 0 and rng.random() < cfg.jpeg_p:
            out = self._jpeg(out)
        return out if out is not image else image.copy()

    def _factor(self, strength: float) -> float:
        return float(self.rng.uniform(1.0 - strength, 1.0 + strength)) if strength > 0 else 1.0

    def _shift_scale(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        zoom = self._factor(self.config.scale)
        dx, dy = self.rng.uniform(-self.config.shift, self.config.shift, size=2) * (width, height)
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        matrix = np.array([[zoom, 0.0, (1 - zoom) * cx + dx], [0.0, zoom, (1 - zoom) * cy + dy]], dtype=np.float64)
        return cv2.warpAffine(
            np.ascontiguousarray(image), matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )

    def _colour(self, image: np.ndarray) -> np.ndarray:
        cfg = self.config
        pixels = image.astype(np.float32) * self._factor(cfg.brightness)
        pixels = (pixels - pixels.mean()) * self._factor(cfg.contrast) + pixels.mean()
        gray = pixels @ _LUMA
        pixels = (pixels - gray[:, :, None]) * self._factor(cfg.saturation) + gray[:, :, None]
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    def _jpeg(self, image: np.ndarray) -> np.ndarray:
        low, high = self.config.jpeg_quality
        quality = int(self.rng.integers(low, high + 1))
        bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise FacestreamError(f"OpenCV failed to JPEG-encode a {image.shape} crop at quality {quality}")
        return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
