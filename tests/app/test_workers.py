"""Several `run.py --worker` processes on one Redis, cameras served over live MJPEG streams (bench.live_cameras):
the cameras are shared out, a worker killed with SIGKILL loses its cameras to the others within the lease TTL,
no camera is read by two workers at once (checked from the fencing tokens in the events), the survivors stop
cleanly on SIGTERM and give their leases back at once, and every track they started ended."""

from __future__ import annotations

import time

import pytest

from bench.workers import CLIP, Site, double_reads, unended_tracks

TTL_S = 2.0


@pytest.mark.slow
def test_three_workers_six_cameras_one_killed(shared_data):
    assert CLIP.is_file()
    with Site(cameras=6, ttl_s=TTL_S, capacity=3, fps=6.0, width=480) as site:
        for worker in ("w0", "w1", "w2"):
            site.start(worker)
        site.wait_held({"w0", "w1", "w2"}, timeout=180)
        site.wait_balanced(timeout=60)  # rebalancing to fair shares (hysteresis: 2 x TTL)
        assert site.shares() == {"w0": 2, "w1": 2, "w2": 2}
        victim = "w1"
        moment = site.kill(victim)
        survivors = {"w0", "w1", "w2"} - {victim}
        site.wait_held(survivors, timeout=TTL_S + 8)
        takeover = time.monotonic() - moment
        assert takeover <= TTL_S + 8, f"cameras taken over {takeover:.1f} s after the kill"
        assert sorted(sum(h.worker_id == w for h in site.holders().values()) for w in survivors) == [3, 3]
        time.sleep(1.5)  # the new owners' first events
        clean = {(c, h.token) for c, h in site.holders().items()}
        stopped = time.monotonic()
        assert [site.stop(w) for w in sorted(survivors)] == [0, 0]
        assert site.holders() == {} and time.monotonic() - stopped < 15  # released at once, not after a TTL
        events = site.events()
    assert double_reads(events) == 0
    owners = {(e["camera"], e["extra"]["lease"]): e["extra"]["worker"] for e in events if e["camera"]}
    assert {w for w in owners.values()} >= survivors  # the survivors wrote, each under its own leases
    assert {c for c, _ in clean} == {f"cam{k}" for k in range(6)}
    assert unended_tracks(events, clean) == 0  # every track of a cleanly stopped lease ended


def test_fencing_check_catches_a_stale_owner():
    events = [{"camera": "cam0", "type": "track_started", "track": 1, "extra": {"lease": 3}},
              {"camera": "cam0", "type": "track_started", "track": 1, "extra": {"lease": 4}},
              {"camera": "cam0", "type": "track_ended", "track": 1, "extra": {"lease": 3}}]
    assert double_reads(events) == 1
    assert unended_tracks(events, {("cam0", 4)}) == 1 and unended_tracks(events, {("cam0", 3)}) == 0
