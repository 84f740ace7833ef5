"""The records of the unknown people (what is seen, kept, listed) and their encodings in Redis: int8 rows,
small JPEG crops, the owner entries of the sightings (pipeline/unknowns/keys.py has the layout)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.core.errors import GalleryError
from pipeline.gallery import codec
from pipeline.unknowns.clustering import track_query

DAY_S = 86_400.0
CROP_QUALITY = 80  # JPEG quality of a stored crop: ~2-3 kB at 96 px


@dataclass(frozen=True)
class Seen:
    """A face to record: its unit embedding, where and when, and (optionally) the embedder's aligned RGB crop."""

    embedding: np.ndarray
    camera: str
    track: str  # the track's anonymous id ("cam0-t9"), or the photo it came from
    time: float  # wall clock (s since the epoch): retention counts from it
    quality: float
    crop: np.ndarray | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class Sighting:
    id: str
    owner: str  # a cluster id or an identity id
    camera: str
    track: str
    time: float
    quality: float
    event_id: str | None
    embedding: np.ndarray  # (dim,) float32, decoded from int8
    crop_jpeg: bytes | None = None
    # The fingerprint of the model that embedded it; None only for a sighting older than this field in a gallery
    # bound to no model (UnknownStore.legacy_model).
    model: str | None = None

    def as_dict(self) -> dict:
        return {"id": self.id, "owner": self.owner, "camera": self.camera, "track": self.track,
                "time": self.time, "quality": round(self.quality, 4), "event_id": self.event_id}


@dataclass(frozen=True)
class Cluster:
    id: str
    created: float
    last_seen: float
    sightings: int
    cameras: tuple[str, ...] = ()
    model: str | None = None  # the model of every sighting it holds (as Sighting.model)

    def as_dict(self) -> dict:
        return {"id": self.id, "created": self.created, "last_seen": self.last_seen, "sightings": self.sightings,
                "cameras": list(self.cameras)}


@dataclass(frozen=True)
class Members:
    """The clusters as assignment sees them: one row per member track, `owner[row]` indexing `cluster_ids`;
    `sums`/`counts` over every track of each cluster (what re-clustering compares)."""

    cluster_ids: list[str]
    created: list[float]
    matrix: np.ndarray  # (M, dim) float32 unit track queries
    owner: np.ndarray  # (M,) int64
    sums: np.ndarray  # (C, dim) float64
    counts: np.ndarray  # (C,) int64
    seq: int  # the unknowns' head when read


@dataclass(frozen=True)
class Purged:
    sightings: int
    clusters: int


def encode_embeddings(seen: Sequence[Seen]) -> list[bytes]:
    """The int8 rows of `seen`, after checking every field a sighting stores (GalleryError names the first bad
    one)."""
    if not seen:
        raise GalleryError("no sightings to record")
    for s in seen:
        if not isinstance(s.camera, str) or not s.camera or len(s.camera) > 200:
            raise GalleryError(f"sighting camera must be a non-empty name of at most 200 characters, "
                               f"got {s.camera!r}")
        if not np.isfinite(s.time) or not np.isfinite(s.quality):
            raise GalleryError(f"sighting time and quality must be finite, got {s.time!r}, {s.quality!r}")
    matrix = codec.check_embeddings(np.stack([np.asarray(s.embedding, np.float32).reshape(-1) for s in seen]))
    return codec.encode(matrix, "int8")


def jpeg(crop: np.ndarray, side: int) -> bytes:
    """An aligned RGB crop as a small JPEG (`side` px square)."""
    image = np.asarray(crop)
    if image.ndim != 3 or image.shape[2] != 3 or image.size == 0 or image.dtype != np.uint8:
        raise GalleryError(f"a sighting crop must be an (h, w, 3) uint8 image, got shape {image.shape} "
                           f"{image.dtype}")
    image = np.ascontiguousarray(image[:, :, ::-1])  # RGB -> BGR for OpenCV
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, CROP_QUALITY])
    if not ok:
        raise GalleryError(f"could not JPEG-encode a sighting crop of shape {image.shape}")
    return buffer.tobytes()


def cluster_of(cluster_id: str, record: bytes, sightings: int, cameras: tuple[str, ...] = (),
               legacy_model: str | None = None) -> Cluster:
    data = json.loads(record)
    return Cluster(cluster_id, float(data["created"]), float(data["last_seen"]), int(sightings), cameras,
                   data.get("model") or legacy_model)


def members_of(ids: list[str], created: list[float], tracks: list[dict], max_members: int, seq: int) -> Members:
    rows, owner, sums, counts = [], [], [], []
    for index, by_track in enumerate(tracks):
        queries = [track_query(decode_rows(blobs)) for blobs in by_track.values()]
        rows += queries[:max_members]
        owner += [index] * min(len(queries), max_members)
        sums.append(np.sum(queries, axis=0, dtype=np.float64) if queries else None)
        counts.append(len(queries))
    dim = rows[0].size if rows else 0
    sums = np.stack([s if s is not None else np.zeros(dim) for s in sums]) if ids else np.zeros((0, dim))
    matrix = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    return Members(ids, created, matrix, np.asarray(owner, np.int64), sums, np.asarray(counts, np.int64), seq)


def owner_entry(owner: str, event_id: str | None) -> str:
    return f"{owner} {event_id}" if event_id else owner


def parse_owner(entry: bytes | None) -> tuple[str, str | None]:
    owner, _, event = (entry or b"").decode().partition(" ")
    return owner, event or None


def decode_rows(blobs: list[bytes]) -> np.ndarray:
    if not blobs:
        return np.zeros((0, 0), np.float32)
    dim = len(blobs[0]) - 4
    return codec.to_float(*codec.decode(blobs, "int8", dim))
