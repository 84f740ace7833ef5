"""/api/v1/events: the event timeline (filters, pages), one event with its sightings, its face crop, the live
stream (Server-Sent Events), and "not this person" for a wrongly named event."""

from __future__ import annotations

import base64
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import StreamingResponse

from pipeline.api import feed
from pipeline.api.deps import require_role, services
from pipeline.api.errors import ApiError
from pipeline.api.models import ErrorOut, EventDetailOut, EventsOut, RejectedOut
from pipeline.api.services import Services
from pipeline.core.errors import GalleryError

router = APIRouter(prefix="/events", tags=["events"], responses={k: {"model": ErrorOut} for k in (400, 401, 403, 404)})
viewer, admin = Depends(require_role("viewer")), Depends(require_role("admin"))
ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")


def event_filter(*, person: str | None = None, unknown_id: str | None = None, camera: str | None = None,
                 type: str | None = None, since: Annotated[float | None, Query(description="unix seconds")] = None,
                 until: Annotated[float | None, Query(description="unix seconds")] = None) -> feed.EventFilter:
    return feed.EventFilter(person or None, unknown_id or None, camera or None, type or None, since, until)


@router.get("", response_model=EventsOut, dependencies=[viewer], summary="Events, newest first, filtered")
def events(*, where: Annotated[feed.EventFilter, Depends(event_filter)], limit: Annotated[int, Query(ge=1, le=500)] = 50,
           before: Annotated[str | None, Query(description="entry id: events older than it (the next page)")] = None,
           svc: Annotated[Services, Depends(services)]):
    if before is not None:
        checked_entry(before)
    found, next_before = feed.query(svc.client, svc.gallery, where, limit, before)
    return {"events": found, "next_before": next_before}


@router.get("/stream", dependencies=[viewer], summary="New events as Server-Sent Events (text/event-stream)",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
def stream(*, where: Annotated[feed.EventFilter, Depends(event_filter)],
           after: Annotated[str | None, Query(description="entry id to resume after (default: from now)")] = None,
           max_events: Annotated[int | None, Query(ge=1, description="close the stream after this many")] = None,
           last_event_id: Annotated[str | None, Header()] = None, svc: Annotated[Services, Depends(services)]):
    start = after or last_event_id
    start = checked_entry(start) if start else feed.last_id(svc.client, svc.gallery)
    return StreamingResponse(feed.tail(svc.client, svc.gallery, start, where, max_events),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{entry_id}", response_model=EventDetailOut, dependencies=[viewer],
            summary="One event with the sightings behind it")
def event(*, entry_id: str, svc: Annotated[Services, Depends(services)]):
    found = feed.one(svc.client, svc.gallery, checked_entry(entry_id))
    if found is None:
        raise ApiError(404, f"no event {entry_id} in the stream of gallery {svc.gallery!r} (trimmed or never written)")
    found.pop("crop_jpeg_b64", None)
    return {"event": found, "sightings": [s.as_dict() for s in event_sightings(svc, found)]}


@router.get("/{entry_id}/crop", dependencies=[viewer], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}}, summary="The face crop carried by the event (JPEG)")
def crop(*, entry_id: str, svc: Annotated[Services, Depends(services)]):
    found = feed.one(svc.client, svc.gallery, checked_entry(entry_id))
    if found is None or not found.get("crop_jpeg_b64"):
        raise ApiError(404, f"event {entry_id} carries no face crop")
    return Response(base64.b64decode(found["crop_jpeg_b64"]), media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.post("/{event_id}/reject", response_model=RejectedOut, dependencies=[admin],
             summary="Not this person: the event's face becomes a negative template of the name it was given")
def reject(*, event_id: str, svc: Annotated[Services, Depends(services)]):
    if not re.fullmatch(r"[0-9a-f]{32}", event_id):
        raise ApiError(400, f"{event_id!r} is not an event id (32 hex digits)")
    name, added = svc.operator.reject_event(event_id)
    return {"name": name, "negatives_added": added}


def event_sightings(svc: Services, event: dict) -> list:
    unknowns = svc.operator.unknowns
    kept = unknowns.event_sighting(event["event_id"]) if event.get("event_id") else None
    if kept is not None:
        return [kept]
    if event.get("unknown_id"):
        try:
            return unknowns.sightings(event["unknown_id"], limit=20)
        except GalleryError:
            return []
    return []


def checked_entry(entry_id: str) -> str:
    if not ENTRY_ID.fullmatch(entry_id):
        raise ApiError(400, f"{entry_id!r} is not a stream entry id (like 1764650000000-0)")
    return entry_id
