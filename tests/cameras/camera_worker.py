"""A tiny worker process for test_camera_failover.py: a LeaseKeeper ticking against the test Redis.

It records each lease's window, "<camera>:<token>" -> {worker, start, end} in the hash WINDOWS: `start` is the wall
time the claim returned, `end` the latest wall time this worker may have believed itself the owner (its lease's
local deadline, moved forward after every renewal; the stop time when it stopped the camera itself). SIGTERM: a
clean stop. Usage: FS_TEST_REDIS_URL=... python camera_worker.py WORKER_ID TTL_S CAPACITY INTERVAL_S
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import redis

from pipeline.cameras import CameraRegistry, LeaseKeeper, LeaseManager, Membership

WINDOWS = "fs-test:{cameras}:windows"


def main() -> None:
    worker_id, ttl, capacity, interval = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    client = redis.Redis.from_url(os.environ["FS_TEST_REDIS_URL"])
    starts: dict[str, float] = {}

    def write(camera: str, token: int, end: float) -> None:
        client.hset(WINDOWS, f"{camera}:{token}",
                    json.dumps({"worker": worker_id, "start": starts[f"{camera}:{token}"], "end": end}))

    def on_start(lease) -> None:
        starts[f"{lease.camera}:{lease.token}"] = time.time()
        write(lease.camera, lease.token, time.time() + lease.remaining_s())

    def on_stop(camera: str) -> None:
        lease = held.get(camera)
        if lease is not None:
            write(camera, lease.token, min(time.time(), time.time() + lease.remaining_s()))

    keeper = LeaseKeeper(CameraRegistry(client), LeaseManager(client, worker_id, ttl_s=ttl),
                         Membership(client, worker_id, capacity, ttl_s=ttl), rebalance_after_s=ttl,
                         on_start=on_start, on_stop=on_stop)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    held: dict = {}
    while not stopping:
        keeper.tick()
        held = keeper.held
        for camera, lease in held.items():  # after renewals: the new deadline is the window's new end
            write(camera, lease.token, time.time() + lease.remaining_s())
        time.sleep(interval)
    keeper.stop()


if __name__ == "__main__":
    main()
