"""POST /api/v1/recognize as a client sees it: latency and throughput of the console's REST API on one-face photos.

    python -m bench.recognize --json              # one JSON object on stdout
    python -m bench.recognize --requests 100 --concurrency 1,2,4 --no-peer

A real `serve.py` (uvicorn, its own process) on a free loopback port over a gallery of held-out LFW people (one
photo each, enrolled with enroll.py's path); the requests are their *other* photos (one face each, 250x250 JPEG),
sent over HTTP with an admin key: `latency_ms` p50/p99 one request at a time, `requests_per_s` at each
concurrency, and the share answered with the right name. Anchors in the same run: face_recognition's own CLI
(`face_recognition --cpus 1 KNOWN UNKNOWN`, its venv) on the same photos, per photo with its start-up
subtracted, and CompreFace's published figure (a maintainer's: "less than 300 ms for a request", 4 CPU cores,
16 GB, 50k images; exadel-inc/CompreFace#980).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw"
GALLERY = "bench-recognize"
COMPREFACE = {"ms_per_request": 300, "hardware": "4 CPU cores, 16 GB, 50k images", "bound": "less than",
              "source": "https://github.com/exadel-inc/CompreFace/issues/980"}


def people(count: int) -> list[tuple[str, Path, Path]]:
    """(name, photo to enrol, photo to recognise) of the first held-out LFW people with 2+ photos."""
    from bench.openset import HELDOUT_MODEL, build_protocol
    from pipeline.core.model_card import load_card

    folds = list(load_card(HELDOUT_MODEL).training["data"]["holdout_folds"])
    protocol = build_protocol(LFW / "images", LFW / "pairs_shared_folds.txt", folds)
    chosen, seen = [], set()
    for name, enrolled in zip(protocol.names, protocol.enrolled):
        probe = next(p for p, i in zip(protocol.probes, protocol.probe_identity) if protocol.names[i] == name)
        if name not in seen:
            seen.add(name)
            chosen.append((name, enrolled, probe))
        if len(chosen) == count:
            break
    return chosen


def enrol(cfg, cast) -> None:
    from pipeline.app.services import make_detector, make_embedder, quality_gates, redis_client
    from pipeline.gallery import GalleryStore
    from pipeline.recognise.enrollment import Enroller, EnrollmentReport

    store = GalleryStore(redis_client(cfg), GALLERY)
    store.clear()
    embedder = make_embedder(cfg, REPO / "models" / "facestream-default.json")
    enroller = Enroller(make_detector(cfg), embedder, quality_gates(cfg), largest=True)
    for name, photo, _ in cast:
        report = EnrollmentReport()
        enroller.add_file(photo, report)
        if report.template_ids:
            store.add(name, report.matrix(), report.template_ids, embedder.fingerprint, crops=report.crops())


def serve(port: int) -> subprocess.Popen:
    # The per-key rate limit (console.recognize_per_minute, 120) is lifted: this measures the server, not the guard.
    proc = subprocess.Popen([sys.executable, str(REPO / "serve.py"), "--port", str(port), "--gallery", GALLERY,
                             "--set", "console.recognize_per_minute=1000000", "--log-level", "WARNING"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve.py exited: {proc.stderr.read().decode()[-500:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("serve.py did not answer /api/v1/health within 120 s")


def measure(port: int, key: str, cast, requests: int, concurrency: list[int]) -> dict:
    import httpx

    url = f"http://127.0.0.1:{port}/api/v1/recognize"
    photos = [(name, probe.read_bytes()) for name, _, probe in cast]
    headers = {"Authorization": f"Bearer {key}"}

    def one(client, k: int) -> tuple[float, bool]:
        name, data = photos[k % len(photos)]
        started = time.perf_counter()
        reply = client.post(url, files={"image": ("probe.jpg", data, "image/jpeg")}, headers=headers, timeout=60)
        elapsed = (time.perf_counter() - started) * 1000
        reply.raise_for_status()
        faces = reply.json()["result"]
        return elapsed, any(f.get("identity") == name for f in faces)

    with httpx.Client() as client:
        for k in range(3):  # warm-up: model pages, first-call allocations
            one(client, k)
        timed = [one(client, k) for k in range(requests)]
    latencies = np.array([t for t, _ in timed])
    result = {"requests": requests, "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 1),
                                                   "p99": round(float(np.percentile(latencies, 99)), 1),
                                                   "mean": round(float(latencies.mean()), 1)},
              "named_correctly": round(sum(ok for _, ok in timed) / len(timed), 3), "requests_per_s": {}}
    for workers in concurrency:
        with httpx.Client(limits=httpx.Limits(max_connections=workers)) as client, ThreadPoolExecutor(workers) as pool:
            started = time.perf_counter()
            list(pool.map(lambda k: one(client, k), range(requests)))
            result["requests_per_s"][str(workers)] = round(requests / (time.perf_counter() - started), 2)
    return result


def face_recognition_cli(cast) -> dict:
    """face_recognition's CLI on the same photos: seconds per photo, its start-up (a one-photo run) subtracted."""
    from bench.pipeline import ensure_peer_venv

    python = ensure_peer_venv()
    cli = python.parent / "face_recognition"
    if subprocess.run([str(python), "-c", "import click"], capture_output=True).returncode != 0:  # a venv from before
        subprocess.run([str(python), "-m", "pip", "install", "-q", "click==8.5.1"], check=True)
    with tempfile.TemporaryDirectory() as folder:
        known, unknown, single = (Path(folder) / d for d in ("known", "unknown", "single"))
        for d in (known, unknown, single):
            d.mkdir()
        for k, (name, photo, probe) in enumerate(cast):
            shutil.copy(photo, known / f"{name}.jpg")
            shutil.copy(probe, unknown / f"{k:04d}.jpg")
        shutil.copy(cast[0][2], single / "0000.jpg")
        timings = {}
        for label, target in (("all", unknown), ("one", single)):
            started = time.perf_counter()
            done = subprocess.run([str(cli), "--cpus", "1", str(known), str(target)], capture_output=True, text=True)
            timings[label] = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(f"face_recognition CLI failed: {done.stderr[-300:]}")
            if label == "all":  # one "path,name" line per face found
                names = dict(line.split(",", 1) for line in done.stdout.splitlines() if "," in line)
        per = (timings["all"] - timings["one"]) / max(len(cast) - 1, 1)
        right = sum(names.get(str(unknown / f"{k:04d}.jpg")) == name for k, (name, _, _) in enumerate(cast))
    return {"ms_per_photo": round(per * 1000, 1), "startup_s": round(timings["one"], 1),
            "named_correctly": round(right / len(cast), 3), "photos": len(cast)}


def run(args) -> dict:
    from bench.machine import describe_machine
    from pipeline.app.config import load_app_config
    from pipeline.app.console import api_keys

    cfg = load_app_config(None, [])
    cast = people(args.people)
    enrol(cfg, cast)
    key = api_keys(cfg).create("admin")[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = serve(port)
    try:
        result = measure(port, key, cast, args.requests, [int(c) for c in args.concurrency.split(",")])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    result.update(people=len(cast), photo="LFW 250x250 JPEG, one face", compreface=COMPREFACE,
                  machine=describe_machine())
    if not args.no_peer:
        result["face_recognition_cli"] = face_recognition_cli(cast)
    return result


def print_table(result: dict) -> None:
    lat = result["latency_ms"]
    print(f"POST /api/v1/recognize: p50 {lat['p50']} ms, p99 {lat['p99']} ms; "
          + ", ".join(f"{v} req/s at {k}" for k, v in result["requests_per_s"].items())
          + f"; named correctly {result['named_correctly']:.1%}")
    if "face_recognition_cli" in result:
        peer = result["face_recognition_cli"]
        print(f"face_recognition CLI: {peer['ms_per_photo']} ms per photo (+{peer['startup_s']} s start-up), "
              f"named correctly {peer['named_correctly']:.1%}")
    print(f"CompreFace (published): < {COMPREFACE['ms_per_request']} ms per request on {COMPREFACE['hardware']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--people", type=int, default=50, help="enrolled people (their other photos are sent)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--no-peer", action="store_true", help="skip face_recognition's CLI")
    args = parser.parse_args(argv)

    from bench.cli import finish
    from pipeline.core.logs import configure_logging

    configure_logging("WARNING")
    return finish(lambda: run(args), args.json, print_table)


if __name__ == "__main__":
    sys.exit(main())
