"""What an operator does with unknown people and feedback (enroll.py today, the console next): name a cluster,
search by face, say "this is not that person". Each is one function over the stores, so every caller gets the
same rules and the same atomicity.

- `name_cluster`: the cluster's best faces (by quality; outliers, far from the cluster's centre, left out;
  at most `max_templates`) become templates of a new or existing identity, and every sighting of the cluster
  moves to that identity, in one transaction (GalleryStore.add's `also`): later events use the name at once
  (every mirror follows the gallery's change stream), and the old id resolves to the person.
- `search_face`: the enrolled identities and the unknown clusters whose faces match a face, with the sightings
  that matched (camera, time, similarity): "has this person been here before?".
- `reject_event` / `reject_face`: the face behind an event (its kept sighting), or a photo's face, becomes a
  negative template of the identity it was wrongly given (GalleryStore.add_negatives): the matcher then refuses
  that identity for faces closer to its negatives than to its templates.

Faces keep the model that embedded them (sightings.py): naming a cluster or rejecting an event whose faces are of
another model than the gallery's templates, and searching with a face those faces cannot be compared with, are
refused before anything is written (provenance.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.errors import GalleryError
from pipeline.gallery import codec
from pipeline.gallery.snapshot import Snapshot
from pipeline.gallery.store import GalleryStore
from pipeline.unknowns.clustering import track_query
from pipeline.unknowns.keys import validate_cluster_id
from pipeline.unknowns.provenance import (
    check_comparable,
    check_nameable,
    check_rejectable,
    one_model,
)
from pipeline.unknowns.sightings import Sighting, UnknownStore

MAX_TEMPLATES = 10  # per naming: enough to cover poses, few enough that one mixed-in stranger cannot dominate
SIGHTING_TEMPLATE = "sighting-"  # template id of a face that came from a named cluster
NEGATIVE_TEMPLATE = "negative-"


@dataclass(frozen=True)
class Named:
    cluster_id: str
    name: str
    identity_id: str
    created: bool  # a new identity (else templates were added to an existing one)
    templates_added: int
    sightings_moved: int
    outliers: int  # faces left out: too far from the cluster's centre


@dataclass(frozen=True)
class SeenAt:
    """One sighting as a search result: where and when, and how alike it is to the searched face."""

    sighting: Sighting
    similarity: float

    def as_dict(self) -> dict:
        return {**self.sighting.as_dict(), "similarity": round(self.similarity, 4)}


@dataclass(frozen=True)
class Found:
    """An identity or an unknown cluster that matches the searched face."""

    kind: str  # "identity" | "unknown"
    id: str  # the identity's name, or the cluster id
    similarity: float  # its best template/sighting
    threshold: float
    sightings: list[SeenAt] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "id": self.id, "similarity": round(self.similarity, 4),
                "threshold": round(self.threshold, 4), "sightings": [s.as_dict() for s in self.sightings]}


def name_cluster(unknowns: UnknownStore, gallery: GalleryStore, cluster_id: str, name: str, fingerprint: str,
                 min_similarity: float, max_templates: int = MAX_TEMPLATES) -> Named:
    """Enrol cluster `cluster_id` as `name` (see the module notes); `min_similarity`: a face's least cosine to the
    cluster's centre to be enrolled (the gallery's match threshold: a face the person would not be matched by
    is not the person's). The templates are of the model that saw the faces; `fingerprint` (the gallery's) only
    for faces of no recorded model. GalleryError, nothing written, if the gallery holds another model's."""
    cluster_id = validate_cluster_id(cluster_id)
    if max_templates < 1:
        raise GalleryError(f"max_templates must be at least 1, got {max_templates}")
    faces = unknowns.sightings(cluster_id)
    if not faces:
        unknowns.cluster(cluster_id)  # says where a merged, named or forgotten id went
        raise GalleryError(f"{cluster_id} holds no sightings to enrol")
    model = one_model((s.model for s in faces), f"unknown person {cluster_id}")
    check_nameable(cluster_id, model, gallery.gallery, gallery.fingerprint)
    chosen, outliers = best_faces(faces, min_similarity, max_templates)
    # The chosen faces' kept crops become the templates' enrolment crops (a sighting purged meanwhile has none).
    kept = [unknowns.sighting(s.id, crops=True) for s in chosen]
    result = gallery.add(name, np.stack([s.embedding for s in chosen]), [SIGHTING_TEMPLATE + s.id for s in chosen],
                         model or fingerprint, {"named_from": cluster_id}, also=unknowns.naming(cluster_id),
                         watch=[unknowns.keys.head], crops=[k.crop_jpeg if k else None for k in kept])
    return Named(cluster_id, result.identity.name, result.identity.id, result.created, result.added, len(faces),
                 outliers)


def best_faces(faces: list[Sighting], min_similarity: float, limit: int) -> tuple[list[Sighting], int]:
    """(the best `limit` faces by quality among those within `min_similarity` of the centre, outliers dropped)."""
    matrix = np.stack([s.embedding for s in faces]).astype(np.float64)
    centre = track_query(matrix / np.linalg.norm(matrix, axis=1, keepdims=True))
    similarity = matrix @ centre / np.linalg.norm(matrix, axis=1)
    inliers = [s for s, sim in zip(faces, similarity) if sim >= min_similarity]
    if not inliers:
        raise GalleryError(f"no face of the cluster is within similarity {min_similarity:.3f} of its centre: "
                           f"its {len(faces)} faces disagree too much to enrol as one person")
    ranked = sorted(inliers, key=lambda s: -s.quality)
    return ranked[:limit], len(faces) - len(inliers)


def search_face(embedding: np.ndarray, gallery: GalleryStore, unknowns: UnknownStore | None,
                identity_threshold: float, cluster_threshold: float, limit: int = 10,
                snapshot: Snapshot | None = None, models: Collection[str] | None = None,
                model: str | None = None, offset: float = 0.0) -> list[Found]:
    """Identities (score: best template) and clusters (score: best sighting) at or above their thresholds,
    best first, each with its sightings that reach the threshold, newest first. `snapshot`: the gallery as
    already read (the faces of one photo share one read), else read here. `models`: those the face (of `model`)
    may be compared with, its own and those its card is harmonic with: GalleryError if sightings of another
    would be searched (None: not checked). `offset`: the face's cohort offset, subtracted from its scores against
    identities and their sightings, as the live matcher scores it (`identity_threshold` is then on that score);
    clusters are compared on raw cosines, at `cluster_threshold`."""
    query = _unit(embedding)
    snapshot = gallery.snapshot() if snapshot is None else snapshot
    found: list[Found] = []
    if len(snapshot.identity_ids):
        sims = codec.to_float(snapshot.matrix, snapshot.scales) @ query - offset
        best = np.full(len(snapshot.identity_ids), -np.inf)
        np.maximum.at(best, snapshot.owner, sims)
        for index in np.flatnonzero(best >= identity_threshold):
            seen = _matching(unknowns, snapshot.identity_ids[index], query, identity_threshold, limit, models, model,
                             offset)
            found.append(Found("identity", snapshot.names[index], float(best[index]), identity_threshold, seen))
    clusters = unknowns.clusters() if unknowns is not None else []
    check_comparable((c.model for c in clusters), models, model, gallery.gallery)
    for cluster in clusters:
        seen = _matching(unknowns, cluster.id, query, cluster_threshold, limit)
        if seen:
            found.append(Found("unknown", cluster.id, max(s.similarity for s in seen), cluster_threshold, seen))
    return sorted(found, key=lambda f: -f.similarity)


def reject_event(unknowns: UnknownStore, gallery: GalleryStore, event_id: str) -> tuple[str, int]:
    """The face behind identity_confirmed event `event_id` becomes a negative of the identity it was given:
    (that identity's name, negatives added). GalleryError, nothing written, if the face is of another model
    than the gallery's templates."""
    sighting = unknowns.event_sighting(event_id)
    if sighting is None:
        raise GalleryError(f"no kept face for event {event_id!r}: only identity_confirmed events of the last "
                           f"{unknowns.retention_s / 86400:g} days keep one (and none when unknowns.keep is false)")
    found = gallery.read_full(sighting.owner)
    if found is None:
        raise GalleryError(f"event {event_id!r} named an identity that is no longer in gallery {gallery.gallery!r}"
                           if not sighting.owner.startswith("unknown-") else
                           f"event {event_id!r} was about unknown person {sighting.owner}, not an enrolled one")
    name = found[0].name
    check_rejectable(event_id, sighting.model, gallery.gallery, gallery.fingerprint, name)
    return name, gallery.add_negatives(name, sighting.embedding[None, :], [NEGATIVE_TEMPLATE + sighting.id])


def reject_face(gallery: GalleryStore, embedding: np.ndarray, name: str) -> int:
    """A photo's face becomes a negative of `name` ("this is not NAME"); returns the negatives added."""
    query = _unit(embedding)
    digest = hashlib.sha1(np.round(query * 127).astype(np.int8).tobytes()).hexdigest()[:16]
    return gallery.add_negatives(name, query[None, :], [NEGATIVE_TEMPLATE + digest])


def _matching(unknowns: UnknownStore | None, owner: str, query: np.ndarray, threshold: float,
              limit: int, models: Collection[str] | None = None, model: str | None = None,
              offset: float = 0.0) -> list[SeenAt]:
    if unknowns is None:
        return []
    faces = unknowns.sightings(owner)
    if not faces:
        return []
    check_comparable((s.model for s in faces), models, model, unknowns.gallery)
    sims = np.stack([s.embedding for s in faces]) @ query - offset
    return [SeenAt(s, float(sim)) for s, sim in zip(faces, sims) if sim >= threshold][:limit]


def _unit(embedding: np.ndarray) -> np.ndarray:
    vector = np.asarray(embedding, np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(vector).all() or norm == 0:
        raise GalleryError("the face's embedding is not a finite non-zero vector")
    return vector / norm
