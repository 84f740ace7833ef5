"""Where cameras, leases and workers live in Redis: every key carries the hash tag `{cameras}`.

One hash tag puts the whole registry, every lease and every worker heartbeat in one Redis Cluster slot, so the
Lua scripts that touch several of them (a definition and the version counter; a lease and its fencing counter)
stay legal on a cluster.

    fs:{cameras}:defs            hash    name -> JSON {"url": ..., "settings": {...}}, stored verbatim
    fs:{cameras}:disabled        set     names of disabled cameras (a camera is enabled unless listed)
    fs:{cameras}:version         string  INCR on every change of the registry: a worker re-reads only when it moved
    fs:{cameras}:lease:<camera>  string  "<token>:<worker id>", PX ttl: the camera's current owner
    fs:{cameras}:token:<camera>  string  the camera's fencing counter, INCR on every claim; never deleted, so
                                 tokens keep rising across owners and across remove/re-add of the camera
    fs:{cameras}:worker:<id>     string  a live worker's JSON {capacity, host, pid, since}, PX ttl
    fs:{cameras}:workers         zset    worker id -> expiry (ms, Redis server time), for listing without SCAN
"""

from __future__ import annotations

import re

from pipeline.core.errors import ConfigError

BASE = "fs:{cameras}"
# The house rule for a camera in a key (pipeline/gallery/keys.py CAMERA_NAME; this package may not import the
# gallery, and tests/cameras checks that the two agree): no braces (hash tag), no ':' (key separator).
CAMERA_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
WORKER_ID = CAMERA_NAME  # host names and pids fit; ':' would break the "<token>:<worker>" lease value

DEFS = f"{BASE}:defs"
DISABLED = f"{BASE}:disabled"
VERSION = f"{BASE}:version"
WORKERS = f"{BASE}:workers"


def validate_camera_name(name: object) -> str:
    """`name` unchanged if it is a usable camera name, else ConfigError saying why."""
    if not isinstance(name, str):
        raise ConfigError(f"camera name must be a string, got {type(name).__name__}: {name!r}"[:300])
    if not CAMERA_NAME.fullmatch(name):
        shown = name if len(name) <= 60 else f"{name[:60]}... ({len(name)} characters)"
        raise ConfigError(f"invalid camera name {shown!r}: use 1-128 letters, digits, '_', '.' or '-'")
    return name


def validate_worker_id(worker_id: object) -> str:
    """`worker_id` unchanged if usable in a key and a lease value, else ConfigError."""
    if not isinstance(worker_id, str) or not WORKER_ID.fullmatch(worker_id):
        raise ConfigError(f"invalid worker id {worker_id!r}: use 1-128 letters, digits, '_', '.' or '-'"[:300])
    return worker_id


def lease(camera: str) -> str:
    return f"{BASE}:lease:{camera}"


def token(camera: str) -> str:
    return f"{BASE}:token:{camera}"


def worker(worker_id: str) -> str:
    return f"{BASE}:worker:{worker_id}"
