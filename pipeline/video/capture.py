"""What a source spec is (webcam, stream, file), how it is opened with OpenCV, and the camera's default name."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import cv2

from pipeline.core.errors import SourceError

log = logging.getLogger(__name__)

SourceKind = Literal["webcam", "file", "stream"]
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://")
# FFmpeg's open and read timeouts for streams unless `stall_seconds` says otherwise: how long a dead server can
# hold the reader before it reconnects (OpenCV's own default waits ~30 s to open and forever to read).
STREAM_TIMEOUT_MS = 5000


def source_kind(spec: str) -> SourceKind:
    """"0", "1", /dev/videoN -> webcam; rtsp://, rtmp://, http(s):// -> stream; else an existing video file."""
    text = str(spec).strip()
    if text.isdigit() or re.fullmatch(r"/dev/video\d+", text):
        return "webcam"
    if text.lower().startswith(STREAM_SCHEMES):
        return "stream"
    path = Path(text).expanduser()
    if not path.exists():
        raise SourceError(f"video file not found: {text}")
    if not path.is_file():
        raise SourceError(f"video source {text} is not a file")
    return "file"


def open_capture(spec: str, timeout_ms: int = STREAM_TIMEOUT_MS) -> cv2.VideoCapture:
    """The default opener: an OpenCV capture for a webcam index, a stream URL or a file path.

    `timeout_ms` bounds a stream's open and each of its reads (a stalled server); webcams and files ignore it.
    """
    kind = source_kind(spec)
    if kind == "webcam":
        capture = cv2.VideoCapture(int(spec) if spec.strip().isdigit() else spec)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer stale frames in the driver; ignored where unsupported
        return capture
    if kind == "stream":
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        return cv2.VideoCapture(spec, cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(str(Path(spec).expanduser()))


def default_camera_name(spec: str, kind: SourceKind) -> str:
    """cam0 for webcam 0, the file's stem, or host[_path] for a stream; safe in keys and file names."""
    if kind == "webcam":
        return "cam" + re.sub(r"\D", "", spec)
    if kind == "file":
        name = Path(spec).stem
    else:
        parts = urlsplit(spec)
        name = f"{parts.hostname or 'stream'}{parts.path}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:128] or "source"  # 128: a camera name's limit


def capture_property(capture: Any, prop: int) -> float:
    try:
        return float(capture.get(prop))
    except Exception:  # noqa: BLE001 - test doubles and some backends lack properties
        return 0.0


def release_capture(capture: Any) -> None:
    if capture is None:
        return
    try:
        capture.release()
    except Exception as exc:  # noqa: BLE001 - releasing must never mask the error that got us here
        log.debug("release failed: %s", exc)
