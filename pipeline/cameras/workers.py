"""Worker membership: each worker keeps a heartbeat key with a TTL that says it is alive and how many cameras
it can take; `live()` lists the workers whose heartbeat has not lapsed.

A sorted set (worker id -> expiry in Redis server milliseconds) lists them without SCAN, which on a cluster
would have to visit every node; expiry is judged by the server's clock (TIME in the script), never by the
workers' clocks, which may disagree between machines.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

from pipeline.cameras import keys
from pipeline.cameras.errors import redis_failures
from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)

_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return now
"""
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    capacity: int
    host: str = ""
    pid: int = 0


def default_worker_id() -> str:
    """host-pid-random: unique per process, readable in logs (host names are cut to fit the id rule)."""
    host = "".join(c if c.isalnum() or c in "_.-" else "-" for c in socket.gethostname())[:80] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Membership:
    """One worker's heartbeat, and the list of live workers. Redis failures: GalleryError."""

    def __init__(self, client, worker_id: str, capacity: int, ttl_s: float):
        self.worker_id = keys.validate_worker_id(worker_id)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ConfigError(f"worker capacity must be a whole number of cameras >= 0, got {capacity!r}")
        self.capacity = capacity
        self.ttl_s = float(ttl_s)
        self._client = client
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._live = client.register_script(_LIVE)
        self._record = json.dumps({"capacity": capacity, "host": socket.gethostname(), "pid": os.getpid(),
                                   "since": time.time()})

    def heartbeat(self) -> None:
        """Say "alive, with this capacity" for another TTL."""
        with redis_failures(f"heartbeat of worker {self.worker_id}"):
            self._heartbeat(keys=[keys.worker(self.worker_id), keys.WORKERS],
                            args=[self.worker_id, self._record, str(round(self.ttl_s * 1000))])

    def leave(self) -> None:
        """Stop counting as live at once (a clean stop), so the others' fair shares grow now, not after a TTL."""
        with redis_failures(f"worker {self.worker_id} leaving"):
            self._client.delete(keys.worker(self.worker_id))
            self._client.zrem(keys.WORKERS, self.worker_id)
        log.info("worker %s left", self.worker_id)

    def live(self) -> list[WorkerInfo]:
        """Workers whose heartbeat has not lapsed, by id."""
        return live_workers(self._client, self._live)


def live_workers(client, script=None) -> list[WorkerInfo]:
    """Workers whose heartbeat has not lapsed, by id (what `enroll.py cameras list` shows beside the leases)."""
    script = script or client.register_script(_LIVE)
    with redis_failures("list live workers"):
        ids = [_text(i) for i in script(keys=[keys.WORKERS])]
        records = client.mget([keys.worker(i) for i in ids]) if ids else []
    found = []
    for worker_id, raw in zip(ids, records, strict=True):
        if raw is None:  # expired between the two reads: not live
            continue
        record = json.loads(raw)
        found.append(WorkerInfo(worker_id, int(record["capacity"]), record.get("host", ""), int(record.get("pid", 0))))
    return sorted(found, key=lambda w: w.worker_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
