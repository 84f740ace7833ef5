"""Reading the event stream through a consumer group: at-least-once delivery whose state lives in Redis.

`StreamConsumer(client, stream, group, consumer)` is the one reader every downstream consumer (MQTT bridge,
console live updates, user code) builds its small loop on. Each program uses its own group name; each process
in a group its own, stable consumer name.

- The group is created on first use (XGROUP CREATE ... MKSTREAM) from `start_id`: "$" (only new events, the
  default: a new bridge does not replay the whole history) or "0" (everything still in the stream). A group
  that disappears (the stream was deleted) is created again.
- An entry is XACKed only after the handler returned. A handler that raises leaves that entry and every later
  one of the batch pending (order is kept); `poll` re-raises, and the next poll starts again from them.
- After a restart the consumer first re-reads its own pending entries (XREADGROUP from "0"), then new ones (">").
- Entries left pending by another consumer of the group for longer than `claim_idle_ms` (a dead process) are
  taken over with XAUTOCLAIM, then handled in stream order like our own.
- An entry whose data cannot be parsed (or that was trimmed from the stream while pending) is logged by entry
  id only (no names or face data), acked and counted as a dead letter (HINCRBY `<stream>:dead` group), never
  retried forever.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from pipeline.events.record import Event

log = logging.getLogger(__name__)

Handler = Callable[[Event], None]


def dead_letters_key(stream: str) -> str:
    """Hash of dead-letter counts per group; beside the stream, so in the same Redis Cluster slot."""
    return f"{stream}:dead"


class StreamConsumer:
    """One consumer of one group on one stream; `poll` handles one batch, `run` loops until stopped."""

    def __init__(self, client: Any, stream: str, group: str, consumer: str, *, start_id: str = "$",
                 count: int = 100, claim_idle_ms: int = 60_000, claim_every_s: float | None = None,
                 backoff_initial: float = 0.2, backoff_max: float = 10.0):
        self.client, self.stream, self.group, self.consumer = client, stream, group, consumer
        self.start_id, self.count, self.claim_idle_ms = start_id, int(count), int(claim_idle_ms)
        self.claim_every_s = max(0.05, claim_idle_ms / 2000.0) if claim_every_s is None else float(claim_every_s)
        self.backoff_initial, self.backoff_max = float(backoff_initial), float(backoff_max)
        self.handled = self.dead_letters = self.claimed = self.failures = 0
        self.last_error: str | None = None
        self._group_ready = False
        self._history_from: str | None = "0"  # re-reading our own pending entries from here; None: reading ">"
        self._next_claim = 0.0

    # -- one batch -------------------------------------------------------------------------------------
    def poll(self, handler: Handler, block_ms: int = 1000) -> int:
        """Handle at most `count` entries (pending ones first); block up to `block_ms` for new ones when
        there is nothing pending. Returns how many entries were handled (acked, dead letters included).
        Redis errors and the handler's exception propagate; what was not acked stays pending."""
        self._ensure_group()
        try:
            self._maybe_claim()
            entries = self._read(block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("consumer group %s of %s is gone (stream deleted?); creating it again", self.group,
                        self.stream)
            self._group_ready, self._history_from = False, "0"
            self._ensure_group()
            entries = self._read(block_ms)
        return self._handle(entries, handler)

    def run(self, handler: Handler, stop_event: threading.Event, block_ms: int = 1000) -> None:
        """`poll` until `stop_event` is set; failures (Redis down, the handler raising) are logged and retried
        with exponential backoff, the entries staying pending meanwhile."""
        failures = 0
        while not stop_event.is_set():
            try:
                self.poll(handler, block_ms)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - anything: the entries stay pending and are retried
                failures += 1
                delay = min(self.backoff_max, self.backoff_initial * 2.0 ** (failures - 1))
                log.warning("stream consumer %s/%s on %s: %s; retrying in %.1f s", self.group, self.consumer,
                            self.stream, self.last_error or f"{type(exc).__name__}: {exc}", delay)
                self.last_error = None
                stop_event.wait(delay)

    # -- reading ---------------------------------------------------------------------------------------
    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.stream, self.group, id=self.start_id, mkstream=True)
            log.info("created consumer group %s on %s from %s", self.group, self.stream, self.start_id)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _read(self, block_ms: int) -> list[tuple[Any, Any]]:
        if self._history_from is not None:
            reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: self._history_from},
                                           count=self.count)
            entries = _entries(reply)
            if entries:
                return entries
            self._history_from = None  # our pending entries are done: new ones from now on
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=self.count,
                                       block=max(0, int(block_ms)) or None)
        return _entries(reply)

    def _maybe_claim(self) -> None:
        """XAUTOCLAIM entries idle for `claim_idle_ms` in other consumers' lists; they are then re-read from
        our own pending list in stream order."""
        now = time.monotonic()
        if now < self._next_claim:
            return
        self._next_claim = now + self.claim_every_s
        cursor, total = "0-0", 0
        for _ in range(1000):  # a page per `count` entries; the cursor comes back to 0-0 at the end
            reply = self.client.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                           start_id=cursor, count=self.count)
            cursor = _text(reply[0])
            total += len(reply[1])
            if cursor == "0-0":
                break
        if total:
            self.claimed += total
            self._history_from = "0"
            log.warning("consumer %s/%s took over %d entries of %s left pending by another consumer for over "
                        "%d ms", self.group, self.consumer, total, self.stream, self.claim_idle_ms)

    # -- handling --------------------------------------------------------------------------------------
    def _handle(self, entries: list[tuple[Any, Any]], handler: Handler) -> int:
        done: list[Any] = []
        dead: list[Any] = []
        try:
            for entry_id, fields in entries:
                event = _parse(entry_id, fields, self.stream)
                if event is None:
                    dead.append(entry_id)
                else:
                    try:
                        handler(event)
                    except Exception as exc:
                        self.failures += 1
                        self.last_error = f"handler failed on entry {_text(entry_id)}: {type(exc).__name__}: {exc}"
                        self._history_from = "0"  # this one and the rest stay pending: read them again first
                        raise
                done.append(entry_id)
                if self._history_from is not None:
                    self._history_from = _text(entry_id)
        finally:
            if done:
                pipe = self.client.pipeline(transaction=False)
                pipe.xack(self.stream, self.group, *done)
                if dead:
                    pipe.hincrby(dead_letters_key(self.stream), self.group, len(dead))
                pipe.execute()
                self.handled += len(done)
                self.dead_letters += len(dead)
        return len(done)


def groups(client: Any, stream: str, consumers: bool = False) -> list[dict]:
    """The stream's consumer groups (XINFO GROUPS): name, consumers, pending, lag (entries not yet delivered;
    None where Redis cannot tell), last delivered id, and dead letters. [] when the stream does not exist.
    `consumers`: also each group's `members` (XINFO CONSUMERS): name, pending, idle_ms (a dead consumer's
    entries wait there until another one claims them)."""
    try:
        infos = client.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return []
        raise
    dead = {_text(k): int(v) for k, v in (client.hgetall(dead_letters_key(stream)) or {}).items()}
    found = []
    for info in infos:
        info = {_text(k): v for k, v in info.items()}
        name = _text(info["name"])
        lag = info.get("lag")
        found.append({"name": name, "consumers": int(info.get("consumers", 0)), "pending": int(info.get("pending", 0)),
                      "lag": None if lag is None else int(lag),
                      "last_delivered_id": _text(info.get("last-delivered-id", "")),
                      "dead_letters": dead.get(name, 0)})
        if consumers:
            found[-1]["members"] = [
                {"name": _text(c["name"]), "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
                for c in ({_text(k): v for k, v in member.items()} for member in client.xinfo_consumers(stream, name))]
    return found


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """XREADGROUP's reply (RESP2 list or RESP3 dict) as [(entry id, fields)]."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [entry for value in reply.values() for entry in (value[0] if value and isinstance(value[0], list)
                                                               else value)]
    return [entry for _, stream_entries in reply for entry in stream_entries]


def _parse(entry_id: Any, fields: Any, stream: str) -> Event | None:
    """The entry's Event, or None (logged by id only: the data may hold names) when it cannot be read."""
    if not fields:
        log.error("entry %s of %s was trimmed from the stream before it was delivered; counted as a dead letter",
                  _text(entry_id), stream)
        return None
    data = fields.get(b"data", fields.get("data"))
    try:
        return Event.from_json(json.loads(data))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        log.error("entry %s of %s is not a readable event (%s); acked as a dead letter", _text(entry_id), stream,
                  type(exc).__name__)
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
