"""Frame sources: webcams, network streams and video files, each read on its own thread into a small queue.

What happens when the consumer is slower than the source is a named policy (roboflow `VideoSource`, Frigate):

- `drop_oldest` (live sources): a camera never waits for us. When the queue is full the oldest queued frame
  is discarded and `frames_dropped` counts it, so the queue always holds the newest frames and latency stays
  bounded by `queue_size` frames.
- `wait` (files): the reader waits for room, so every frame of the file is delivered, in order.

A live source that fails to open, raises, or stops delivering frames is reopened by its reader thread with
exponential backoff (`backoff_initial` doubling up to `backoff_max`), so one bad camera never stalls the
others; `max_reconnects` (consecutive failures without a frame) turns it `failed` instead of retrying forever.
Streams are opened with FFmpeg open/read timeouts (`stall_seconds`): without them a stalled RTSP server blocks
`read()` for good and the reconnect logic never runs. A read that returns no frame (a corrupt JPEG in an MJPEG
stream, a lost packet) is counted in `read_failures` and skipped; only several in a row mean a reconnect.

`fps_cap` (per camera) keeps at most that many frames per second and drops the rest in the reader thread,
before they are queued, counted in `frames_skipped_fps` (not in `frames_read`): by media time for files, by the
monotonic clock for live sources. Seconds are cut into 1/fps_cap slots and the first frame of each slot is kept,
so a 25 fps file capped at 10 keeps exactly 10 frames per media second, with no drift. Where the capture has
`grab()`/`retrieve()` (OpenCV's does) a skipped frame is only grabbed, never retrieved: for webcams (MJPEG,
V4L2) that skips its decoding; for FFmpeg files and streams grab() already decodes (inter-frame codecs need
every frame) and what is saved is the colour conversion to BGR and the copy. Skipped frames still take a frame
index (`Frame.index` counts every frame the source produced, as drops do), so the tracker's frame-based
windows keep meaning source frames.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable, Literal
from urllib.parse import urlsplit

import cv2
import numpy as np

from pipeline.core.errors import SourceError
from pipeline.core.frames import Frame
from pipeline.core.urls import redact
from pipeline.gallery.keys import CAMERA_NAME
from pipeline.video.capture import (
    STREAM_TIMEOUT_MS,
    SourceKind,
    capture_property,
    default_camera_name,
    open_capture,
    release_capture,
    source_kind,
)

log = logging.getLogger(__name__)

Policy = Literal["auto", "drop_oldest", "wait"]
# A webcam can fail one read transiently (a USB hiccup); this many failures in a row mean it is gone.
READ_FAILURES_BEFORE_RECONNECT = 3
FALLBACK_FPS = 30.0  # media-time fallback for files whose container reports neither position nor rate
TERMINAL = ("finished", "failed", "stopped")


@dataclass
class SourceStats:
    frames_read: int = 0
    frames_dropped: int = 0  # discarded by drop_oldest before anyone read them
    frames_skipped_fps: int = 0  # grabbed but not kept: over the camera's fps_cap (never decoded to BGR)
    reconnects: int = 0  # successful re-opens after a failure
    errors: int = 0  # failed opens and broken reads
    read_failures: int = 0  # live reads that returned no frame (corrupt or missing), skipped
    last_error: str | None = None
    fps: float = 0.0  # capture rate over the last ~30 frames
    state: str = "idle"  # idle | starting | running | reconnecting | finished | failed | stopped
    backoff_s: float = 0.0  # the current (or last) wait before a reconnect attempt


class FrameSource:
    """One camera, stream or file, read on its own thread; `read()` returns the oldest queued `Frame`.

    Settings are plain values, validated where config is read (`pipeline.app.config.SourceConfig`, whose
    defaults these equal).
    """

    def __init__(self, spec: str, camera: str | None = None, *, queue_size: int = 4, policy: Policy = "auto",
                 reconnect: bool | None = None, backoff_initial: float = 0.5, backoff_max: float = 10.0,
                 max_reconnects: int | None = None, opener: Callable[[str], Any] | None = None,
                 realtime: bool = False, stall_seconds: float = STREAM_TIMEOUT_MS / 1000,
                 fps_cap: float | None = None):
        self.spec = str(spec)
        self.kind: SourceKind = source_kind(self.spec)
        self.camera = camera or default_camera_name(self.spec, self.kind)
        if not CAMERA_NAME.fullmatch(self.camera):
            # The name goes into Redis keys (console snapshots), file names and track ids.
            raise SourceError(f"invalid camera name {self.camera!r}: use 1-128 letters, digits, '_', '.' or '-'")
        live = self.kind != "file"
        self.policy = ("drop_oldest" if live else "wait") if policy == "auto" else policy
        self.reconnect = live if reconnect is None else bool(reconnect)
        self.queue_size = int(queue_size)
        self.backoff_initial, self.backoff_max = float(backoff_initial), float(backoff_max)
        self.max_reconnects = max_reconnects
        self.stall_seconds = float(stall_seconds)
        self.opener = opener or partial(open_capture, timeout_ms=max(1, round(self.stall_seconds * 1000)))
        self.realtime = bool(realtime) and not live
        if fps_cap is not None and not fps_cap > 0:
            raise SourceError(f"fps_cap of {self.camera} must be > 0 (or None: every frame), got {fps_cap}")
        self.fps_cap = None if fps_cap is None else float(fps_cap)
        self._last_slot: int | None = None  # the fps_cap slot of the last kept frame
        self.shown = redact(self.spec)
        self._cond = threading.Condition()
        self._queue: deque[Frame] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._capture: Any = None
        self._stats = SourceStats()
        self._capture_times: deque[float] = deque(maxlen=30)
        self._listeners: list[Callable[[], None]] = []  # called after each new frame or state end
        self._next_index = 0
        self._opened_frames = 0  # frames read from the current capture (media-time fallback)
        self._media_offset = 0.0  # a reopened file continues the clock instead of restarting at 0
        self._last_timestamp = -1.0
        self._pace_origin: float | None = None

    # -- consumer side -----------------------------------------------------------------------------
    @property
    def stats(self) -> SourceStats:
        """A consistent snapshot (the reader thread keeps updating the live one)."""
        with self._cond:
            times = self._capture_times
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
            return replace(self._stats, fps=round(fps, 2))

    @property
    def finished(self) -> bool:
        """Ended (file done, failed for good, or stopped) and nothing left to read."""
        with self._cond:
            return self._stats.state in TERMINAL and not self._queue

    def read(self, timeout: float | None = None) -> Frame | None:
        """The oldest queued frame; None if none arrives within `timeout` (None: wait) or the source ended."""
        with self._cond:
            if self._stats.state == "idle":
                raise SourceError(f"read() from {self.camera} before start()")
            if not self._queue and timeout != 0:
                self._cond.wait_for(lambda: self._queue or self._stats.state in TERMINAL, timeout)
            if not self._queue:
                return None
            frame = self._queue.popleft()
            self._cond.notify_all()  # room for a reader waiting under the `wait` policy
            return frame

    def start(self) -> FrameSource:
        """Start the reader thread. A source that does not reconnect is opened here: SourceError if it can't."""
        if self._thread is not None:
            return self
        with self._cond:
            self._stats.state = "starting"
        if not self.reconnect:
            try:
                self._capture = self._open()
            except SourceError as exc:
                self._end("failed", str(exc))
                raise
        self._thread = threading.Thread(target=self._run, name=f"source-{self.camera}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reading, join the thread (which releases the capture), discard queued frames. Idempotent."""
        self._request_stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                # Releasing a capture while another thread is inside read() can crash the backend: leave
                # it to the reader, which releases it as soon as the blocked read returns.
                log.warning("reader of %s still blocked in the capture %.1f s after stop()", self.camera, timeout)
        elif thread is None:
            self._release()
        with self._cond:
            self._queue.clear()
            if self._stats.state not in TERMINAL:
                self._stats.state = "stopped"
            self._cond.notify_all()

    def __enter__(self) -> FrameSource:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FrameSource({self.shown!r}, camera={self.camera!r}, kind={self.kind}, policy={self.policy})"

    def _request_stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()  # wakes a reader waiting for room

    # -- reader thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001 - a backend bug must end this source, not vanish silently
            log.exception("reader of %s crashed", self.camera)
            self._end("failed", f"reader crashed: {exc!r}")
        finally:
            self._release()
            self._end("stopped")  # no-op when already finished or failed

    def _loop(self) -> None:
        failures = 0  # consecutive attempts that delivered no frame
        while not self._stop.is_set():
            delivered, error = False, None
            if self._capture is None:
                self._capture, error = self._try_open(reconnecting=failures > 0 or self._stats.frames_read > 0)
            if self._capture is not None:
                self._set_state("running")
                delivered, error = self._pump()
                self._release()
            if self._stop.is_set():
                return
            if not self.reconnect:
                self._end("failed" if error else "finished", error)
                return
            failures = 0 if delivered else failures + 1
            if self.max_reconnects is not None and failures > self.max_reconnects:
                self._end("failed", f"gave up after {failures} failed attempts: {self._stats.last_error}")
                return
            if not self._wait_backoff(failures):
                return

    def _try_open(self, reconnecting: bool) -> tuple[Any, str | None]:
        try:
            capture = self._open()
        except SourceError as exc:
            self._note_error(str(exc))
            return None, str(exc)
        if reconnecting:
            with self._cond:
                self._stats.reconnects += 1
            log.info("reconnected to %s (%s)", self.camera, self.shown)
        return capture, None

    def _open(self) -> Any:
        try:
            capture = self.opener(self.spec)
        except Exception as exc:  # noqa: BLE001 - any opener failure is a source failure
            raise SourceError(f"cannot open {self.kind} {self.shown}: {self._scrub(str(exc))}") from exc
        if capture is None or (hasattr(capture, "isOpened") and not capture.isOpened()):
            release_capture(capture)
            raise SourceError(f"cannot open {self.kind} {self.shown}")
        if self.kind == "file" and self._opened_frames:
            self._media_offset = self._last_timestamp + 1.0 / self._fps_of(capture)
        self._opened_frames = 0
        return capture

    def _pump(self) -> tuple[bool, str | None]:
        """Read until the capture ends or breaks: (any frame delivered, error or None for a clean end)."""
        delivered, misses = False, 0
        while not self._stop.is_set():
            try:
                ok, image, timestamp = self._next_image()
            except Exception as exc:  # noqa: BLE001 - backends raise anything from cv2.error to OSError
                return delivered, self._note_error(f"read from {self.shown} failed: {self._scrub(str(exc))}")
            if ok and image is None:  # grabbed, over the fps cap
                misses, delivered = 0, True
                continue
            if ok:
                misses, delivered = 0, True
                self._deliver(image, timestamp)
                continue
            if self.kind == "file":
                return delivered, None  # end of file
            misses += 1
            with self._cond:
                self._stats.read_failures += 1
            if misses >= READ_FAILURES_BEFORE_RECONNECT:
                return delivered, self._note_error(f"{self.kind} {self.shown} stopped delivering frames")
        return delivered, None

    def _next_image(self) -> tuple[bool, np.ndarray | None, float]:
        """(ok, image, timestamp): (False, None, _) for no frame; (True, None, _) for one skipped by fps_cap."""
        capture = self._capture
        if self.fps_cap is None or not (hasattr(capture, "grab") and hasattr(capture, "retrieve")):
            ok, image = capture.read()
            if not ok or image is None:
                return False, None, 0.0
            timestamp = self._timestamp()
            return (True, image, timestamp) if self._keep(timestamp) else (True, None, timestamp)
        if not capture.grab():
            return False, None, 0.0
        timestamp = self._timestamp()  # the grabbed frame's position: known before it is retrieved
        if not self._keep(timestamp):
            return True, None, timestamp
        ok, image = capture.retrieve()
        return (True, image, timestamp) if ok and image is not None else (False, None, 0.0)

    def _keep(self, timestamp: float) -> bool:
        """Whether the frame is kept under fps_cap (always without one); a skipped frame is counted here."""
        if self.fps_cap is None:
            return True
        clock = timestamp if self.kind == "file" else time.monotonic()  # monotonic: NTP steps must not stall
        slot = math.floor(clock * self.fps_cap + 1e-6)  # 1e-6: media times like 0.4 s * 10 land in their slot
        if self._last_slot is None or slot > self._last_slot:
            self._last_slot = slot
            return True
        with self._cond:
            self._next_index += 1
            self._stats.frames_skipped_fps += 1
        return False

    def _deliver(self, image: np.ndarray, timestamp: float) -> None:
        if self.realtime:
            self._pace(timestamp)
        with self._cond:
            frame = Frame(self.camera, self._next_index, timestamp, image)
            self._next_index += 1
            self._stats.frames_read += 1
            self._capture_times.append(time.monotonic())
            if self.policy == "wait":
                self._cond.wait_for(lambda: len(self._queue) < self.queue_size or self._stop.is_set())
                if self._stop.is_set():
                    return
            elif len(self._queue) >= self.queue_size:
                self._queue.popleft()  # the camera never waits for us: the oldest frame goes
                self._stats.frames_dropped += 1
            self._queue.append(frame)
            self._cond.notify_all()
        self._notify_listeners()

    def _timestamp(self) -> float:
        """Wall clock for live sources; media time for files (container position, else index / fps)."""
        self._opened_frames += 1
        if self.kind != "file":
            return time.time()
        position = capture_property(self._capture, cv2.CAP_PROP_POS_MSEC)
        if position > 0 or self._opened_frames == 1:
            media = position / 1000.0
        else:
            media = (self._opened_frames - 1) / self._fps_of(self._capture)
        self._last_timestamp = self._media_offset + media
        return self._last_timestamp

    def _pace(self, timestamp: float) -> None:
        if self._pace_origin is None:
            self._pace_origin = time.monotonic() - timestamp
        delay = self._pace_origin + timestamp - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)

    def _wait_backoff(self, failures: int) -> bool:
        """Sleep before the next attempt (interrupted by stop); False if stopped meanwhile."""
        delay = min(self.backoff_max, self.backoff_initial * 2.0 ** failures)
        with self._cond:
            self._stats.state, self._stats.backoff_s = "reconnecting", delay
        log.warning("%s: reconnecting in %.2f s (%s)", self.camera, delay, self._stats.last_error)
        return not self._stop.wait(delay)

    def _scrub(self, message: str) -> str:
        """`message` without the URL's password (backend errors may echo the URL)."""
        password = urlsplit(self.spec).password if self.kind == "stream" else None
        return message.replace(password, "***") if password else message

    @staticmethod
    def _fps_of(capture: Any) -> float:
        fps = capture_property(capture, cv2.CAP_PROP_FPS)
        return fps if 0 < fps < 1000 else FALLBACK_FPS

    def _note_error(self, message: str) -> str:
        with self._cond:
            self._stats.errors += 1
            self._stats.last_error = message
        return message

    def _set_state(self, state: str) -> None:
        with self._cond:
            if self._stats.state not in TERMINAL:
                self._stats.state = state
                if state == "running":
                    self._stats.backoff_s = 0.0

    def _end(self, state: str, error: str | None = None) -> None:
        with self._cond:
            if self._stats.state in TERMINAL:
                return
            self._stats.state = state
            if error:
                self._stats.last_error = error
            self._cond.notify_all()
        if state == "failed":
            log.error("source %s failed: %s", self.camera, error)
        self._notify_listeners()

    def _notify_listeners(self) -> None:
        for listener in self._listeners:
            listener()

    def _release(self) -> None:
        capture, self._capture = self._capture, None
        release_capture(capture)
