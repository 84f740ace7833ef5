"""What workers publish for the Live page, read from Redis: `fs:{g}:camera:<camera>` (JSON health: fps, dropped,
state, time) and `fs:{g}:live:<camera>` (the latest annotated frame, a downscaled JPEG), both with a TTL, and
only while a worker runs with `console.snapshots: true`. Nothing is invented when they are absent."""

from __future__ import annotations

import json

NO_LIVE = "no live frame (workers publish with console.snapshots: true)"


def cameras(client, base: str) -> list[dict]:
    names = set()
    for pattern in (f"{base}:camera:*", f"{base}:live:*"):
        prefix = pattern[:-1]
        names |= {_s(k)[len(prefix):] for k in client.scan_iter(match=_glob_escape(prefix) + "*", count=500)}
    out = []
    for camera in sorted(names):
        raw = client.get(f"{base}:camera:{camera}")
        try:
            health = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            health = None
        out.append({"camera": camera, "live": bool(client.exists(f"{base}:live:{camera}")),
                    "health": health if isinstance(health, dict) else None})
    return out


def snapshot(client, base: str, camera: str) -> bytes | None:
    return client.get(f"{base}:live:{camera}")


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
