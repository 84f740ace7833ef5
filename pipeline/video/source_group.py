"""Several cameras read at once: `SourceGroup.next_batch()` takes at most one frame (the oldest) per camera."""

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
