"""Cameras shared by several workers (issue 18): failover after kill -9, clean stops, fencing, event delivery.

    python -m bench.workers --json                 # 1, 2, 3 workers x 6 live cameras, 3 kills each (~4 min)
    python -m bench.workers --workers 2 --kills 1  # one configuration, quickly

A `Site` is one scratch embedded Redis, one MJPEG server on 127.0.0.1 with `cameras` live cameras (the Hamilton
clip, `--fps` parts per second), every camera registered (`CameraRegistry`), and `run.py --worker` processes
(each its own interpreter, as on separate machines) with a short lease TTL. Per configuration:

- cameras_served: cameras held by a live worker once the workers settled (all of them, capacity allowing);
  rebalance_s: from then until every worker holds its fair share (a hysteresis of 2 x TTL before moving one);
- failover: with >= 2 workers, a worker is SIGKILLed (`--kills` times, started again in between): seconds from
  the kill until every camera is held again by the survivors (p50 / max);
- clean stop: SIGTERM to every worker; seconds until no lease is left (a clean stop releases at once);
- double_reads: events of a camera whose fencing token is lower than one already seen for that camera, in
  stream order (a stale owner writing after a newer one took over): must be 0;
- delivery lag: a consumer group reading the event stream (`StreamConsumer`, as the MQTT bridge does): capture
  time of an event's frame -> the consumer's handler, p50 / p99 (it includes the pipeline's own latency);
- events_complete: every track started under a lease that ended cleanly also ended (track_ended).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from bench.cli import finish
from bench.live_cameras import Camera, MjpegServer, clip_jpegs
from bench.machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "data" / "ageitgey_face_recognition_examples" / "video" / "short_hamilton_clip.mp4"
GALLERY = "bench-workers"


class Site:
    """Redis + live cameras + registered cameras + worker processes; a context manager that cleans up."""

    def __init__(self, cameras: int, ttl_s: float = 2.0, capacity: int = 6, fps: float = 10.0,
                 width: int = 480, extra: list[str] | None = None):
        from pipeline.redis.server import EmbeddedRedis

        self.ttl_s, self.capacity, self.extra = ttl_s, capacity, list(extra or [])
        self.folder = Path(tempfile.mkdtemp(prefix="facestream-workers-"))
        self.redis = EmbeddedRedis(self.folder / "redis").start()
        self.client = self.redis.client()
        self.server = MjpegServer(clip_jpegs(CLIP, 100, width), {f"cam{k}": Camera() for k in range(cameras)}, fps)
        self.server.__enter__()
        from pipeline.cameras import CameraRegistry

        self.cameras = sorted(self.server.cameras)
        for name in self.cameras:
            CameraRegistry(self.client).add(name, self.server.url(name))
        self.workers: dict[str, subprocess.Popen] = {}

    # -- workers ---------------------------------------------------------------------------------------------
    def start(self, worker: str) -> None:
        log = open(self.folder / f"{worker}.log", "ab")
        self.workers[worker] = subprocess.Popen(
            [sys.executable, str(REPO / "run.py"), "--worker", "--gallery", GALLERY, "--redis-url", self.redis.url,
             "--log-level", "INFO", "--set", f"worker.id={worker}", "--set", f"worker.lease_ttl_s={self.ttl_s}",
             "--set", f"worker.capacity={self.capacity}", "--set", "sources.backoff_initial=0.2",
             "--set", f"redis.state_dir={self.folder / 'state'}", *sum((["--set", s] for s in self.extra), [])],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})

    def kill(self, worker: str) -> float:
        """SIGKILL: the worker cannot release anything. Returns the moment (monotonic)."""
        proc = self.workers.pop(worker)
        proc.send_signal(signal.SIGKILL)
        moment = time.monotonic()
        proc.wait()
        return moment

    def stop(self, worker: str, timeout: float = 30.0) -> int:
        """SIGTERM: a clean stop; returns the exit status."""
        proc = self.workers.pop(worker)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def log(self, worker: str) -> str:
        return (self.folder / f"{worker}.log").read_text(errors="replace")

    # -- what Redis says -------------------------------------------------------------------------------------
    def holders(self) -> dict:
        from pipeline.cameras import holders

        return holders(self.client, self.cameras)

    def wait_held(self, by: set[str], count: int | None = None, timeout: float = 120.0) -> float:
        """Seconds until `count` cameras (default all) are held, each by one of `by`; TimeoutError otherwise."""
        count = len(self.cameras) if count is None else count
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if sum(h.worker_id in by for h in self.holders().values()) >= count:
                return time.monotonic() - started
            for worker, proc in self.workers.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {worker} exited {proc.returncode}:\n{self.log(worker)[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{count} cameras not held by {sorted(by)} within {timeout} s: {self.holders()}")

    def shares(self) -> dict[str, int]:
        """Cameras held per running worker."""
        held = [h.worker_id for h in self.holders().values()]
        return {worker: held.count(worker) for worker in self.workers}

    def wait_balanced(self, timeout: float = 120.0) -> float:
        """Seconds until every camera is held and the running workers hold their fair shares (`plan`)."""
        from pipeline.cameras import plan

        started = time.monotonic()
        while time.monotonic() - started < timeout:
            quotas = plan(self.cameras, sorted(self.workers), {w: self.capacity for w in self.workers})
            if self.shares() == quotas and sum(quotas.values()) == len(self.holders()):
                return time.monotonic() - started
            time.sleep(0.1)
        raise TimeoutError(f"shares {self.shares()} not balanced within {timeout} s")

    def events(self) -> list[dict]:
        from pipeline.events import events_key

        return [json.loads(fields[b"data"]) for _, fields in self.client.xrange(events_key(GALLERY))]

    def close(self) -> None:
        for worker in list(self.workers):
            self.kill(worker)
        self.server.__exit__()
        self.client.close()
        self.redis.stop()

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LagProbe:
    """A consumer group on the event stream (as the MQTT bridge reads it): capture -> handler seconds."""

    def __init__(self, client):
        from pipeline.events import StreamConsumer, events_key

        self.lags: list[float] = []
        self.consumer = StreamConsumer(client, events_key(GALLERY), "bench-lag", "probe", start_id="0")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.consumer.run, args=(self._handle, self._stop, 200), daemon=True)

    def _handle(self, event) -> None:
        if event.camera:
            self.lags.append(time.time() - event.time)

    def __enter__(self) -> LagProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def double_reads(events: list[dict]) -> int:
    """Events of a camera with a lower fencing token than one already seen for it, in stream order."""
    highest: dict[str, int] = {}
    stale = 0
    for e in events:
        token = e.get("extra", {}).get("lease")
        if not e["camera"] or token is None:
            continue
        stale += token < highest.get(e["camera"], token)
        highest[e["camera"]] = max(token, highest.get(e["camera"], token))
    return stale


def unended_tracks(events: list[dict], leases: set[tuple[str, int]]) -> int:
    """Tracks started under one of `leases` (camera, token) that never ended."""
    open_tracks: dict[tuple, int] = defaultdict(int)
    for e in events:
        key = (e["camera"], e.get("extra", {}).get("lease"))
        if key in leases and e["type"] in ("track_started", "track_ended"):
            open_tracks[(*key, e["track"])] += 1 if e["type"] == "track_started" else -1
    return sum(1 for count in open_tracks.values() if count > 0)


def measure_configuration(workers: int, cameras: int, kills: int, ttl_s: float, fps: float,
                          run_s: float = 30.0) -> dict:
    names = [f"w{k}" for k in range(workers)]
    with Site(cameras, ttl_s, capacity=cameras, fps=fps) as site, LagProbe(site.client) as probe:
        begun = time.monotonic()
        for name in names:
            site.start(name)
        settle_s = site.wait_held(set(names))
        balance_s = site.wait_balanced(timeout=20 * ttl_s + 60)  # rebalancing has a hysteresis of 2 x TTL
        served = sum(h.worker_id in site.workers for h in site.holders().values())
        failovers = []
        for k in range(kills if workers > 1 else 0):
            victim = names[k % workers]  # balanced: every worker holds cameras
            survivors = set(site.workers) - {victim}
            moment = site.kill(victim)
            site.wait_held(survivors, timeout=10 * ttl_s + 30)
            failovers.append(time.monotonic() - moment)
            site.start(victim)
            site.wait_balanced(timeout=20 * ttl_s + 60)
        time.sleep(max(0.0, run_s - (time.monotonic() - begun)))  # events to deliver, kills or not
        clean = {(c, h.token) for c, h in site.holders().items()}
        stopped = time.monotonic()
        statuses = [site.stop(name) for name in list(site.workers)]
        release_s = time.monotonic() - stopped
        left = len(site.holders())
        time.sleep(1.0)  # the probe drains the last events
        events = site.events()
    return {"workers": workers, "cameras": cameras, "cameras_served": served, "settle_s": round(settle_s, 2),
            "rebalance_s": round(balance_s, 2),
            "failover_s": [round(f, 2) for f in failovers],
            "failover_s_p50": _pct(failovers, 50), "failover_s_max": round(max(failovers), 2) if failovers else None,
            "clean_stop_s": round(release_s, 2), "leases_left_after_stop": left, "exit_statuses": statuses,
            "double_reads": double_reads(events), "events": len(events),
            "events_complete": unended_tracks(events, clean) == 0,
            "delivery_lag_s_p50": _pct(probe.lags, 50), "delivery_lag_s_p99": _pct(probe.lags, 99)}


def _pct(values: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(values, q)), 3) if values else None


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--workers", default="1,2,3", help="worker counts, comma-separated")
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per configuration (>= 2 workers)")
    parser.add_argument("--ttl", type=float, default=5.0, help="lease TTL, s (the default worker.lease_ttl_s)")
    parser.add_argument("--fps", type=float, default=10.0, help="each camera's frame rate")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict:
    from pipeline.core.errors import FacestreamError

    if not CLIP.is_file():
        raise FacestreamError(f"benchmark clip not found: {CLIP} (../shared/data sits beside the checkout)")
    rows = [measure_configuration(int(n), args.cameras, args.kills, args.ttl, args.fps)
            for n in args.workers.split(",")]
    failovers = [f for r in rows for f in r["failover_s"]]
    return {"configurations": rows, "cameras": args.cameras,
            "cameras_served": min(r["cameras_served"] for r in rows),
            "failover_s_p50": _pct(failovers, 50), "failover_s_max": max(failovers) if failovers else None,
            "double_reads": sum(r["double_reads"] for r in rows), "lease_ttl_s": args.ttl, "fps": args.fps,
            "machine": describe_machine()}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return finish(lambda: measure(args), args.json, lambda r: print(json.dumps(r, indent=1)))


if __name__ == "__main__":
    sys.exit(main())
