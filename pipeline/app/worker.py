"""run.py --worker: one streaming Session over the cameras this worker holds leases for.

The cameras are the registry's (`enroll.py cameras add`, pipeline/cameras); a `LeaseKeeper` thread claims this
worker's fair share and renews it. A claimed camera is added to the running session with its stored settings; a
camera released (rebalancing, removed or disabled in the registry, a clean stop) is closed first, its tracks
ended and their events sent, and only then is the lease given up, so two workers never read one camera. Every
event carries `extra.worker` and `extra.lease` (the fencing token); once a lease may have lapsed (a stalled
worker, Redis unreachable past the TTL) its camera's events are held back, never written as the owner's.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from pipeline.app.config import AppConfig
from pipeline.app.session import RunOptions, Session
from pipeline.cameras import (
    CameraRegistry,
    KeeperThread,
    Lease,
    LeaseKeeper,
    LeaseManager,
    Membership,
    default_worker_id,
)
from pipeline.events import Event

log = logging.getLogger(__name__)


class Worker:
    """`Worker(cfg, opts).run()` streams until stopped (`stop()`, Ctrl-C in run.py); `close()` always."""

    def __init__(self, cfg: AppConfig, opts: RunOptions):
        self.worker_id = cfg.worker.id or default_worker_id()
        self.session = Session(cfg, replace(opts, sources=[], keep_open=True))
        try:
            client, ttl = self.session.client, cfg.worker.lease_ttl_s
            self.registry = CameraRegistry(client)
            self.keeper = LeaseKeeper(self.registry, LeaseManager(client, self.worker_id, ttl),
                                      Membership(client, self.worker_id, cfg.worker.capacity, ttl),
                                      on_start=self._start_camera, on_stop=self._stop_camera)
        except BaseException:
            self.session.close()
            raise
        self.session.bus.stamp = self._stamp
        self._thread = KeeperThread(self.keeper)
        self._streaming = False
        self.started = self.stopped = 0  # cameras taken up and given up, for the summary

    def run(self) -> dict:
        self._streaming = True
        self._thread.start()
        try:
            self.session.run()
        finally:
            self._streaming = False  # the runner is done: closing a camera no longer waits for its tracks
            self._thread.stop()
        return self.summary()

    def stop(self) -> None:
        self.session.runner.stop()

    def close(self) -> None:
        self.session.close()

    def summary(self) -> dict:
        return {**self.session.summary(), "worker": {
            "id": self.worker_id, "capacity": self.keeper.capacity, "cameras_started": self.started,
            "cameras_stopped": self.stopped, "events_held_back": self.session.bus.held_back}}

    # -- the keeper's callbacks (its thread) ---------------------------------------------------------------
    def _start_camera(self, lease: Lease) -> None:
        camera = self.registry.get(lease.camera)
        log.info("worker %s: camera %s (lease %d)", self.worker_id, camera.name, lease.token)
        self.session.add_camera(camera.name, camera.url, camera.settings)  # raises: the lease is given back
        self.started += 1

    def _stop_camera(self, camera: str) -> None:
        log.info("worker %s: closing camera %s", self.worker_id, camera)
        self.session.remove_camera(camera, wait_s=5.0 if self._streaming else 0.0)
        self.stopped += 1

    def _stamp(self, event: Event) -> Event | None:
        if not event.camera:  # not about a camera (unknown_merged): no owner to check
            return replace(event, extra={**event.extra, "worker": self.worker_id})
        lease = self.keeper.held.get(event.camera)
        if lease is None or not lease.valid():
            log.warning("worker %s: %s event of camera %s held back: its lease was lost", self.worker_id,
                        event.type, event.camera)
            return None
        return replace(event, extra={**event.extra, "worker": self.worker_id, "lease": lease.token})
