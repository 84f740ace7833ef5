"""Reading still images from disk as BGR uint8, the one pixel format every stage after a source takes.

cv2.imread returns None on failure without saying why, so failures are turned into SourceError naming
the file and the likely cause. Grayscale, alpha and 16-bit images are converted rather than refused:
enrolment photos arrive in all of these forms.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import SourceError

log = logging.getLogger(__name__)


def read_image(path: str | Path) -> np.ndarray:
    """The image at `path` as (H, W, 3) BGR uint8; raises SourceError naming the file if it cannot be read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    if not data:
        raise SourceError(f"cannot read image {path}: the file is empty (0 bytes)")
    # Decoding from memory (not cv2.imread) also handles non-ASCII paths on every platform. ANYDEPTH|ANYCOLOR
    # keeps 16-bit and grayscale as stored but, unlike IMREAD_UNCHANGED, still applies EXIF orientation
    # (phone photos are often stored sideways); an alpha channel is dropped by the decoder.
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None or image.size == 0:
        raise SourceError(f"cannot read image {path}: not a decodable image ({len(data)} bytes)")
    if _is_truncated_jpeg(data):
        # libjpeg pads a truncated JPEG with grey and only warns; a half-grey face would enrol silently.
        raise SourceError(f"cannot read image {path}: the JPEG is truncated (no end-of-image marker)")
    return to_bgr8(image, str(path))


def _is_truncated_jpeg(data: bytes) -> bool:
    # Trailing padding after EOI is common (some cameras append zeros), so look near the end, not only at it.
    return data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]


def to_bgr8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert a decoded image (gray, gray+alpha, BGR, BGRA; 8/16-bit or float) to BGR uint8."""
    image = _to_uint8(image, name)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2] if image.ndim == 3 else 0
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 2:  # gray + alpha: drop the alpha (faces are never transparent on purpose)
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return np.ascontiguousarray(image)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise SourceError(f"cannot read image {name}: unsupported shape {image.shape}")


def _to_uint8(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)  # the high byte: exact for 8-bit data stored as 16-bit
    if image.dtype in (np.float32, np.float64):  # e.g. EXR/HDR in [0, 1]
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise SourceError(f"cannot read image {name}: unsupported pixel type {image.dtype}")
