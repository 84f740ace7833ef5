"""The event record: what happened to a track (identity confirmed, track started or ended), or to the unknown
people (two clusters found to be one person: `unknown_merged`), as JSON."""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from pipeline.core.errors import FacestreamError

IDENTITY_CONFIRMED = "identity_confirmed"
TRACK_STARTED = "track_started"
TRACK_ENDED = "track_ended"
UNKNOWN_MERGED = "unknown_merged"  # unknown_id: the surviving cluster; extra.merged: the ids it absorbed


@dataclass(frozen=True)
class Event:
    type: str  # IDENTITY_CONFIRMED | TRACK_STARTED | TRACK_ENDED
    camera: str
    track: int
    anon_id: str  # stable anonymous id of the track ("cam0-t7"): who an unknown person is across events
    identity: str | None  # None: unknown (or not yet confirmed)
    similarity: float | None
    frame: int
    time: float  # the frame's timestamp (wall clock for live sources, media time for files)
    extra: dict = field(default_factory=dict)
    crop_jpeg_b64: str | None = None
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # idempotency key across retries/workers
    # The unknown person's stable pseudonymous id ("unknown-3fa2b9c1", pipeline/unknowns): the same stranger
    # across tracks, cameras, restarts and days. None for known people and faces not kept.
    unknown_id: str | None = None

    @classmethod
    def for_track(cls, type: str, track: Any, frame: int, time: float, extra: dict | None = None,
                  crop_jpeg_b64: str | None = None, event_id: str | None = None) -> Event:
        """An event about `track` (a tracker `Track`), with its current identity, similarity and unknown id."""
        return cls(type, track.camera, int(track.id), track.anon_id, track.identity,
                   None if track.similarity is None else float(track.similarity), int(frame), float(time),
                   dict(extra or {}), crop_jpeg_b64, event_id or uuid.uuid4().hex,
                   getattr(track, "unknown_id", None))

    @classmethod
    def merged(cls, survivor: str, merged: Sequence[str], similarity: float, time: float) -> Event:
        """Unknown clusters `merged` were found to be `survivor`'s person (the older id survives)."""
        return cls(UNKNOWN_MERGED, "", 0, "", None, float(similarity), 0, float(time),
                   {"merged": list(merged)}, unknown_id=survivor)

    def __hash__(self) -> int:  # the generated one would fail on the `extra` dict
        return hash(self.event_id)

    def to_json(self) -> dict:
        data = {"type": self.type, "event_id": self.event_id, "camera": self.camera, "track": self.track,
                "anon_id": self.anon_id, "identity": self.identity, "similarity": _finite(self.similarity),
                "frame": self.frame, "time": self.time}
        if self.unknown_id is not None:
            data["unknown_id"] = self.unknown_id
        if self.extra:
            data["extra"] = self.extra
        if self.crop_jpeg_b64 is not None:
            data["crop_jpeg_b64"] = self.crop_jpeg_b64
        return data

    @classmethod
    def from_json(cls, data: dict) -> Event:
        return cls(data["type"], data["camera"], data["track"], data["anon_id"], data["identity"],
                   data["similarity"], data["frame"], data["time"], data.get("extra", {}),
                   data.get("crop_jpeg_b64"), data["event_id"], data.get("unknown_id"))


def encode_crop(image_bgr: np.ndarray, quality: int = 85) -> str:
    """A BGR crop as base64 JPEG text, for `Event.crop_jpeg_b64`."""
    ok, buffer = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise FacestreamError(f"could not JPEG-encode a crop of shape {image_bgr.shape}")
    return base64.b64encode(buffer.tobytes()).decode("ascii")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
