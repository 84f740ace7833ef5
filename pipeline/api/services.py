"""What the API is given: the services serve.py builds (pipeline/app/console.py), as plain objects.

The API may not import pipeline.app (the import rule), so the operator arrives duck-typed: it is
pipeline.app.operator.Operator, whose methods the routes call exactly as enroll.py does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.api.access import ApiKeys, Sessions
from pipeline.gallery.keys import GalleryKeys


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 10_000_000  # per uploaded photo
    max_upload_pixels: int = 40_000_000  # declared by its header (the bomb check)
    recognize_per_minute: int = 120  # per key
    session_hours: float = 12.0
    max_files: int = 20  # photos per upload form
    retention_days: float = 7.0  # of unknown sightings, for the pages

    @property
    def max_body_bytes(self) -> int:
        """A request body larger than this is refused before it is read."""
        return self.max_upload_bytes * self.max_files + 1_000_000


@dataclass
class Services:
    operator: Any  # pipeline.app.operator.Operator
    client: Any  # redis.Redis: the gallery's server
    gallery: str
    keys: ApiKeys
    sessions: Sessions
    limits: Limits = Limits()
    version: str = "1"

    @property
    def base(self) -> str:
        """`fs:{gallery}`: the prefix of the gallery's keys (events, live snapshots, camera health, crops)."""
        return GalleryKeys(self.gallery).base
