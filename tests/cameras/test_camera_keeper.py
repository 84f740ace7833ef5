"""LeaseKeeper in one process against a real Redis: fair shares, rebalancing with hysteresis, registry changes,
losses, clean stops; callbacks run before a release."""

from __future__ import annotations

import time

import pytest

from pipeline.cameras import CameraRegistry, LeaseKeeper, LeaseManager, Membership
from pipeline.core.errors import GalleryError

TTL = 0.6


class Recorder:
    """Callbacks that note what ran and whether Redis still had the camera leased to us when on_stop ran."""

    def __init__(self, client):
        self.client = client
        self.started: list[str] = []
        self.stopped: list[tuple[str, bool]] = []
        self.keeper: LeaseKeeper | None = None

    def on_start(self, lease):
        self.started.append(lease.camera)

    def on_stop(self, camera):
        holder = LeaseManager(self.client, "probe").holders([camera]).get(camera)
        self.stopped.append((camera, holder is not None and holder.worker_id == self.keeper.worker_id))


def make_keeper(client, worker_id, capacity=4, rebalance_after_s=0.0, recorder=None):
    keeper = LeaseKeeper(CameraRegistry(client), LeaseManager(client, worker_id, ttl_s=TTL),
                         Membership(client, worker_id, capacity, ttl_s=TTL), rebalance_after_s=rebalance_after_s,
                         on_start=recorder.on_start if recorder else None,
                         on_stop=recorder.on_stop if recorder else None)
    if recorder:
        recorder.keeper = keeper
    return keeper


def add_cameras(client, count):
    registry = CameraRegistry(client)
    for i in range(count):
        registry.add(f"cam{i}", f"rtsp://host/{i}")
    return registry


def settle(keepers, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for keeper in keepers:
            keeper.tick()
        time.sleep(0.02)


def test_one_worker_takes_up_to_its_capacity(redis_client):
    add_cameras(redis_client, 5)
    keeper = make_keeper(redis_client, "w1", capacity=3)
    changes = keeper.tick()
    assert len(changes.started) == 3 and len(keeper.held) == 3 and not changes.stopped
    assert not keeper.tick()  # nothing changes at capacity


def test_a_joining_worker_gets_its_share_and_the_first_keeps_the_rest(redis_client):
    add_cameras(redis_client, 4)
    recorder = Recorder(redis_client)
    first = make_keeper(redis_client, "w1", recorder=recorder)
    first.tick()
    kept = list(first.held)[:2]
    second = make_keeper(redis_client, "w2")
    settle([first, second], 0.4)
    assert len(first.held) == 2 and len(second.held) == 2
    assert sorted(first.held) == sorted(kept)  # the newest claims moved, the oldest stayed
    assert len(recorder.stopped) == 2 and all(still_ours for _, still_ours in recorder.stopped)
    held_once = set(first.held) | set(second.held)
    assert len(held_once) == 4


def test_hysteresis_keeps_cameras_in_place_for_a_while(redis_client):
    add_cameras(redis_client, 4)
    first = make_keeper(redis_client, "w1", rebalance_after_s=0.5)
    first.tick()
    second = make_keeper(redis_client, "w2", rebalance_after_s=0.5)
    settle([first, second], 0.3)
    assert (len(first.held), len(second.held)) == (4, 0)  # a join (or a blip) moves nothing at once
    settle([first, second], 0.6)
    assert (len(first.held), len(second.held)) == (2, 2)


def test_registry_changes_reach_the_worker(redis_client):
    registry = add_cameras(redis_client, 2)
    keeper = make_keeper(redis_client, "w1")
    keeper.tick()
    registry.disable("cam0")
    registry.remove("cam1")
    registry.add("cam9", "rtsp://host/9")
    changes = keeper.tick()
    assert sorted(changes.stopped) == ["cam0", "cam1"] and not changes.lost
    assert [lease.camera for lease in changes.started] == ["cam9"]
    assert LeaseManager(redis_client, "probe").holders(["cam0", "cam1"]) == {}


def test_a_clean_stop_releases_at_once(redis_client):
    add_cameras(redis_client, 4)
    first, second = make_keeper(redis_client, "w1"), make_keeper(redis_client, "w2")
    settle([first, second], 0.3)
    moved = set(first.held)
    assert sorted(first.stop().stopped) == sorted(moved) and not first.held
    changes = second.tick()  # no waiting for a TTL: the leases are gone and w1 left the membership
    assert {lease.camera for lease in changes.started} == moved and len(second.held) == 4


def test_a_lease_taken_away_is_reported_lost(redis_client):
    add_cameras(redis_client, 1)
    recorder = Recorder(redis_client)
    keeper = make_keeper(redis_client, "w1", recorder=recorder)
    lease = keeper.tick().started[0]
    redis_client.delete("fs:{cameras}:lease:cam0")
    thief = LeaseManager(redis_client, "w2", ttl_s=TTL).claim("cam0")
    time.sleep(TTL / 3)
    changes = keeper.tick()
    assert changes.lost == ("cam0",) and changes.stopped == ("cam0",)
    assert recorder.stopped == [("cam0", False)] and thief.token > lease.token


def test_redis_unreachable_keeps_leases_only_while_locally_valid(redis_client, monkeypatch):
    add_cameras(redis_client, 2)
    keeper = make_keeper(redis_client, "w1")
    keeper.tick()

    def down(*args, **kwargs):
        raise GalleryError("Redis failed: ConnectionError")

    for name in ("renew", "holders", "claim"):
        monkeypatch.setattr(keeper._leases, name, down)
    monkeypatch.setattr(keeper._membership, "heartbeat", down)
    time.sleep(TTL / 3)
    assert not keeper.tick().lost and len(keeper.held) == 2  # still valid: keep reading
    time.sleep(TTL)
    changes = keeper.tick()
    assert sorted(changes.lost) == ["cam0", "cam1"] and keeper.held == {}


def test_a_camera_whose_source_fails_to_start_is_released(redis_client):
    add_cameras(redis_client, 2)

    def refuse(lease):
        if lease.camera == "cam0":
            raise RuntimeError("cannot open rtsp://host/0")

    keeper = LeaseKeeper(CameraRegistry(redis_client), LeaseManager(redis_client, "w1", ttl_s=TTL),
                         Membership(redis_client, "w1", 4, ttl_s=TTL), on_start=refuse)
    changes = keeper.tick()
    assert [lease.camera for lease in changes.started] == ["cam1"]
    assert LeaseManager(redis_client, "probe").holders(["cam0"]) == {}


def test_a_dead_workers_share_is_taken_after_its_heartbeat_lapses(redis_client):
    add_cameras(redis_client, 4)
    first, second = make_keeper(redis_client, "w1"), make_keeper(redis_client, "w2")
    settle([first, second], 0.3)
    assert len(second.held) == 2
    # w1 "dies": nothing of it runs again, its leases and heartbeat lapse on their own.
    start = time.monotonic()
    while len(second.held) < 4 and time.monotonic() - start < 3 * TTL:
        second.tick()
        time.sleep(0.02)
    assert len(second.held) == 4 and time.monotonic() - start <= TTL + 0.4  # its last renewal ends it


@pytest.mark.parametrize("interval", [0.0, 1.0])
def test_the_thread_refuses_intervals_that_would_let_leases_lapse(redis_client, interval):
    from pipeline.cameras import KeeperThread
    from pipeline.core.errors import ConfigError
    with pytest.raises(ConfigError, match="keeper interval must be in"):
        KeeperThread(make_keeper(redis_client, "w1"), interval_s=interval)


def test_the_thread_ticks_and_stops_cleanly(redis_client):
    from pipeline.cameras import KeeperThread
    add_cameras(redis_client, 2)
    thread = KeeperThread(make_keeper(redis_client, "w1"), interval_s=0.05).start()
    time.sleep(TTL * 2)  # several renewals: still held
    assert len(thread.keeper.held) == 2
    assert sorted(thread.stop().stopped) == ["cam0", "cam1"]
    assert LeaseManager(redis_client, "probe").holders(["cam0", "cam1"]) == {}
