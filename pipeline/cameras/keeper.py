"""One worker's side of camera leasing: `LeaseKeeper.tick()` does one round of the protocol, no threads inside;
`KeeperThread` calls it on a timer.

A tick, in order:
1. heartbeat (every ttl/3), so other workers count this one in their fair shares;
2. renew held leases (every ttl/3); a lease Redis refuses, or one whose local validity ran out while Redis was
   unreachable, is *lost*: reported, never renewed again;
3. re-read the registry when its version moved; release cameras that were removed or disabled;
4. compute the fair share (`plan`) over the live workers; above it for `rebalance_after_s` in a row, release one
   camera per tick, the most recently claimed (hysteresis: a worker that joins or a heartbeat that blips does not
   make cameras flap);
5. below it, claim free enabled cameras, in an order of this worker's own (rendezvous hashing), so workers racing
   for freed cameras mostly try different ones first.

`on_stop(camera)` runs *before* a lease is released (the caller stops reading first, so two workers never read
one camera), and after a loss is noticed. `on_start(lease)` runs after a claim; if it raises, the lease is
released so another worker can try the camera. Each tick also returns its `Changes`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.cameras.leases import Lease, LeaseManager
from pipeline.cameras.plan import plan
from pipeline.cameras.registry import CameraRegistry
from pipeline.cameras.workers import Membership
from pipeline.core.errors import ConfigError, GalleryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Changes:
    """What one tick changed: `stopped` lists every camera to stop reading (released or lost); `lost` the part of
    it taken from this worker (expired, taken over, or Redis unreachable past the lease's validity)."""

    started: tuple[Lease, ...] = ()
    stopped: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.started or self.stopped)


class LeaseKeeper:
    """Holds this worker's fair share of the enabled cameras. Call `tick()` at least every ttl/3; `stop()` once."""

    def __init__(self, registry: CameraRegistry, leases: LeaseManager, membership: Membership, *,
                 rebalance_after_s: float | None = None, on_start: Callable[[Lease], object] | None = None,
                 on_stop: Callable[[str], object] | None = None):
        if leases.worker_id != membership.worker_id:
            raise ConfigError(f"lease manager ({leases.worker_id}) and membership ({membership.worker_id}) "
                              "must be the same worker")
        self.worker_id = leases.worker_id
        self.capacity = membership.capacity
        self.renew_every_s = leases.ttl_s / 3
        self.rebalance_after_s = 2 * leases.ttl_s if rebalance_after_s is None else rebalance_after_s
        self._registry, self._leases, self._membership = registry, leases, membership
        self._on_start, self._on_stop = on_start, on_stop
        self._held: dict[str, Lease] = {}  # insertion order = claim order: the newest is released first
        self._last_beat = self._last_renew = float("-inf")
        self._version: int | None = None
        self._enabled: list[str] = []
        self._over_since: float | None = None

    @property
    def held(self) -> dict[str, Lease]:
        """camera -> lease, for the cameras this worker holds now."""
        return dict(self._held)

    def tick(self) -> Changes:
        now = time.monotonic()
        started: list[Lease] = []
        stopped: list[str] = []
        lost: list[str] = []
        self._beat(now)
        self._renew(now, lost)
        stopped += lost
        try:
            enabled = self._enabled_cameras()
            quota = self._quota(enabled)
        except GalleryError as exc:
            log.warning("worker %s: %s; keeping %d lease(s) while they are valid", self.worker_id, exc,
                        len(self._held))
            return Changes((), tuple(stopped), tuple(lost))
        for camera in [c for c in self._held if c not in set(enabled)]:
            self._give_up(camera, stopped, "removed or disabled")
        self._rebalance(quota, now, stopped)
        if len(self._held) < quota:
            self._claim(enabled, quota, started, stopped)
        return Changes(tuple(started), tuple(stopped), tuple(lost))

    def stop(self) -> Changes:
        """Release every lease (each camera's on_stop first) and leave the membership: a clean stop frees the
        cameras at once instead of after a TTL."""
        stopped: list[str] = []
        for camera in list(self._held):
            self._give_up(camera, stopped, "worker stopping")
        try:
            self._membership.leave()
        except GalleryError as exc:
            log.warning("worker %s: %s (its heartbeat lapses within the TTL)", self.worker_id, exc)
        return Changes((), tuple(stopped), ())

    def _beat(self, now: float) -> None:
        if now - self._last_beat < self.renew_every_s:
            return
        try:
            self._membership.heartbeat()
            self._last_beat = now
        except GalleryError as exc:
            log.warning("worker %s: %s", self.worker_id, exc)

    def _renew(self, now: float, lost: list[str]) -> None:
        if now - self._last_renew >= self.renew_every_s:
            self._last_renew = now
            for camera, lease in list(self._held.items()):
                try:
                    renewed = self._leases.renew(lease)
                except GalleryError as exc:  # keep it while it is locally valid; Redis may come back
                    log.warning("worker %s: %s", self.worker_id, exc)
                    continue
                if renewed is None:
                    self._drop(camera, lost)
                else:
                    self._held[camera] = renewed
        for camera, lease in list(self._held.items()):
            if not lease.valid():  # stalled, or Redis unreachable for longer than the lease lasts
                log.warning("worker %s: lease on camera %s (token %d) expired locally", self.worker_id, camera,
                            lease.token)
                self._drop(camera, lost)

    def _enabled_cameras(self) -> list[str]:
        version = self._registry.version()
        if version != self._version:
            version, cameras = self._registry.snapshot()
            self._version, self._enabled = version, [c.name for c in cameras if c.enabled]
        return self._enabled

    def _quota(self, enabled: list[str]) -> int:
        capacities = {w.worker_id: w.capacity for w in self._membership.live()}
        capacities[self.worker_id] = self.capacity  # counted even before its first heartbeat is visible
        return plan(enabled, sorted(capacities), capacities)[self.worker_id]

    def _rebalance(self, quota: int, now: float, stopped: list[str]) -> None:
        if len(self._held) <= quota:
            self._over_since = None
            return
        if self._over_since is None:
            self._over_since = now
        if now - self._over_since >= self.rebalance_after_s:
            newest = list(self._held)[-1]
            self._give_up(newest, stopped, f"rebalancing: {len(self._held)} held, fair share {quota}")

    def _claim(self, enabled: list[str], quota: int, started: list[Lease], stopped: list[str]) -> None:
        try:
            taken = self._leases.holders(enabled)
        except GalleryError as exc:
            log.warning("worker %s: %s", self.worker_id, exc)
            return
        free = sorted((c for c in enabled if c not in taken and c not in self._held), key=self._preference)
        for camera in free:
            if len(self._held) >= quota:
                return
            try:
                lease = self._leases.claim(camera)
            except GalleryError as exc:
                log.warning("worker %s: %s", self.worker_id, exc)
                return
            if lease is None:  # another worker got there first
                continue
            self._held[camera] = lease
            if self._started(lease):
                started.append(lease)
            else:
                self._give_up(camera, stopped, "on_start failed", notify=False)

    def _preference(self, camera: str) -> bytes:
        return hashlib.blake2b(f"{self.worker_id}/{camera}".encode(), digest_size=8).digest()

    def _started(self, lease: Lease) -> bool:
        if self._on_start is None:
            return True
        try:
            self._on_start(lease)
            return True
        except Exception:  # the caller's source failed to open: let another worker try the camera
            log.exception("worker %s: on_start failed for camera %s; releasing it", self.worker_id, lease.camera)
            return False

    def _give_up(self, camera: str, stopped: list[str], why: str, notify: bool = True) -> None:
        """Stop (the caller first, while the lease is still `held`: what it writes on closing is the owner's),
        then release."""
        lease = self._held[camera]
        log.info("worker %s releasing camera %s: %s", self.worker_id, camera, why)
        if notify:
            self._notify_stop(camera)
            stopped.append(camera)
        del self._held[camera]
        try:
            self._leases.release(lease)
        except GalleryError as exc:
            log.warning("worker %s: %s (the lease lapses within the TTL)", self.worker_id, exc)

    def _drop(self, camera: str, lost: list[str]) -> None:
        del self._held[camera]
        lost.append(camera)
        self._notify_stop(camera)

    def _notify_stop(self, camera: str) -> None:
        if self._on_stop is None:
            return
        try:
            self._on_stop(camera)
        except Exception:  # one caller bug must not keep the other cameras' leases from being managed
            log.exception("worker %s: on_stop failed for camera %s", self.worker_id, camera)


class KeeperThread:
    """Runs `keeper.tick()` every `interval_s` (default: min(1 s, ttl/3)) on a daemon thread until `stop()`."""

    def __init__(self, keeper: LeaseKeeper, interval_s: float | None = None):
        self.keeper = keeper
        self.interval_s = min(1.0, keeper.renew_every_s) if interval_s is None else interval_s
        if not 0 < self.interval_s <= keeper.renew_every_s:
            raise ConfigError(f"keeper interval must be in (0, ttl/3 = {keeper.renew_every_s:.3f}] s, "
                              f"got {interval_s!r}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"leases-{keeper.worker_id}", daemon=True)

    def start(self) -> KeeperThread:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> Changes:
        """Stop ticking, then release every lease at once."""
        self._stop.set()
        self._thread.join(timeout_s)
        return self.keeper.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.keeper.tick()
            except Exception:  # a bug in one tick must not end leasing: the leases would lapse silently
                log.exception("worker %s: lease tick failed", self.keeper.worker_id)
            self._stop.wait(self.interval_s)
