"""The churn process: enrols the Hamilton pair, then adds and removes LFW people while run.py streams.

`churn` runs in its own (spawned) interpreter, so it must stay importable as `bench.soak.churn.churn`;
`wait_event` and `finish_churn` are the driver's side of it.
"""

from __future__ import annotations

import os
import queue
import time
from collections import Counter, deque
from pathlib import Path

from bench.soak.inputs import GALLERY, LFW, PEOPLE


def lfw_pool(count: int, photos: int = 2) -> list[tuple[str, list[Path]]]:
    """The first `count` LFW people (by folder name) with at least `photos` images: (name, first images)."""
    pool = []
    for folder in sorted(LFW.iterdir()):
        images = sorted(folder.glob("*.jpg"))[:photos]
        if len(images) == photos:
            pool.append((folder.name.replace("_", " "), images))
            if len(pool) == count:
                break
    return pool


def enrol(store, enroller, name: str, files: list[Path]) -> bool:
    """One identity from `files` in one store write; False if the quality gates accepted none of them."""
    from pipeline.recognise.enrollment import EnrollmentReport

    report = EnrollmentReport()
    for path in files:
        enroller.add_file(path, report)
    if not report.template_ids:
        return False
    store.add(name, report.matrix(), report.template_ids, enroller.embedder.fingerprint)
    return True


def churn(settings: dict, ready, stop, results) -> None:
    """The churn process: the Hamilton pair, then add/remove LFW people until `stop` is set."""
    from pipeline.app.config import load_app_config
    from pipeline.app.services import make_detector, make_embedder, quality_gates, set_threads
    from pipeline.core.logs import configure_logging
    from pipeline.gallery import GalleryStore
    from pipeline.recognise.enrollment import Enroller
    from pipeline.redis.connect import connect

    configure_logging("WARNING")
    cfg = load_app_config(settings["config"], settings["overrides"])
    set_threads()
    store = GalleryStore(connect(cfg.redis.url, cfg.redis.state_dir), GALLERY)
    enroller = Enroller(make_detector(cfg), make_embedder(cfg, Path(settings["model"])),
                        quality_gates(cfg), largest=True)
    store.clear()
    for name, files in PEOPLE.items():
        if not enrol(store, enroller, name, files):
            raise RuntimeError(f"reference photo of {name} rejected: the soak needs both people enrolled")
    ready.set()
    counts, failures, enrolled = Counter(), [], deque()
    pool, turn = lfw_pool(settings["pool"]), 0
    while not stop.wait(settings["every_s"]) and os.getppid() == settings["parent"]:  # never outlive the driver
        name, files = pool[turn % len(pool)]
        turn += 1
        try:
            if not enrol(store, enroller, name, files):
                counts["skipped"] += 1
                continue
            counts["added"] += 1
            enrolled.append(name)
            if len(enrolled) > settings["keep"]:
                store.remove(enrolled.popleft())
                counts["removed"] += 1
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported, none ends the soak
            counts["failed"] += 1
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    results.put({**counts, "failures": failures[:10], "enrolled_at_end": len(store.identities())})


def wait_event(event, process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.is_alive():
        if event.wait(0.5):
            return True
    return event.is_set()


def finish_churn(churner, stop, results, timeout: float) -> dict:
    """Stop the churn loop; its counts (or a failure record when it died without reporting)."""
    stop.set()
    try:
        counts = results.get(timeout=timeout)
    except queue.Empty:
        counts = {"failed": 1, "failures": [f"churn process reported nothing (exit code {churner.exitcode})"]}
    churner.join(timeout)
    if churner.exitcode not in (0, None):
        counts["failed"] = counts.get("failed", 0) + 1
        counts.setdefault("failures", []).append(f"churn process exit code {churner.exitcode}")
    return counts
