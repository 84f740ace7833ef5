"""The event bus: each event fanned out to every sink; one failing sink never stops the others.

Face crops are left out unless `include_crops=True` (privacy: an event log should not become a photo archive
by default).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace

from pipeline.events.record import Event
from pipeline.events.sinks import Sink

log = logging.getLogger(__name__)


class EventBus:
    """`emit(event)` to every sink; counts per type; `close()` flushes everything (also on Ctrl-C)."""

    def __init__(self, sinks: list[Sink], include_crops: bool = False):
        self.sinks = list(sinks)
        self.include_crops = include_crops
        self.counts: Counter[str] = Counter()
        self.sink_errors = 0

    def emit(self, event: Event) -> Event:
        """Send `event` (without its crop unless crops are on); returns what was sent."""
        if not self.include_crops and event.crop_jpeg_b64 is not None:
            event = replace(event, crop_jpeg_b64=None)
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
