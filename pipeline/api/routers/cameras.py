"""/api/v1/cameras: the cameras workers publish for (health, latest annotated frame), /health and /metrics."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import APIRouter, Depends, Response
from fastapi.responses import PlainTextResponse

from pipeline.api import live
from pipeline.api.deps import require_role, services
from pipeline.api.errors import ApiError
from pipeline.api.middleware import REQUESTS
from pipeline.api.models import CamerasOut, ErrorOut, HealthOut
from pipeline.api.services import Services
from pipeline.events import events_key

router = APIRouter(tags=["cameras"], responses={k: {"model": ErrorOut} for k in (401, 403, 404)})
viewer = Depends(require_role("viewer"))


@router.get("/cameras", response_model=CamerasOut, dependencies=[viewer],
            summary="Cameras with published health or snapshots")
def cameras(*, svc: Annotated[Services, Depends(services)]):
    found = live.cameras(svc.client, svc.base)
    return {"cameras": found, "note": None if any(c["live"] for c in found) else live.NO_LIVE}


@router.get("/cameras/{camera}/snapshot", dependencies=[viewer], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}}, summary="The camera's latest annotated frame")
def snapshot(*, camera: str, svc: Annotated[Services, Depends(services)]):
    data = live.snapshot(svc.client, svc.base, camera)
    if not data:
        raise ApiError(404, f"camera {camera!r}: {live.NO_LIVE}")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/health", response_model=HealthOut, tags=["health"], summary="Is the console up, can it reach Redis")
def health(*, response: Response, svc: Annotated[Services, Depends(services)]):
    try:
        ok = bool(svc.client.ping())
    except redis.RedisError:  # any Redis failure is "not healthy", said with a 503
        ok = False
    response.status_code = 200 if ok else 503
    return {"status": "ok" if ok else "redis unreachable", "redis": ok, "gallery": svc.gallery,
            "version": svc.version}


@router.get("/metrics", dependencies=[viewer], tags=["health"], response_class=PlainTextResponse,
            summary="Prometheus text: gallery, unknown people, events, cameras, API requests")
def metrics(*, svc: Annotated[Services, Depends(services)]):
    people = svc.operator.store.identities()
    stats = svc.operator.unknowns.stats()
    lines = _gauge("facestream_identities", len(people), "enrolled identities")
    lines += _gauge("facestream_templates", sum(p.templates for p in people), "templates of all identities")
    for name, value in sorted(stats.items()):
        if isinstance(value, (int, float)):
            lines += _gauge(f"facestream_unknowns_{name}", value, f"unknown people: {name}")
    lines += _gauge("facestream_events_stream_length", svc.client.xlen(events_key(svc.gallery)),
                    "entries in the event stream")
    found = live.cameras(svc.client, svc.base)
    lines += _gauge("facestream_cameras_live", sum(c["live"] for c in found), "cameras publishing a snapshot")
    lines += ["# HELP facestream_api_requests_total API requests by route and status",
              "# TYPE facestream_api_requests_total counter"]
    for (route, status), count in sorted(REQUESTS.items()):
        lines.append(f'facestream_api_requests_total{{route="{route}",status="{status}"}} {count}')
    return "\n".join(lines) + "\n"


def _gauge(name: str, value, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
