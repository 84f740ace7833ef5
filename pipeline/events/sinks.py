"""Where events go: JSON-lines files and a Redis Stream (and memory, for tests).

`RedisStreamSink` never blocks the pipeline: `emit` queues the event and a sender thread XADDs it (MAXLEN ~,
so the stream stays capped). While Redis is down the queue is the buffer (bounded: beyond `buffer_size` the
oldest unsent event is dropped and counted), the sender retries with exponential backoff and delivers in order
once Redis is back. A write that fails after it may have reached the server (a timeout, a connection reset
mid-reply) is ambiguous: before resending, the sender looks for the events' `event_id`s in the stream after
the last entry it knows it wrote (stream ids only grow, so nothing of ours can be before it) and sends only
the missing ones. The client's own retries are switched off for the same reason: a blind resend of an XADD
duplicates the event.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.core.errors import FacestreamError
from pipeline.events.record import Event
from pipeline.gallery.clients import is_cluster, private_copy
from pipeline.gallery.keys import GalleryKeys

log = logging.getLogger(__name__)

SCAN_CHUNK = 1000  # entries per XRANGE when checking which events of an ambiguous write arrived


def events_key(gallery: str) -> str:
    """`fs:{gallery}:events`: the gallery's hash tag keeps it in the gallery's Redis Cluster slot."""
    return f"{GalleryKeys(gallery).base}:events"


class Sink(Protocol):
    def emit(self, event: Event) -> None: ...
    def flush(self, timeout: float | None = None) -> bool: ...
    def close(self, timeout: float | None = None) -> None: ...


class JsonlSink:
    """One JSON object per line, appended with one write() per event (O_APPEND: concurrent writers never
    interleave inside a line). A reader tailing the file treats a last line without "\\n" as incomplete."""

    def __init__(self, path: str | Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.written = 0
        self._lock = threading.Lock()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def emit(self, event: Event) -> None:
        line = (json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                raise FacestreamError(f"event file {self.path} is closed")
            view = memoryview(line)
            while view:  # a regular file takes it in one write; loop only on short writes (disk nearly full)
                view = view[os.write(self._fd, view):]
            self.written += 1
            if self.fsync:
                os.fsync(self._fd)

    def flush(self, timeout: float | None = None) -> bool:
        return True  # unbuffered: every line is in the file when emit returns

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class MemorySink:
    """Keeps events in a list (tests, the runner's summaries)."""

    def __init__(self):
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        pass


class RedisStreamSink:
    """XADD events to `stream_key` from a sender thread; survives Redis outages (see the module notes).

    `client`: a redis client, or a factory returning one (called again after each failure, so a server that
    comes back on another port, like a restarted embedded one, is found).
    """

    def __init__(self, client: Any, stream_key: str, *, maxlen: int = 100_000, approximate: bool = True,
                 buffer_size: int = 10_000, batch_size: int = 100, backoff_initial: float = 0.2,
                 backoff_max: float = 5.0, scan_limit: int = 200_000):
        self._factory: Callable[[], Any] = client if callable(client) else (lambda: _without_retries(client))
        self.stream_key = stream_key
        self.maxlen, self.approximate = int(maxlen), bool(approximate)
        self.buffer_size, self.batch_size = int(buffer_size), int(batch_size)
        self.backoff_initial, self.backoff_max = float(backoff_initial), float(backoff_max)
        self.scan_limit = int(scan_limit)
        self.delivered = self.dropped = self.failures = self.duplicates_skipped = 0
        self.last_error: str | None = None
        self._pending: deque[Event] = deque()
        self._in_flight = 0  # events at the head of _pending being sent now: never dropped
        self._cond = threading.Condition()
        self._retry_now = threading.Event()
        self._closing = False
        self._client: Any = None
        self._last_id: str | None = None  # stream id of our last confirmed write (or the tail we started at)
        self._uncertain = False  # the last write failed after possibly reaching the server
        self._thread = threading.Thread(target=self._run, name=f"events-{stream_key}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def stats(self) -> dict:
        with self._cond:
            return {"delivered": self.delivered, "pending": len(self._pending), "dropped": self.dropped,
                    "failures": self.failures, "duplicates_skipped": self.duplicates_skipped,
                    "last_error": self.last_error}

    def emit(self, event: Event) -> None:
        with self._cond:
            if self._closing:
                raise FacestreamError(f"event stream sink {self.stream_key} is closed")
            if len(self._pending) >= self.buffer_size and not self._drop_oldest_unsent():
                return  # every buffered event is in flight: the new one is the one dropped
            self._pending.append(event)
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event is in the stream; False if `timeout` passed first."""
        self._retry_now.set()  # the caller wants delivery now: cut the current backoff short
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending, timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Flush (within `timeout`), stop the sender; undelivered events are logged as lost."""
        if self._thread is None:
            return
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._retry_now.set()
        self._thread.join(max(1.0, timeout or 1.0))
        self._thread = None
        if self._pending:
            log.error("%d events could not be delivered to Redis stream %s: %s", len(self._pending),
                      self.stream_key, self.last_error)
        self._drop_client()

    # -- sender thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closing)
                if self._closing:
                    return
                batch = list(islice(self._pending, self.batch_size))
                self._in_flight = len(batch)
            try:
                self._send(batch)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - redis errors, and a factory that cannot connect
                failures += 1
                self._on_failure(exc, failures)
            finally:
                with self._cond:
                    self._in_flight = 0

    def _send(self, batch: list[Event]) -> None:
        client = self._client or self._connect()
        if self._last_id is None:
            self._last_id = _tail_id(client, self.stream_key)
        todo = batch
        if self._uncertain:
            arrived = self._already_delivered(client, {e.event_id for e in batch})
            todo = [e for e in batch if e.event_id not in arrived]
            self._uncertain = False
        # Sent as possibly-applied from here on: any failure below leaves the batch ambiguous.
        self._uncertain = bool(todo)
        ids = []
        if todo:
            pipe = client.pipeline(transaction=False)
            for event in todo:
                pipe.xadd(self.stream_key, _fields(event), maxlen=self.maxlen, approximate=self.approximate)
            ids = pipe.execute()
        self._uncertain = False
        with self._cond:
            for _ in batch:
                self._pending.popleft()
            self.delivered += len(todo)
            self.duplicates_skipped += len(batch) - len(todo)
            if ids:
                self._last_id = _text(ids[-1])
            self._cond.notify_all()

    def _already_delivered(self, client: Any, wanted: set[str]) -> set[str]:
        """Which of `wanted` event ids are in the stream after our last known entry."""
        found: set[str] = set()
        start, scanned = f"({self._last_id}", 0
        while scanned < self.scan_limit and found != wanted:
            entries = client.xrange(self.stream_key, min=start, max="+", count=SCAN_CHUNK)
            for entry_id, fields in entries:
                event_id = _text(fields.get(b"event_id", fields.get("event_id", b"")))
                if event_id in wanted:
                    found.add(event_id)
            scanned += len(entries)
            if len(entries) < SCAN_CHUNK:
                break
            start = f"({_text(entries[-1][0])}"
        return found

    def _connect(self) -> Any:
        client = self._factory()
        if client is None:
            raise redis.ConnectionError("the client factory returned no client")
        if hasattr(client, "set_retry"):
            client.set_retry(Retry(NoBackoff(), 0))  # see the module notes: no blind resends
        self._client = client
        return client

    def _on_failure(self, exc: Exception, failures: int) -> None:
        delay = min(self.backoff_max, self.backoff_initial * 2.0 ** (failures - 1))
        with self._cond:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            pending = len(self._pending)
        log.warning("events: Redis stream %s unavailable (%s); %d events buffered, retrying in %.1f s",
                    self.stream_key, self.last_error, pending, delay)
        self._drop_client()
        self._retry_now.wait(delay)
        self._retry_now.clear()

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
                if not is_cluster(client):  # RedisCluster.close() closes every node's pool; it has no single one
                    client.connection_pool.disconnect()  # close() leaves an explicitly given pool open
            except Exception:  # noqa: BLE001 - closing a dead connection may fail too
                pass

    def _drop_oldest_unsent(self) -> bool:
        """Drop the oldest event not in flight (those may already be in the stream); False if none."""
        dropped_one = self._in_flight < len(self._pending)  # called with the lock held
        if dropped_one:
            del self._pending[self._in_flight]
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("events: buffer of %d full while Redis is unreachable; %d events dropped so far",
                        self.buffer_size, self.dropped)
        return dropped_one


def _fields(event: Event) -> dict[str, str]:
    # Flat fields for consumers that filter by type or camera; the whole event as JSON in `data`.
    return {"event_id": event.event_id, "type": event.type, "camera": event.camera,
            "data": json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":"))}


def _tail_id(client: Any, key: str) -> str:
    last = client.xrevrange(key, max="+", min="-", count=1)
    return _text(last[0][0]) if last else "0-0"


def _without_retries(client: Any) -> Any:
    """A new client on the same server (or Redis Cluster) as `client`, without its automatic retries (the
    caller's is untouched). On a cluster that includes following MOVED after a failover: the failure path
    reconnects and re-checks instead, which is safe because a redirected write was not applied."""
    return private_copy(client, retry=Retry(NoBackoff(), 0))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
