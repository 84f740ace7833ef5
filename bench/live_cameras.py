"""IP cameras on 127.0.0.1 for tests and benchmarks: MJPEG over HTTP (multipart/x-mixed-replace, as IP cameras
serve it), read by OpenCV's FFmpeg backend like any http:// camera.

`MjpegServer(jpegs, cameras, fps)` serves `/NAME.mjpg` for each scripted `Camera`: JPEG parts cycled from
`jpegs` at `fps`; each connection follows its `Connection` script (a number of parts, then hang up or stall,
garbage or truncated parts), so faults can be injected per camera. `clip_jpegs(path, count, width)` cuts the
parts from a video.
"""

from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

GARBAGE = b"this is not a JPEG " * 20


@dataclass
class Connection:
    """What the server does on one connection: `frames` parts (None: until shut down), then `then`."""

    frames: int | None = None
    then: str = "close"  # "close": hang up; "stall": keep the connection open and send nothing
    garbage: frozenset = frozenset()  # part numbers replaced by bytes that are not a JPEG
    truncated: frozenset = frozenset()  # part numbers cut to a third of their JPEG


@dataclass
class Camera:
    script: list[Connection] = field(default_factory=lambda: [Connection()])  # connection k follows script[k]
    opened: list[float] = field(default_factory=list)  # monotonic time of each connection


class MjpegServer(http.server.ThreadingHTTPServer):
    """`/NAME.mjpg` for each scripted camera, parts sent at `fps`."""

    daemon_threads = True

    def __init__(self, jpegs: list[bytes], cameras: dict[str, Camera], fps: float = 25.0):
        super().__init__(("127.0.0.1", 0), MjpegHandler)
        self.jpegs, self.cameras, self.fps = jpegs, cameras, float(fps)
        self.closing = threading.Event()  # releases stalled connections

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}.mjpg"

    def __enter__(self) -> MjpegServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        self.shutdown()
        self.server_close()


class MjpegHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server: MjpegServer = self.server
        camera = server.cameras.get(self.path.strip("/").removesuffix(".mjpg"))
        if camera is None:
            self.send_error(404)
            return
        camera.opened.append(time.monotonic())
        plan = camera.script[min(len(camera.opened), len(camera.script)) - 1]
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        part = 0
        while (plan.frames is None or part < plan.frames) and not server.closing.is_set():
            jpeg = server.jpegs[part % len(server.jpegs)]
            if part in plan.garbage:
                jpeg = GARBAGE
            elif part in plan.truncated:
                jpeg = jpeg[:len(jpeg) // 3]
            try:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%b\r\n"
                                 % (len(jpeg), jpeg))
                self.wfile.flush()
            except OSError:  # the reader hung up
                return
            part += 1
            server.closing.wait(1.0 / server.fps)
        if plan.then == "stall":
            server.closing.wait()


def clip_jpegs(path: Path, count: int, width: int | None = None) -> list[bytes]:
    """The first `count` frames of a video as JPEGs (resized to `width` px wide, keeping the aspect ratio)."""
    capture = cv2.VideoCapture(str(path))
    parts = []
    try:
        for _ in range(count):
            ok, image = capture.read()
            if not ok:
                break
            if width is not None and image.shape[1] != width:
                image = cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])),
                                   interpolation=cv2.INTER_AREA)
            parts.append(cv2.imencode(".jpg", image)[1].tobytes())
    finally:
        capture.release()
    if not parts:
        raise ValueError(f"no frames could be read from {path}")
    return parts
