"""The event bus: each event fanned out to every sink; one failing sink never stops the others.

Face crops are left out unless `include_crops=True` (privacy: an event log should not become a photo archive
by default). A worker's `stamp` marks each event with the lease it was made under (worker, fencing token) and
holds back the events of a camera whose lease it no longer holds (`held_back`): a worker that stalled past its
lease must not write as the camera's owner.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from pipeline.events.record import Event
from pipeline.events.sinks import Sink

log = logging.getLogger(__name__)


class EventBus:
    """`emit(event)` to every sink; counts per type; `close()` flushes everything (also on Ctrl-C)."""

    def __init__(self, sinks: list[Sink], include_crops: bool = False,
                 stamp: Callable[[Event], Event | None] | None = None):
        self.sinks = list(sinks)
        self.include_crops = include_crops
        self.stamp = stamp
        self.counts: Counter[str] = Counter()
        self.sink_errors = 0
        self.held_back = 0  # events `stamp` refused: their camera's lease was lost

    def emit(self, event: Event) -> Event | None:
        """Send `event` (without its crop unless crops are on); returns what was sent (None: held back)."""
        if not self.include_crops and event.crop_jpeg_b64 is not None:
            event = replace(event, crop_jpeg_b64=None)
        if self.stamp is not None:
            stamped = self.stamp(event)
            if stamped is None:
                self.held_back += 1
                return None
            event = stamped
        self.counts[event.type] += 1
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception:  # noqa: BLE001 - one broken sink must not lose the event for the others
                self.sink_errors += 1
                log.exception("event sink %s failed on a %s event", type(sink).__name__, event.type)
        return event

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        return all([sink.flush(_remaining(deadline)) for sink in self.sinks])

    def close(self, timeout: float | None = 5.0) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for sink in self.sinks:
            try:
                sink.close(_remaining(deadline))
            except Exception:  # noqa: BLE001 - close the others anyway
                log.exception("closing event sink %s failed", type(sink).__name__)

    def __enter__(self) -> EventBus:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
