"""Camera leases: one owner per camera at a time, with a TTL and a fencing token.

A lease is the key `fs:{cameras}:lease:<camera>` = "<token>:<worker id>" with a PX TTL. Claiming is one Lua
script: if nobody holds the camera, INCR its fencing counter and SET the lease NX PX; so a token is never handed
out without a lease, and tokens rise strictly across owners. Renewal and release compare the whole value
(worker *and* token) before they touch the key, so a worker whose lease expired and was taken over cannot
extend or delete the new owner's.

Two checks for a writer, from cheap to sure:
- `Lease.valid()`: local and free. The lease counts as ours until `ttl - margin` after the moment the last
  claim/renew command was *sent* (monotonic clock), so it turns false before Redis can expire the key and hand
  the camera to someone else. A worker that stalled (GC, SIGSTOP, a swapped-out VM) sees False on waking.
- `LeaseManager.check(lease)`: one GET, True only while Redis still holds this very token for this worker.
  Downstream stores that keep the highest token seen per camera can refuse a lower one (the fencing proper).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from pipeline.cameras import keys
from pipeline.cameras.errors import redis_failures
from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 5.0
# Of the TTL, the share kept back from local validity: covers the request's trip to Redis and clock-rate
# differences between this host and the server (both far smaller than this in practice).
DEFAULT_MARGIN = 0.1

_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Lease:
    """A camera held by `worker_id` under fencing `token`; `deadline` is local monotonic time."""

    camera: str
    worker_id: str
    token: int
    deadline: float

    @property
    def value(self) -> str:
        """The lease key's value in Redis."""
        return f"{self.token}:{self.worker_id}"

    def valid(self, now: float | None = None) -> bool:
        """True while this worker may still act as the owner without asking Redis (see the module doc)."""
        return (time.monotonic() if now is None else now) < self.deadline

    def remaining_s(self, now: float | None = None) -> float:
        return max(0.0, self.deadline - (time.monotonic() if now is None else now))


@dataclass(frozen=True)
class Holder:
    """Who holds a camera now, as Redis says."""

    worker_id: str
    token: int


class LeaseManager:
    """Claims, renews, checks and releases the camera leases of one worker. Redis failures: GalleryError."""

    def __init__(self, client, worker_id: str, ttl_s: float = DEFAULT_TTL_S, margin: float = DEFAULT_MARGIN):
        self.worker_id = keys.validate_worker_id(worker_id)
        if not ttl_s >= 0.05:
            raise ConfigError(f"lease ttl_s must be at least 0.05 s, got {ttl_s!r}")
        if not 0 <= margin < 1:
            raise ConfigError(f"lease margin must be a fraction of the TTL in [0, 1), got {margin!r}")
        self.ttl_s = float(ttl_s)
        self._ttl_ms = str(round(ttl_s * 1000))
        self._keep_s = ttl_s * (1 - margin)
        self._client = client
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def claim(self, camera: str) -> Lease | None:
        """A new lease on `camera`, or None when another worker (or this one, under an older lease) holds it."""
        keys.validate_camera_name(camera)
        sent = time.monotonic()  # before the command: the local deadline must not outlive Redis's TTL
        with redis_failures(f"claim camera {camera!r}"):
            token = self._claim(keys=[keys.lease(camera), keys.token(camera)], args=[self.worker_id, self._ttl_ms])
        if token is None:
            return None
        lease = Lease(camera, self.worker_id, int(token), sent + self._keep_s)
        log.info("camera %s claimed by %s (token %d)", camera, self.worker_id, lease.token)
        return lease

    def renew(self, lease: Lease) -> Lease | None:
        """`lease` with a fresh deadline, or None when it is no longer ours (expired, or taken over since)."""
        self._own(lease)
        sent = time.monotonic()
        with redis_failures(f"renew the lease on camera {lease.camera!r}"):
            extended = self._renew(keys=[keys.lease(lease.camera)], args=[lease.value, self._ttl_ms])
        if not extended:
            log.warning("lease on camera %s (token %d) lost by %s", lease.camera, lease.token, self.worker_id)
            return None
        return replace(lease, deadline=sent + self._keep_s)

    def release(self, lease: Lease) -> bool:
        """Delete the lease if it is still ours; False (and nothing deleted) if someone else holds it now."""
        self._own(lease)
        with redis_failures(f"release the lease on camera {lease.camera!r}"):
            released = bool(self._release(keys=[keys.lease(lease.camera)], args=[lease.value]))
        log.info("camera %s %s by %s (token %d)", lease.camera, "released" if released else "was no longer held",
                 self.worker_id, lease.token)
        return released

    def check(self, lease: Lease) -> bool:
        """True only while Redis holds exactly this lease (worker and token): ask before writing as the owner."""
        with redis_failures(f"check the lease on camera {lease.camera!r}"):
            current = self._client.get(keys.lease(lease.camera))
        return current is not None and _text(current) == lease.value

    def holders(self, cameras: Iterable[str]) -> dict[str, Holder]:
        return holders(self._client, cameras)

    def _own(self, lease: Lease) -> None:
        if lease.worker_id != self.worker_id:
            raise ConfigError(f"lease on camera {lease.camera!r} belongs to worker {lease.worker_id!r}, "
                              f"not {self.worker_id!r}")


def holders(client, cameras: Iterable[str]) -> dict[str, Holder]:
    """Who holds each of `cameras` now (cameras nobody holds are absent): one MGET. Anyone may ask; no worker
    identity is needed to read leases."""
    names = [keys.validate_camera_name(c) for c in cameras]
    if not names:
        return {}
    with redis_failures("read camera leases"):
        values = client.mget([keys.lease(c) for c in names])
    return {camera: parse_holder(value) for camera, value in zip(names, values, strict=True) if value is not None}


def parse_holder(value: bytes | str) -> Holder:
    token, _, worker_id = _text(value).partition(":")
    return Holder(worker_id, int(token))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
