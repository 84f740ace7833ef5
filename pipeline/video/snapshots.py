"""Live snapshots and camera health for the console: each camera's latest annotated frame, and how it is doing.

Opt-in (`console.snapshots`). The output thread `offer`s each frame it has drawn; at most `fps` frames per second
per camera are taken (the rest are skipped at the cost of one clock read), and the latest one taken is rendered
(boxes and labels drawn as in the annotated video, downscaled so its longer side is `px`, JPEG) and SET on the
publisher's own thread:

    fs:{<gallery>}:live:<camera>    the JPEG
    fs:{<gallery>}:camera:<camera>  health JSON: camera, fps, frames_read, frames_dropped, state, errors,
                                    reconnects, faces (boxes in the last frame taken), frame, time, host, pid

both with PX = `ttl_s` (keys: pipeline/gallery/keys.py): a camera whose worker dies disappears from the console
within `ttl_s`. Health is published for every camera of `stats_fn()` at most `fps` times a second, even while a
camera delivers no frame (reconnecting), so "no picture" and "gone" look different.

The stream never waits for Redis: `offer` only takes a lock and replaces the camera's pending frame (an older
one not yet published is counted in `replaced`). A Redis failure drops what it was publishing (counted in
`failures` and `dropped`) and is logged at most once a minute.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import redis

from pipeline.core.errors import ConfigError
from pipeline.gallery.keys import GalleryKeys
from pipeline.video.output import BoxLabel, draw_labels

log = logging.getLogger(__name__)

JPEG_QUALITY = 80  # a 640 px frame in ~40-60 kB: a Live page of a few cameras at 2 fps stays well under 1 MB/s
LOG_EVERY_S = 60.0  # a failing Redis is logged at most this often
JOIN_S = 5.0  # close() waits this long for a publish in flight
HEALTH_FIELDS = ("fps", "frames_read", "frames_dropped", "state", "errors", "reconnects")


@dataclass(frozen=True)
class _Pending:
    image: np.ndarray
    labels: tuple[BoxLabel, ...]
    frame: int | None


class SnapshotPublisher:
    """`offer(camera, image, labels, frame)` from the output thread; `start()`, `close()`. `publish()` does one
    round of work (the thread calls it; tests call it directly, with a fake `clock`)."""

    def __init__(self, client: redis.Redis, gallery: str, fps: float, px: int, ttl_s: float,
                 stats_fn: Callable[[], Mapping[str, Any]], *, clock: Callable[[], float] = time.monotonic,
                 quality: int = JPEG_QUALITY):
        if not 0 < fps <= 30 or px < 16 or ttl_s <= 0 or not 1 <= quality <= 100:
            raise ConfigError(f"snapshots need 0 < fps <= 30, px >= 16, ttl_s > 0, 1 <= quality <= 100; got "
                              f"fps={fps}, px={px}, ttl_s={ttl_s}, quality={quality}")
        self.client, self.keys = client, GalleryKeys(gallery)
        self.interval, self.px, self.ttl_ms = 1.0 / float(fps), int(px), max(1, round(ttl_s * 1000))
        self.stats_fn, self.clock, self.quality = stats_fn, clock, int(quality)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.published = self.health_published = self.skipped = self.replaced = 0
        self.failures = self.dropped = 0
        self._lock = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._due: dict[str, float] = {}  # camera -> clock time its next frame may be taken
        self._faces: dict[str, int] = {}
        self._frames: dict[str, int | None] = {}
        self._health_due = float("-inf")
        self._logged_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- output thread ---------------------------------------------------------------------------
    def offer(self, camera: str, image: np.ndarray, labels: Sequence[BoxLabel], frame: int | None = None) -> bool:
        """Take this frame for publishing if the camera is due one (at most `fps` a second); never blocks on
        Redis. Returns whether it was taken."""
        now = self.clock()
        with self._lock:
            if now < self._due.get(camera, float("-inf")):
                self.skipped += 1
                return False
            self._due[camera] = now + self.interval
            if camera in self._pending:
                self.replaced += 1
            self._pending[camera] = _Pending(image, tuple(labels), frame)
            self._faces[camera], self._frames[camera] = len(labels), frame
            self._lock.notify()
        return True

    # -- publisher thread ------------------------------------------------------------------------
    def start(self) -> SnapshotPublisher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="snapshots", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread, then publish what is pending and each camera's last health (final states); once."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._lock:
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(JOIN_S)
            self._thread = None
        self.publish(health=True)

    def publish(self, health: bool = False) -> int:
        """Render and SET the pending frames, and every camera's health if due (or `health`); returns the keys
        set. A Redis failure is counted and logged (at most once a minute), never raised."""
        with self._lock:
            pending, self._pending = self._pending, {}
        now = self.clock()
        records = self._health() if health or now >= self._health_due else {}
        if records:
            self._health_due = now + self.interval
        if not pending and not records:
            return 0
        try:
            frames = {camera: self.render(p) for camera, p in pending.items()}
            pipe = self.client.pipeline(transaction=False)
            for camera, jpeg in frames.items():
                pipe.set(self.keys.live(camera), jpeg, px=self.ttl_ms)
            for camera, record in records.items():
                pipe.set(self.keys.camera(camera), json.dumps(record, sort_keys=True), px=self.ttl_ms)
            pipe.execute()
        except (redis.RedisError, OSError, cv2.error, ValueError) as exc:
            self.dropped += len(pending)
            self._failed(exc)
            return 0
        self.published += len(frames)
        self.health_published += len(records)
        return len(frames) + len(records)

    def render(self, pending: _Pending) -> bytes:
        """The frame with its boxes drawn, downscaled to `px` on its longer side (never up), as JPEG."""
        canvas = draw_labels(pending.image, pending.labels)
        h, w = canvas.shape[:2]
        scale = self.px / max(h, w)
        if scale < 1:
            canvas = cv2.resize(canvas, (max(1, round(w * scale)), max(1, round(h * scale))),
                                interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError(f"could not JPEG-encode a {w}x{h} snapshot")
        return data.tobytes()

    def summary(self) -> dict:
        return {"published": self.published, "health_published": self.health_published, "skipped": self.skipped,
                "replaced": self.replaced, "failures": self.failures, "dropped": self.dropped}

    def _health(self) -> dict[str, dict]:
        stats = dict(self.stats_fn())
        with self._lock:
            faces, frames = dict(self._faces), dict(self._frames)
        wall = time.time()
        records = {}
        for camera in sorted(set(stats) | set(faces)):
            s = stats.get(camera)
            record = {"camera": camera, "faces": faces.get(camera, 0), "frame": frames.get(camera),
                      "time": round(wall, 3), "host": self.host, "pid": self.pid}
            record.update({f: _plain(getattr(s, f, None)) for f in HEALTH_FIELDS})
            records[camera] = record
        return records

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._lock.wait_for(lambda: self._pending or self._stop.is_set(), timeout=self.interval)
            if self._stop.is_set():
                return
            try:
                self.publish()
            except Exception as exc:  # noqa: BLE001 - the console's pictures must never end the run
                self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        now = self.clock()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("snapshots of gallery %r not published (%s: %s); %d failure(s) so far, retrying with the "
                        "next frames", self.keys.gallery, type(exc).__name__, exc, self.failures)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
