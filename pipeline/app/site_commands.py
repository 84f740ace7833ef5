"""enroll.py's commands for the site beyond one gallery's people: the cameras workers lease (`cameras`) and the
consumer groups of the event stream (`events`). Each is `add_parser(commands, json_too)` + `run(cfg, args, out)`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from pipeline.app.cli_output import Output, plural
from pipeline.app.config import AppConfig, CameraConfig
from pipeline.core.errors import ConfigError
from pipeline.core.settings import read_yaml, validate
from pipeline.core.urls import redact


# -- cameras --------------------------------------------------------------------------------------------------
def add_cameras_parser(commands, json_too) -> None:
    cameras = commands.add_parser("cameras", parents=[json_too],
                                  help="the cameras run.py --worker leases: add, list, remove, enable, disable, load")
    actions = cameras.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[json_too], help="register a camera (its settings checked first)")
    add.add_argument("name")
    add.add_argument("url")
    add.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                     help="a cameras.<name> setting (YAML value), e.g. fps_cap=5 or motion.enabled=true")
    add.add_argument("--disabled", action="store_true", help="registered, not read until enabled")
    add.add_argument("--replace", action="store_true", help="overwrite a camera of that name")
    actions.add_parser("list", parents=[json_too], help="cameras, who reads each (worker, lease), live workers")
    for verb in ("remove", "enable", "disable"):
        actions.add_parser(verb, parents=[json_too], help=f"{verb} a camera").add_argument("name")
    load = actions.add_parser("load", parents=[json_too], help="register every camera of a YAML file")
    load.add_argument("file", type=Path)
    load.add_argument("--prune", action="store_true", help="remove the cameras the file does not name")


def run_cameras(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    from pipeline.app.services import redis_client
    from pipeline.cameras import CameraRegistry, holders as lease_holders
    from pipeline.cameras.workers import live_workers

    client = redis_client(cfg, args.redis_url)
    registry = CameraRegistry(client)
    action = args.action
    if action == "add":
        settings = camera_settings(args.name, args.setting)
        camera = registry.add(args.name, args.url, settings, enabled=not args.disabled, replace=args.replace)
        out.line(f"camera {camera.name} registered: {redact(camera.url)}" + ("" if camera.enabled else " (disabled)"))
        out.result({"command": "cameras add", "camera": camera_dict(camera)})
    elif action == "list":
        cameras = registry.list()
        holders = lease_holders(client, [c.name for c in cameras])
        workers = live_workers(client)
        out.line(f"{'CAMERA':<20} {'STATE':<9} {'READ BY':<28} {'LEASE':>6}  URL")
        for c in cameras:
            holder = holders.get(c.name)
            out.line(f"{c.name:<20} {'enabled' if c.enabled else 'disabled':<9} "
                     f"{holder.worker_id if holder else '-':<28} {holder.token if holder else '-'!s:>6}  {redact(c.url)}")
        out.line(f"{plural(len(cameras), 'camera')}, {plural(len(workers), 'live worker')}: "
                 + (", ".join(f"{w.worker_id} (capacity {w.capacity})" for w in workers) or "none"))
        out.result({"command": "cameras list", "cameras": [
            {**camera_dict(c), "worker": holders[c.name].worker_id if c.name in holders else None,
             "lease": holders[c.name].token if c.name in holders else None} for c in cameras],
            "workers": [{"id": w.worker_id, "capacity": w.capacity, "host": w.host, "pid": w.pid} for w in workers]})
    elif action == "load":
        names = load_cameras(registry, args.file, args.prune)
        out.line(f"{plural(len(names), 'camera')} loaded from {args.file}" + (" (others removed)" if args.prune else ""))
        out.result({"command": "cameras load", "file": str(args.file), "cameras": names, "pruned": args.prune})
    else:
        getattr(registry, action)(args.name)
        out.line(f"camera {args.name} {action}d")
        out.result({"command": f"cameras {action}", "camera": args.name})
    return 0


def camera_settings(name: str, items: list[str]) -> dict:
    """`--setting key=value` items as a cameras.<name> mapping, checked as run.py will read it."""
    settings: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"camera {name}: --setting must be KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"camera {name}: the value of {key} is not valid YAML: {raw!r}") from None
        *parents, last = key.split(".")
        node = settings
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"camera {name}: {key} sets inside a value that is not a mapping")
        node[last] = value
    validate(CameraConfig, settings, f"the settings of camera {name}")
    return settings


def load_cameras(registry, path: Path, prune: bool) -> list[str]:
    """Every camera of a YAML file, each one's settings checked as run.py will read them, before any is stored."""
    from pipeline.cameras.registry import parse_mapping

    data = read_yaml(path, "camera file") or {}
    for camera in parse_mapping(data, str(path)):
        validate(CameraConfig, camera.settings, f"{path}: the settings of camera {camera.name}")
    return registry.load_mapping(data, source=str(path), prune=prune)


def camera_dict(camera) -> dict:
    return {"name": camera.name, "url": redact(camera.url), "enabled": camera.enabled, "settings": camera.settings}


# -- events ---------------------------------------------------------------------------------------------------
def add_events_parser(commands, json_too) -> None:
    commands.add_parser("events", parents=[json_too],
                        help="consumer groups of the gallery's event stream: lag, pending, consumers")


def run_events(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    from pipeline.app.services import redis_client
    from pipeline.events import events_key, groups

    stream = events_key(args.gallery)
    client = redis_client(cfg, args.redis_url)
    found = groups(client, stream, consumers=True)
    length = client.xlen(stream)
    out.line(f"{stream}: {plural(length, 'event')} kept, {plural(len(found), 'consumer group')}")
    if found:
        out.line(f"{'GROUP':<20} {'LAG':>6} {'PENDING':>8} {'DEAD':>5}  LAST DELIVERED")
    for g in found:
        lag = "?" if g["lag"] is None else g["lag"]
        out.line(f"{g['name']:<20} {lag!s:>6} {g['pending']:>8} {g['dead_letters']:>5}  {g['last_delivered_id']}")
        for m in g["members"]:
            out.line(f"  {m['name']:<30} pending {m['pending']:>6}  idle {m['idle_ms'] / 1000:.1f} s")
    out.result({"command": "events", "gallery": args.gallery, "stream": stream, "length": length, "groups": found})
    return 0
