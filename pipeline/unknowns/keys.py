"""Where a gallery's unknown people live in Redis: under the gallery's hash tag `{g}`, beside its identities,
so naming a cluster (sightings move to a person, a template is added) is one MULTI/EXEC on a cluster too.

    fs:{g}:sight:<sid>        hash   one sighting: camera, track, time, quality, event, emb (int8 codec.py),
                                     crop (JPEG), model (the embedder's fingerprint; absent when stored before
                                     models were: the gallery's); EXPIREs a day after its retention as a backstop
    fs:{g}:sight-owner        hash   sid -> "<owner>[ <event id>]": never expires, so a purge can always clean
                                     the indexes of a sighting whose hash the backstop already removed
    fs:{g}:sightings          zset   sid -> time: every sighting, oldest first (retention, size cap)
    fs:{g}:owned:<owner>      zset   sid -> time: the sightings of one cluster ("unknown-<8 hex>") or of one
                                     enrolled identity (its gallery id: confirmations, for search and reject)
    fs:{g}:unknowns           hash   cluster id -> JSON {created, last_seen, model} (model as a sighting's)
    fs:{g}:unknown-alias      hash   merged cluster id -> the id it was merged into; named cluster id ->
                                     "identity:<id>": old ids in events stay resolvable
    fs:{g}:sight-events       hash   event id -> sid: the face behind an identity_confirmed event
    fs:{g}:unknowns-head      hash   seq: bumped by every write (WATCHed by writers, polled by directories)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.core.errors import GalleryError
from pipeline.gallery.keys import GalleryKeys

CLUSTER_PREFIX = "unknown-"
IDENTITY_ALIAS = "identity:"  # alias value of a named cluster: the identity its faces joined
_CLUSTER = re.compile(r"unknown-[0-9a-f]{8}")
_SIGHTING = re.compile(r"[0-9a-f]{16}")
_IDENTITY = re.compile(r"[0-9a-f]{32}")  # pipeline.gallery.identity.new_identity_id


def validate_cluster_id(cluster_id: str) -> str:
    """`cluster_id` if it is an unknown-cluster id ("unknown-" + 8 hex digits), else GalleryError."""
    if not isinstance(cluster_id, str) or not _CLUSTER.fullmatch(cluster_id):
        raise GalleryError(f"{cluster_id!r} is not an unknown-person id (they look like 'unknown-3fa2b9c1')")
    return cluster_id


def validate_owner(owner: str) -> str:
    """`owner` if it is a cluster id or an enrolled identity's id, else GalleryError."""
    if isinstance(owner, str) and _IDENTITY.fullmatch(owner):
        return owner
    return validate_cluster_id(owner)


def validate_sighting_id(sighting_id: str) -> str:
    if not isinstance(sighting_id, str) or not _SIGHTING.fullmatch(sighting_id):
        raise GalleryError(f"{sighting_id!r} is not a sighting id (16 hex digits)")
    return sighting_id


@dataclass(frozen=True)
class UnknownKeys:
    gallery: str

    def __post_init__(self) -> None:
        GalleryKeys(self.gallery)  # validates the name

    @property
    def base(self) -> str:
        return GalleryKeys(self.gallery).base

    def sighting(self, sighting_id: str) -> str:
        return f"{self.base}:sight:{sighting_id}"

    @property
    def sightings(self) -> str:
        return f"{self.base}:sightings"

    def owned(self, owner: str) -> str:
        return f"{self.base}:owned:{owner}"

    @property
    def clusters(self) -> str:
        return f"{self.base}:unknowns"

    @property
    def aliases(self) -> str:
        return f"{self.base}:unknown-alias"

    @property
    def owners(self) -> str:
        return f"{self.base}:sight-owner"

    @property
    def events(self) -> str:
        return f"{self.base}:sight-events"

    @property
    def head(self) -> str:
        return f"{self.base}:unknowns-head"
