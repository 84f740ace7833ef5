"""MQTT topic names and the slugs that go into them.

    <prefix>/<gallery>/availability                      "online" / "offline" (retained; the last will is offline)
    <prefix>/<gallery>/events/<type>/<camera>            every event as JSON (no crop), not retained
    <prefix>/<gallery>/events/unknown_merged             unknown clusters merged (no camera)
    <prefix>/<gallery>/person/<person>/state             "home" / "not_home" (retained)
    <prefix>/<gallery>/person/<person>/attributes        JSON {name, camera, time, similarity, last_seen} (retained)
    <prefix>/<gallery>/camera/<camera>/last_person       the last person confirmed there (retained)
    <prefix>/<gallery>/camera/<camera>/attributes        JSON {name, unknown_id, time, similarity, track} (retained)

Slugs are lowercase `[a-z0-9_]` (safe in MQTT topics and Home Assistant ids). Names that give the same slug
("Ann Lee", "ann-lee") collide: each of them then gets a suffix from a hash of the exact name, except one that
is its own slug already. The discovery ids (`stable_id`) always carry the hash, so they never change when a
colliding name appears.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable

MAX_SLUG = 48
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """`text` folded to `[a-z0-9_]` ("José Núñez" -> "jose_nunez"); "" when nothing of it is left."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    return _NOT_SLUG.sub("_", ascii_text.lower()).strip("_")[:MAX_SLUG].strip("_")


def name_hash(text: str) -> str:
    return hashlib.sha1(str(text).encode("utf-8")).hexdigest()[:6]


def stable_id(text: str) -> str:
    """Slug plus a hash of the exact text: unique per name and the same for it forever."""
    base = slug(text)
    return f"{base}_{name_hash(text)}" if base else f"id_{name_hash(text)}"


def slugs(names: Iterable[str]) -> dict[str, str]:
    """name -> topic slug for a set of names, unique among them (see the module notes)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in set(names):
        groups[slug(name)].append(name)
    found: dict[str, str] = {}
    for base, members in groups.items():
        for name in members:
            plain = base and (len(members) == 1 or name == base)
            found[name] = base if plain else stable_id(name)
    return found


class Topics:
    """The topic names of one gallery under `prefix`."""

    def __init__(self, prefix: str, gallery: str):
        self.prefix = prefix.strip("/")
        self.gallery = gallery
        self.base = f"{self.prefix}/{gallery}" if self.prefix else gallery

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    def event(self, type: str, camera_slug: str | None) -> str:
        return f"{self.base}/events/{type}/{camera_slug}" if camera_slug else f"{self.base}/events/{type}"

    def person_state(self, person_slug: str) -> str:
        return f"{self.base}/person/{person_slug}/state"

    def person_attributes(self, person_slug: str) -> str:
        return f"{self.base}/person/{person_slug}/attributes"

    def camera_last_person(self, camera_slug: str) -> str:
        return f"{self.base}/camera/{camera_slug}/last_person"

    def camera_attributes(self, camera_slug: str) -> str:
        return f"{self.base}/camera/{camera_slug}/attributes"

    @property
    def person_attributes_filter(self) -> str:
        """Subscription to every person's retained attributes (last sightings, read back after a restart)."""
        return f"{self.base}/person/+/attributes"
