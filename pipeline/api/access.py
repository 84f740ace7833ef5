"""Who may use the console: API keys with a role, and browser sessions opened with a key.

A key is `fsk_<key id>_<secret>`: the id (12 hex) names it in lists and logs; the secret (32 random bytes) is
shown once, when created, and only its sha256 is kept (a 256-bit random secret needs no slow hash: nothing
to guess). Verification compares digests in constant time. Keys live in `fs:{access}:keys` (a hash: id ->
JSON record), shared by every gallery of the server; a session is `fs:{access}:session:<random id>` with a
TTL, holding the key id, its role and the session's CSRF token, and dies with its key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass

from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)

ROLES = ("viewer", "admin")  # each role may do what the ones before it may
KEYS = "fs:{access}:keys"
SESSION_PREFIX = "fs:{access}:session:"
KEY_PATTERN = re.compile(r"fsk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})")
LAST_USED_EVERY_S = 60.0  # `last used` is written at most this often per key (not on every request)


def role_allows(have: str, need: str) -> bool:
    return have in ROLES and ROLES.index(have) >= ROLES.index(need)


@dataclass(frozen=True)
class KeyRecord:
    id: str
    role: str
    created: float
    last_used: float | None = None

    def as_dict(self) -> dict:
        return {"id": self.id, "role": self.role, "created": self.created, "last_used": self.last_used}


@dataclass(frozen=True)
class Principal:
    """Who is asking: a key (by id, never the secret), its role, and how it came (bearer or session)."""

    key_id: str
    role: str
    via: str  # "bearer" | "session"
    csrf: str | None = None  # the session's CSRF token


class ApiKeys:
    def __init__(self, client):
        self.client = client

    def create(self, role: str) -> tuple[str, str]:
        """(key id, the whole key): the key is not stored and cannot be shown again."""
        if role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        record = {"role": role, "created": time.time(), "last_used": None, "sha256": _digest(secret)}
        self.client.hset(KEYS, key_id, json.dumps(record))
        log.info("API key %s created (role %s)", key_id, role)
        return key_id, f"fsk_{key_id}_{secret}"

    def list(self) -> list[KeyRecord]:
        records = self.client.hgetall(KEYS)
        found = [_record(k.decode(), v) for k, v in records.items()]
        return sorted(found, key=lambda r: r.created)

    def get(self, key_id: str) -> KeyRecord | None:
        raw = self.client.hget(KEYS, key_id) if isinstance(key_id, str) else None
        return None if raw is None else _record(key_id, raw)

    def revoke(self, key_id: str) -> bool:
        """True if the key existed; its sessions end with it (they look the key up on every request)."""
        gone = bool(self.client.hdel(KEYS, key_id))
        if gone:
            log.info("API key %s revoked", key_id)
        return gone

    def verify(self, key: str) -> KeyRecord | None:
        """The key's record if `key` is a live key, else None (constant-time over the secret)."""
        match = KEY_PATTERN.fullmatch(key.strip()) if isinstance(key, str) else None
        if match is None:
            return None
        key_id, secret = match.groups()
        raw = self.client.hget(KEYS, key_id)
        stored = json.loads(raw)["sha256"] if raw is not None else "0" * 64
        if not hmac.compare_digest(_digest(secret), stored) or raw is None:
            return None
        record = _record(key_id, raw)
        now = time.time()
        if record.last_used is None or now - record.last_used > LAST_USED_EVERY_S:
            data = json.loads(raw)
            data["last_used"] = now
            self.client.hset(KEYS, key_id, json.dumps(data))
        return record


class Sessions:
    """Browser logins: a random session id in an HttpOnly cookie, its state in Redis with a TTL."""

    def __init__(self, client, keys: ApiKeys, hours: float):
        self.client, self.keys, self.ttl_s = client, keys, max(int(hours * 3600), 60)

    def open(self, record: KeyRecord) -> tuple[str, str]:
        """(session id, CSRF token) for a verified key."""
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.client.set(SESSION_PREFIX + session_id, json.dumps({"key_id": record.id, "csrf": csrf}),
                        ex=self.ttl_s)
        log.info("browser session opened with key %s", record.id)
        return session_id, csrf

    def get(self, session_id: str | None) -> Principal | None:
        if not session_id or len(session_id) > 100:
            return None
        raw = self.client.get(SESSION_PREFIX + session_id)
        if raw is None:
            return None
        state = json.loads(raw)
        record = self.keys.get(state["key_id"])
        if record is None:  # the key was revoked: its sessions are over
            self.close(session_id)
            return None
        return Principal(record.id, record.role, "session", state["csrf"])

    def close(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= 100:
            self.client.delete(SESSION_PREFIX + session_id)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _record(key_id: str, raw: bytes | str) -> KeyRecord:
    data = json.loads(raw)
    return KeyRecord(key_id, data["role"], float(data["created"]), data.get("last_used"))
