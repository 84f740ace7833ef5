"""The soak's result: events and errors checked after the run, RSS trends, the machine, one JSON-ready dict."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter
from pathlib import Path

from bench.machine import describe_machine
from bench.soak.inputs import GALLERY, REPO, VIDEOS
from bench.soak.memory import FLAT_CRITERION, is_flat, trend, warmup

ERROR_LINE = re.compile(r"^\S+ (ERROR|CRITICAL)\b|^Traceback ")


def stream_event_ids(client, key: str) -> list[str]:
    ids, start = [], "-"
    while True:
        entries = client.xrange(key, min=start, max="+", count=1000)
        ids += [fields[b"event_id"].decode() for _, fields in entries]
        if len(entries) < 1000:
            return ids
        start = "(" + entries[-1][0].decode()


def error_lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if ERROR_LINE.search(line)]


def frames_per_loop() -> dict[str, int]:
    import cv2

    counts = {}
    for camera, path in VIDEOS.items():
        capture = cv2.VideoCapture(str(path))
        counts[camera] = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
    return counts


def machine_info() -> dict:
    return {**describe_machine(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "malloc_env": {v: os.environ[v] for v in ("MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_") if v in os.environ}}


def redis_memory(server) -> float:
    client = server.client()
    try:
        return round(int(client.info("memory")["used_memory"]) / 2**20, 2)
    finally:
        client.close()


def check_events(tmp: Path, server) -> dict:
    """Events by type; lost = ids in the JSONL file or the Redis Stream but not in both."""
    from pipeline.events import events_key

    path = tmp / "events.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    client = server.client()
    try:
        stream = stream_event_ids(client, events_key(GALLERY))
    finally:
        client.close()
    jsonl = [e["event_id"] for e in events]
    return {"events": dict(Counter(e["type"] for e in events)), "events_jsonl": len(jsonl),
            "events_stream": len(stream), "events_lost": len(set(jsonl) ^ set(stream))}


def check_errors(run: dict, summary: dict, lines: list[str], lost: int) -> dict:
    return {"run_py_exit": 0 if run["exit"] == 0 else 1, "run_py_not_streaming": 0 if run["streaming"] else 1,
            "run_py_error_lines": len(lines),
            "source_errors": sum(s.get("errors", 0) for s in summary.get("sources", {}).values()),
            "churn_failures": run["churn"].get("failed", 0), "events_lost": lost}


def loops(summary: dict) -> dict:
    per_loop = frames_per_loop()
    return {camera: {"path": str(VIDEOS[camera].relative_to(REPO.parent)), "frames_per_loop": per_loop[camera],
                     "frames_read": s["frames_read"], "loops": round(s["frames_read"] / per_loop[camera], 2),
                     "frames_dropped": s["frames_dropped"], "state": s["state"]}
            for camera, s in summary.get("sources", {}).items()}


def report(args: argparse.Namespace, tmp: Path, server, run: dict) -> dict:
    path = tmp / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    events = check_events(tmp, server)
    warmup_s, why = warmup(run["samples"], args.minutes, args.warmup_min)
    rss = {key: trend(run["samples"], key, warmup_s) for key in ("run_py", "redis", "churn")}
    flat = is_flat(rss["run_py"])
    lines = error_lines(tmp / "run.log")
    errors = check_errors(run, summary, lines, events["events_lost"])
    frames = summary.get("frames", 0)
    return {
        "minutes": args.minutes, "frames": frames, "fps": summary.get("fps", 0.0),
        "streaming_wall_s": summary.get("wall_s"),
        "cpu_ms_per_frame": round(1000 * run["cpu_s"] / frames, 1) if frames else None,
        **events, "identities_seen": summary.get("identities_seen", {}),
        "rss": rss, "warmup_s": round(warmup_s, 1), "warmup_ends": why, "flat": flat,
        "flat_criterion": FLAT_CRITERION,
        "errors": sum(errors.values()), "error_detail": errors, "error_lines": lines[:20],
        "ok": flat and sum(errors.values()) == 0,
        "churn": {"every_s": args.churn_every, "keep": args.keep, **run["churn"]},
        "redis_used_memory_mb": run["redis_memory"], "sources": loops(summary),
        "latency_ms": summary.get("latency_ms"),
        "stages_ms_per_item": {k: v["ms_per_item"] for k, v in summary.get("stages", {}).items()},
        "run_py_exit": run["exit"],
        "settings": {"config": str(args.config), "set": args.set, "sample_s": run["sample_s"]},
        "machine": machine_info(),
        "samples": [[s["t_s"], *(None if s[k] is None else round(s[k], 1) for k in ("run_py", "redis", "churn"))]
                    for s in run["samples"]],
    }
