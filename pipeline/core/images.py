"""Reading still images from disk as BGR uint8, the one pixel format every stage after a source takes.

cv2.imread returns None on failure without saying why, so failures are turned into SourceError naming
the file and the likely cause. Grayscale, alpha and 16-bit images are converted rather than refused:
enrolment photos arrive in all of these forms.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.errors import SourceError

log = logging.getLogger(__name__)

# What a folder search counts as a still image or a video (pipeline.core.inputs); a file named explicitly is
# tried whatever its extension. Upper-case extensions match too: compare `suffix.lower()`.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv"})

# A decompression bomb (a few kB of PNG declaring 30,000 x 30,000 pixels) would make the decoder allocate
# gigabytes; the header is checked against this before decoding. 100 MP is past any camera's photo.
MAX_PIXELS = 100_000_000


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image at `path` as (H, W, 3) BGR uint8; raises SourceError naming the file if it cannot be read.

    Images whose header declares more than `max_pixels` pixels are refused before any decoding.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    return decode_image(data, str(path), max_pixels)


def decode_image(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """`read_image` for bytes already in memory (an upload): the same checks, errors naming `name`."""
    path = name
    if not data:
        raise SourceError(f"cannot read image {path}: the file is empty (0 bytes)")
    if _is_truncated_jpeg(data):
        # libjpeg pads a truncated JPEG with grey and only warns; a half-grey face would enrol silently.
        raise SourceError(f"cannot read image {path}: the JPEG is truncated (no end-of-image marker)")
    size = header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        width, height = size
        raise SourceError(f"cannot read image {path}: it declares {width}x{height} pixels "
                          f"({width * height / 1e6:.0f} MP), over the limit of {max_pixels / 1e6:g} MP "
                          "(a decompression bomb?); refused before decoding")
    # Decoding from memory (not cv2.imread) also handles non-ASCII paths on every platform. ANYDEPTH|ANYCOLOR
    # keeps 16-bit and grayscale as stored but, unlike IMREAD_UNCHANGED, still applies EXIF orientation
    # (phone photos are often stored sideways); an alpha channel is dropped by the decoder.
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None or image.size == 0:
        raise SourceError(f"cannot read image {path}: not a decodable image ({len(data)} bytes)")
    return to_bgr8(image, str(path))


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG, JPEG, GIF, BMP or WebP header declares, read without decoding; else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)  # a negative height means top-down rows
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    # Walk the marker segments to the first SOFn frame header: precision (1 byte), height, width (2 each).
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length field
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and at + 9 <= len(data):
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header: not a JPEG we can size
            return None
        at += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


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
