"""Cameras shared by many workers: a registry in Redis, leases with fencing tokens, fair shares, failover.

Keys (keys.py) all carry the hash tag `{cameras}`, so every script here is legal on Redis Cluster.

The registry (what `enroll.py cameras add|list|remove|enable|disable|load` calls)::

    registry = CameraRegistry(client)
    registry.add("door", "rtsp://user:pw@10.0.0.5/stream", {"fps_cap": 5}, enabled=True, replace=False)
    registry.load_yaml("cameras.yaml", prune=False)  # {door: {url: ..., enabled: true, fps_cap: 5}, ...}
    registry.list() -> [Camera(name, url, enabled, settings)]; registry.get("door") -> Camera
    registry.disable("door"); registry.enable("door"); registry.remove("door")
    registry.version() -> int  # moves on every change; registry.snapshot() -> (version, cameras)

A worker (what `run.py --worker` calls; `ttl_s` 5 s: a SIGKILLed worker's cameras move within ~ttl + 1 s)::

    worker_id = default_worker_id()
    leases = LeaseManager(client, worker_id, ttl_s=5.0)
    keeper = LeaseKeeper(CameraRegistry(client), leases, Membership(client, worker_id, capacity=4, ttl_s=5.0),
                         on_start=lambda lease: open_source(lease.camera, lease.token),
                         on_stop=lambda camera: close_source(camera))
    thread = KeeperThread(keeper).start()   # tick() every min(1 s, ttl/3); or call keeper.tick() yourself
    ...
    thread.stop()                           # each on_stop, then every lease released at once

`on_stop` runs before a lease is released, so the caller stops reading a camera before anyone else may claim
it. Before writing as a camera's owner (an event, a snapshot), a writer checks `lease.valid()` (local, free;
false once the TTL may have passed without a renewal) and, where it matters, `leases.check(lease)` (one GET);
events carry `lease.token` so consumers can drop a stale owner's late writes (a lower token).

`holders(client, cameras) -> {camera: Holder(worker_id, token)}` says who reads what (anyone may ask).

`plan(cameras, workers, capacities) -> {worker: quota}` is the pure fair-share rule the keeper applies.

Errors: ConfigError for bad names, URLs, settings, files or an unknown camera; GalleryError when Redis fails.
"""

from pipeline.cameras.keeper import Changes, KeeperThread, LeaseKeeper
from pipeline.cameras.leases import Holder, Lease, LeaseManager, holders
from pipeline.cameras.plan import plan
from pipeline.cameras.registry import Camera, CameraRegistry
from pipeline.cameras.workers import Membership, WorkerInfo, default_worker_id

__all__ = ["Camera", "CameraRegistry", "Changes", "Holder", "KeeperThread", "Lease", "LeaseKeeper", "LeaseManager",
           "Membership", "WorkerInfo", "default_worker_id", "holders", "plan"]
