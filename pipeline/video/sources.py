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
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal
from urllib.parse import urlsplit

import cv2
import numpy as np

from pipeline.core.errors import SourceError
from pipeline.core.frames import Frame
from pipeline.core.urls import redact

log = logging.getLogger(__name__)

SourceKind = Literal["webcam", "file", "stream"]
Policy = Literal["auto", "drop_oldest", "wait"]
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://")
# FFmpeg's open and read timeouts for streams unless `stall_seconds` says otherwise: how long a dead server can
# hold the reader before it reconnects (OpenCV's own default waits ~30 s to open and forever to read).
STREAM_TIMEOUT_MS = 5000
# A webcam can fail one read transiently (a USB hiccup); this many failures in a row mean it is gone.
READ_FAILURES_BEFORE_RECONNECT = 3
FALLBACK_FPS = 30.0  # media-time fallback for files whose container reports neither position nor rate
TERMINAL = ("finished", "failed", "stopped")




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
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "source"


@dataclass
class SourceStats:
    frames_read: int = 0
    frames_dropped: int = 0  # discarded by drop_oldest before anyone read them
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
                 realtime: bool = False, stall_seconds: float = STREAM_TIMEOUT_MS / 1000):
        self.spec = str(spec)
        self.kind: SourceKind = source_kind(self.spec)
        self.camera = camera or default_camera_name(self.spec, self.kind)
        live = self.kind != "file"
        self.policy = ("drop_oldest" if live else "wait") if policy == "auto" else policy
        self.reconnect = live if reconnect is None else bool(reconnect)
        self.queue_size = int(queue_size)
        self.backoff_initial, self.backoff_max = float(backoff_initial), float(backoff_max)
        self.max_reconnects = max_reconnects
        self.stall_seconds = float(stall_seconds)
        self.opener = opener or partial(open_capture, timeout_ms=max(1, round(self.stall_seconds * 1000)))
        self.realtime = bool(realtime) and not live
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
            _release(capture)
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
                ok, image = self._capture.read()
            except Exception as exc:  # noqa: BLE001 - backends raise anything from cv2.error to OSError
                return delivered, self._note_error(f"read from {self.shown} failed: {self._scrub(str(exc))}")
            if ok and image is not None:
                misses, delivered = 0, True
                self._deliver(image)
                continue
            if self.kind == "file":
                return delivered, None  # end of file
            misses += 1
            with self._cond:
                self._stats.read_failures += 1
            if misses >= READ_FAILURES_BEFORE_RECONNECT:
                return delivered, self._note_error(f"{self.kind} {self.shown} stopped delivering frames")
        return delivered, None

    def _deliver(self, image: np.ndarray) -> None:
        timestamp = self._timestamp()
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
        position = _get(self._capture, cv2.CAP_PROP_POS_MSEC)
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
        fps = _get(capture, cv2.CAP_PROP_FPS)
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
        _release(capture)


class SourceGroup:
    """Several sources read at once; `next_batch()` takes at most one frame (the oldest) per camera."""

    def __init__(self, sources: list[FrameSource]):
        cameras = [s.camera for s in sources]
        duplicates = sorted({c for c in cameras if cameras.count(c) > 1})
        if duplicates:
            raise SourceError(f"camera names must be unique in a group; repeated: {', '.join(duplicates)}")
        self.sources = list(sources)
        self._cond = threading.Condition()
        self._generation = 0  # bumped on every new frame: next_batch sleeps until it changes
        for source in self.sources:
            source._listeners.append(self._wake)

    def start(self) -> SourceGroup:
        """Start every source; one that cannot open is logged and marked failed, the others run.

        SourceError only when no source could start at all.
        """
        errors = []
        for source in self.sources:
            try:
                source.start()
            except SourceError as exc:
                log.error("camera %s not started: %s", source.camera, exc)
                errors.append(str(exc))
        if self.sources and len(errors) == len(self.sources):
            raise SourceError("no source could be opened: " + "; ".join(errors))
        return self

    def next_batch(self, max_wait: float = 0.05) -> list[Frame]:
        """The oldest queued frame of each camera that has one; [] if none arrives within `max_wait` s."""
        deadline = time.monotonic() + max_wait
        while True:
            with self._cond:
                generation = self._generation
            batch = [frame for source in self.sources if (frame := source.read(timeout=0)) is not None]
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0 or self.finished:
                return batch
            with self._cond:
                self._cond.wait_for(lambda: self._generation != generation, remaining)

    @property
    def finished(self) -> bool:
        return all(source.finished for source in self.sources)

    def stats(self) -> dict[str, SourceStats]:
        return {source.camera: source.stats for source in self.sources}

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every source; they wind down in parallel, then each is joined within `timeout` in all."""
        for source in self.sources:
            source._request_stop()
        deadline = time.monotonic() + timeout
        for source in self.sources:
            source.stop(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> SourceGroup:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wake(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()


def _get(capture: Any, prop: int) -> float:
    try:
        return float(capture.get(prop))
    except Exception:  # noqa: BLE001 - test doubles and some backends lack properties
        return 0.0


def _release(capture: Any) -> None:
    if capture is None:
        return
    try:
        capture.release()
    except Exception as exc:  # noqa: BLE001 - releasing must never mask the error that got us here
        log.debug("release failed: %s", exc)
