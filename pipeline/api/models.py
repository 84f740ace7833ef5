"""The API's request and response bodies: these classes are its documentation (/api/v1/docs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(Model):
    error: str = Field(description="what went wrong, in one sentence")


# -- recognize ------------------------------------------------------------------------------------------------
class Box(Model):
    probability: float = Field(description="detector confidence")
    x_min: float
    y_min: float
    x_max: float
    y_max: float


class Subject(Model):
    subject: str
    similarity: float


class RecognizedOut(Model):
    box: Box
    landmarks: list[list[float]] = Field(description="5 points (x, y): eyes, nose, mouth corners")
    identity: str | None = Field(None, description="the enrolled person, at the gallery's operating point")
    unknown_id: str | None = Field(None, description="else the unknown person (cluster) the face matches")
    similarity: float | None = Field(None, description="cosine of that decision (of the best identity if none)")
    threshold: float | None = None
    subjects: list[Subject] = Field(default_factory=list, description="CompreFace-style: the identity, if any")
    rejected: str | None = Field(None, description="the quality gate that refused the face (then not matched)")


class RecognizeOut(Model):
    result: list[RecognizedOut]


# -- people ---------------------------------------------------------------------------------------------------
class PersonOut(Model):
    name: str
    id: str
    created: float
    templates: int
    metadata: dict = Field(default_factory=dict)


class PersonDetailOut(PersonOut):
    template_ids: list[str]
    crops: list[str] = Field(default_factory=list, description="template ids with a kept face crop")


class PeopleOut(Model):
    gallery: str
    fingerprint: str | None
    people: list[PersonOut]


class RenameIn(Model):
    name: str = Field(min_length=1, max_length=200, description="the new name")


class OutcomeOut(Model):
    file: str
    accepted: bool
    template_id: str | None = None
    reason: str | None = Field(None, description="why it was rejected (enroll.py's reasons)")
    detail: str | None = None


class PhotosOut(Model):
    name: str
    created: bool
    accepted: int
    rejected: int
    added: int
    duplicates: int
    templates: int
    outcomes: list[OutcomeOut]


class RemovedOut(Model):
    name: str
    templates_removed: int
    sightings_removed: int


# -- unknowns, sightings, search ------------------------------------------------------------------------------
class ClusterOut(Model):
    id: str
    created: float
    last_seen: float
    sightings: int
    cameras: list[str] = Field(default_factory=list)


class SightingOut(Model):
    id: str
    owner: str
    camera: str
    track: str
    time: float
    quality: float
    event_id: str | None = None


class ClusterDetailOut(ClusterOut):
    sightings_list: list[SightingOut]


class ClustersOut(Model):
    gallery: str
    retention_days: float
    clusters: list[ClusterOut]


class NameIn(Model):
    name: str = Field(min_length=1, max_length=200, description="the person's name (new or existing)")


class NamedOut(Model):
    cluster_id: str
    name: str
    identity_id: str
    created: bool
    templates_added: int
    sightings_moved: int
    outliers: int


class MergeIn(Model):
    other: str = Field(description="the unknown id whose faces join this one")


class MergedOut(Model):
    kept: str
    merged: list[str]


class ForgotOut(Model):
    id: str
    sightings_removed: int


class SightingRemovedOut(Model):
    id: str
    sighting: str
    cluster_remains: bool = Field(description="false when that was the cluster's last face (the cluster is gone)")


class SeenOut(SightingOut):
    similarity: float


class FoundOut(Model):
    kind: str = Field(description="identity | unknown")
    id: str = Field(description="the identity's name or the unknown id")
    similarity: float
    threshold: float
    sightings: list[SeenOut]


class SearchFaceOut(Model):
    box: list[float]
    rejected: str | None = None
    found: list[FoundOut]


class SearchOut(Model):
    faces: list[SearchFaceOut]


# -- events, cameras, health ----------------------------------------------------------------------------------
class EventOut(Model):
    model_config = ConfigDict(extra="allow")
    entry_id: str = Field(description="the Redis stream entry id (time-ordered)")
    event_id: str
    type: str
    camera: str
    time: float | None = None
    identity: str | None = None
    unknown_id: str | None = None
    similarity: float | None = None
    track: int | None = None
    anon_id: str | None = None
    has_crop: bool = False


class EventsOut(Model):
    events: list[EventOut]
    next_before: str | None = Field(None, description="pass as `before` for the next (older) page")


class EventDetailOut(Model):
    event: EventOut
    sightings: list[SightingOut]


class RejectedOut(Model):
    name: str
    negatives_added: int


class CameraOut(Model):
    camera: str
    live: bool = Field(description="a snapshot is published now (console.snapshots on a worker)")
    health: dict | None = None


class CamerasOut(Model):
    cameras: list[CameraOut]
    note: str | None = None


class HealthOut(Model):
    status: str
    redis: bool
    gallery: str
    version: str
