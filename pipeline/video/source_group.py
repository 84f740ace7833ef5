"""Several cameras read at once: `SourceGroup.next_batch()` takes at most one frame (the oldest) per camera.

A worker's group changes while it runs (`keep_open`: cameras leased and released): `add` starts a source,
`remove` stops one, and `take_closed` tells the detect loop which cameras went, so their tracks end.
"""

from __future__ import annotations

import logging
import threading
import time

from pipeline.core.errors import SourceError
from pipeline.core.frames import Frame
from pipeline.video.sources import FrameSource, SourceStats

log = logging.getLogger(__name__)


class SourceGroup:
    """Several sources read at once; `next_batch()` takes at most one frame (the oldest) per camera."""

    def __init__(self, sources: list[FrameSource], keep_open: bool = False):
        cameras = [s.camera for s in sources]
        duplicates = sorted({c for c in cameras if cameras.count(c) > 1})
        if duplicates:
            raise SourceError(f"camera names must be unique in a group; repeated: {', '.join(duplicates)}")
        self.sources = list(sources)  # replaced, never mutated: readers iterate over a consistent list
        self.keep_open = keep_open  # a worker's group: not finished when its sources are (more may come)
        self.retired: dict[str, SourceStats] = {}  # removed cameras' last stats, for the run summary
        self._cond = threading.Condition()
        self._generation = 0  # bumped on every new frame: next_batch sleeps until it changes
        self._closed: list[str] = []
        self._stopped = False
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

    def add(self, source: FrameSource) -> None:
        """Start reading one more camera (SourceError if the name is taken or it cannot be opened)."""
        with self._cond:
            if self._stopped:
                raise SourceError(f"camera {source.camera}: the group is stopped")
            if any(s.camera == source.camera for s in self.sources):
                raise SourceError(f"camera {source.camera} is already read by this group")
        source._listeners.append(self._wake)
        source.start()
        with self._cond:
            self.sources = [*self.sources, source]
            self.retired.pop(source.camera, None)
            self._wake_locked()

    def remove(self, camera: str, timeout: float = 2.0) -> bool:
        """Stop reading `camera`; its queued frames are dropped. False if the group has no such camera."""
        with self._cond:
            source = next((s for s in self.sources if s.camera == camera), None)
            if source is None:
                return False
            self.sources = [s for s in self.sources if s is not source]
            self._closed.append(camera)
            self._wake_locked()
        source.stop(timeout=timeout)
        self.retired[camera] = source.stats
        return True

    def take_closed(self) -> list[str]:
        """Cameras removed since the last call, in order."""
        with self._cond:
            closed, self._closed = self._closed, []
        return closed

    def next_batch(self, max_wait: float = 0.05) -> list[Frame]:
        """The oldest queued frame of each camera that has one; [] if none arrives within `max_wait` s."""
        deadline = time.monotonic() + max_wait
        while True:
            with self._cond:
                generation = self._generation
            batch = [frame for source in self.sources if (frame := source.read(timeout=0)) is not None]
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0 or self.finished or self._closed:
                return batch
            with self._cond:
                self._cond.wait_for(lambda g=generation: self._generation != g, remaining)

    @property
    def finished(self) -> bool:
        if self.keep_open:
            return self._stopped
        return all(source.finished for source in self.sources)

    def stats(self) -> dict[str, SourceStats]:
        return {**self.retired, **{source.camera: source.stats for source in self.sources}}

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every source; they wind down in parallel, then each is joined within `timeout` in all."""
        with self._cond:
            self._stopped = True
            self._wake_locked()
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
            self._wake_locked()

    def _wake_locked(self) -> None:
        self._generation += 1
        self._cond.notify_all()
