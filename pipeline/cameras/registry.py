"""The camera registry: which cameras exist (name, URL, per-camera settings) and which are enabled, in Redis.

Every change runs as one Lua script that also INCRs `fs:{cameras}:version`, so a worker polls one small key and
re-reads the list only when it moved. Settings are the caller's business (the app validates them with pydantic);
the registry only insists they are JSON that reads back equal to what was given, and stores the JSON verbatim
(never decoded in Lua: cjson would round floats to 14 digits).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cameras import keys
from pipeline.cameras.errors import redis_failures
from pipeline.core.errors import ConfigError
from pipeline.core.settings import read_yaml
from pipeline.core.urls import redact

log = logging.getLogger(__name__)

MAX_URL_CHARS = 4096
MAX_SETTINGS_BYTES = 64 * 1024  # masks are the largest setting: thousands of points still fit
RESERVED = ("url", "enabled")  # the YAML form puts these beside the settings, so no setting may take them

_ADD = """
if ARGV[4] == '0' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then redis.call('SREM', KEYS[2], ARGV[1]) else redis.call('SADD', KEYS[2], ARGV[1]) end
return redis.call('INCR', KEYS[3])
"""
_LOAD = """
local keep = {}
for i = 2, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  if ARGV[i + 2] == '1' then redis.call('SREM', KEYS[2], ARGV[i]) else redis.call('SADD', KEYS[2], ARGV[i]) end
  keep[ARGV[i]] = true
end
if ARGV[1] == '1' then
  for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not keep[name] then redis.call('HDEL', KEYS[1], name); redis.call('SREM', KEYS[2], name) end
  end
end
return redis.call('INCR', KEYS[3])
"""
_REMOVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('INCR', KEYS[3])
"""
_SET_ENABLED = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local changed
if ARGV[2] == '1' then changed = redis.call('SREM', KEYS[2], ARGV[1]) else changed = redis.call('SADD', KEYS[2], ARGV[1]) end
if changed == 1 then return redis.call('INCR', KEYS[3]) end
return tonumber(redis.call('GET', KEYS[3]) or '0')
"""
# Reads go through a script too: the definitions, the disabled set and the version seen at one instant.
_READ = """
return {redis.call('HGETALL', KEYS[1]), redis.call('SMEMBERS', KEYS[2]), redis.call('GET', KEYS[3]) or '0'}
"""


@dataclass(frozen=True)
class Camera:
    """One registered camera. `settings` is a fresh dict per read: changing it changes nothing stored."""

    name: str
    url: str = field(repr=False)
    enabled: bool = True
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # the URL may carry a password (rtsp://user:pw@...)
        return (f"Camera(name={self.name!r}, url={redact(self.url)!r}, enabled={self.enabled}, "
                f"settings={self.settings!r})")


class CameraRegistry:
    """Cameras defined in Redis. Errors: ConfigError for a bad definition or an unknown camera, GalleryError
    when Redis fails."""

    def __init__(self, client):
        self._client = client
        self._scripts = {name: client.register_script(src) for name, src in
                         (("add", _ADD), ("load", _LOAD), ("remove", _REMOVE), ("enabled", _SET_ENABLED),
                          ("read", _READ))}

    def add(self, name: str, url: str, settings: Mapping[str, Any] | None = None, *, enabled: bool = True,
            replace: bool = False) -> Camera:
        """Register `name`; an existing name is a ConfigError unless `replace` (then it is overwritten)."""
        camera = make_camera(name, url, settings, enabled)
        result = self._run("add", f"add camera {name!r}", camera.name, _encode(camera), _flag(enabled), _flag(replace))
        if result < 0:
            raise ConfigError(f"camera {name!r} is already registered (remove it first, or replace it)")
        log.info("camera %s registered: %s%s", name, redact(camera.url), "" if enabled else " (disabled)")
        return camera

    def get(self, name: str) -> Camera:
        """The camera called `name`; ConfigError if no such camera is registered."""
        validate = keys.validate_camera_name(name)
        found = self._read().get(validate)
        if found is None:
            raise ConfigError(f"camera {name!r} is not registered")
        return found

    def list(self) -> list[Camera]:
        """Every registered camera, by name."""
        return sorted(self._read().values(), key=lambda c: c.name)

    def snapshot(self) -> tuple[int, list[Camera]]:
        """(version, cameras by name) read at one instant: what a worker caches until `version()` moves."""
        found, version = self._read_with_version()
        return version, sorted(found.values(), key=lambda c: c.name)

    def version(self) -> int:
        """The change counter: it moves on every add, remove, enable, disable and load."""
        with redis_failures("read the camera registry's version"):
            return int(self._client.get(keys.VERSION) or 0)

    def remove(self, name: str) -> None:
        """Forget `name` (its fencing counter stays, so tokens keep rising if it comes back); ConfigError if
        unknown."""
        keys.validate_camera_name(name)
        if self._run("remove", f"remove camera {name!r}", name) < 0:
            raise ConfigError(f"camera {name!r} is not registered")
        log.info("camera %s removed", name)

    def enable(self, name: str) -> None:
        self._set_enabled(name, True)

    def disable(self, name: str) -> None:
        self._set_enabled(name, False)

    def load_yaml(self, path: str | Path, *, prune: bool = False) -> list[str]:
        """Register every camera of a YAML file (`name: {url: ..., enabled: true, <settings>...}`), replacing
        same-named ones; with `prune`, remove cameras the file does not name. All or nothing: the whole file is
        checked before anything is written. Returns the names loaded."""
        data = read_yaml(path, "camera file")
        return self.load_mapping({} if data is None else data, source=str(path), prune=prune)

    def load_mapping(self, data: object, *, source: str = "<mapping>", prune: bool = False) -> list[str]:
        """`load_yaml` for an already-parsed mapping (what an entry point that read its own YAML passes)."""
        cameras = parse_mapping(data, source)
        argv: list[str] = [_flag(prune)]
        for camera in cameras:
            argv += [camera.name, _encode(camera), _flag(camera.enabled)]
        self._run("load", f"load cameras from {source}", *argv)
        log.info("%d camera(s) loaded from %s%s", len(cameras), source, " (others removed)" if prune else "")
        return [c.name for c in cameras]

    def _set_enabled(self, name: str, enabled: bool) -> None:
        keys.validate_camera_name(name)
        verb = "enable" if enabled else "disable"
        if self._run("enabled", f"{verb} camera {name!r}", name, _flag(enabled)) < 0:
            raise ConfigError(f"camera {name!r} is not registered")
        log.info("camera %s %sd", name, verb)

    def _run(self, script: str, what: str, *argv: str) -> int:
        with redis_failures(what):
            return int(self._scripts[script](keys=[keys.DEFS, keys.DISABLED, keys.VERSION], args=list(argv)))

    def _read(self) -> dict[str, Camera]:
        return self._read_with_version()[0]

    def _read_with_version(self) -> tuple[dict[str, Camera], int]:
        with redis_failures("read the camera registry"):
            flat, disabled, version = self._scripts["read"](keys=[keys.DEFS, keys.DISABLED, keys.VERSION])
        off = {_text(n) for n in disabled}
        found = {}
        for raw_name, raw in zip(flat[::2], flat[1::2], strict=True):
            name = _text(raw_name)
            record = json.loads(raw)
            found[name] = Camera(name, record["url"], name not in off, record["settings"])
        return found, int(version)


def make_camera(name: object, url: object, settings: object, enabled: object = True) -> Camera:
    """A validated Camera, or ConfigError naming what is wrong (the name, the URL, or a setting)."""
    name = keys.validate_camera_name(name)
    if not isinstance(enabled, bool):
        raise ConfigError(f"camera {name!r}: enabled must be true or false, got {enabled!r}"[:300])
    return Camera(name, _valid_url(name, url), enabled, _valid_settings(name, settings))


def parse_mapping(data: object, source: str) -> list[Camera]:
    """The cameras of a `name -> {url, enabled, settings...}` mapping, all validated, or ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"camera file {source} must be a mapping of camera name -> {{url: ..., ...}}, "
                          f"got {type(data).__name__}")
    cameras = []
    for name, entry in data.items():
        shown = keys.validate_camera_name(name) if isinstance(name, str) else name
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{source}: camera {shown!r} must be a mapping with at least 'url', "
                              f"got {type(entry).__name__}")
        if "url" not in entry:
            raise ConfigError(f"{source}: camera {shown!r} has no 'url'")
        settings = {k: v for k, v in entry.items() if k not in RESERVED}
        try:
            cameras.append(make_camera(name, entry["url"], settings, entry.get("enabled", True)))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return cameras


def _valid_url(name: str, url: object) -> str:
    if not isinstance(url, str):
        raise ConfigError(f"camera {name!r}: url must be a string, got {type(url).__name__}")
    if not url.strip():
        raise ConfigError(f"camera {name!r}: url is empty")
    if len(url) > MAX_URL_CHARS:
        raise ConfigError(f"camera {name!r}: url is {len(url)} characters long; at most {MAX_URL_CHARS} allowed")
    if url != url.strip() or any(ord(c) < 32 or ord(c) == 127 for c in url):
        # A newline in a URL would forge log lines; surrounding spaces are always a paste accident.
        raise ConfigError(f"camera {name!r}: url {redact(url)!r} contains whitespace at an end or a control "
                          "character")
    return url


def _valid_settings(name: str, settings: object) -> dict[str, Any]:
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise ConfigError(f"camera {name!r}: settings must be a mapping, got {type(settings).__name__}")
    taken = [k for k in RESERVED if k in settings]
    if taken:
        raise ConfigError(f"camera {name!r}: {', '.join(taken)} cannot be a setting (it is part of the camera)")
    try:
        text = json.dumps(dict(settings), allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"camera {name!r}: settings must be JSON values (strings, numbers, booleans, null, "
                          f"lists, mappings with string keys): {exc}") from None
    if len(text.encode()) > MAX_SETTINGS_BYTES:
        raise ConfigError(f"camera {name!r}: settings are {len(text.encode())} bytes as JSON; at most "
                          f"{MAX_SETTINGS_BYTES} allowed")
    decoded = json.loads(text)
    if not _same(decoded, settings):
        # Tuples become lists, int keys become strings: the caller would read back something else.
        raise ConfigError(f"camera {name!r}: settings do not survive JSON unchanged (tuples, non-string keys "
                          "or other non-JSON types): use lists and string keys")
    return decoded


def _same(a: object, b: object) -> bool:
    """Equal and of the same JSON shape all the way down (True == 1 in Python, not in JSON)."""
    if isinstance(b, bool) or isinstance(a, bool):
        return type(a) is type(b) and a == b
    if isinstance(b, Mapping):
        return isinstance(a, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in b)
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(b, float):
        return isinstance(a, float) and math.isfinite(b) and a == b
    return type(a) is type(b) and a == b


def _encode(camera: Camera) -> str:
    return json.dumps({"url": camera.url, "settings": camera.settings}, ensure_ascii=False, separators=(",", ":"))


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
