"""The console's pages (GET): Live, Events, People, Unknowns, Search, Login. Each reads through the same calls
as the API; the forms they show post to forms.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from pipeline.api import feed, live
from pipeline.api.access import Principal
from pipeline.api.routers.events import ENTRY_ID, event_sightings
from pipeline.api.routers.people import crop_ids
from pipeline.api.web.session import LOGIN_CSRF_COOKIE, login_token, page_user
from pipeline.core.errors import FacestreamError

templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
MEDIA_TIME_MAX = 1e9  # an event's time below this (2001-09-09) is a file's media time, not the wall clock


def when(t) -> str:
    """A wall-clock time as UTC; a file source's media time (seconds into the video) as h:mm:ss.s."""
    if t is None:
        return "-"
    t = float(t)
    if 0 <= t < MEDIA_TIME_MAX:
        tenths = round(t * 10)
        return f"{tenths // 36000}:{tenths // 600 % 60:02d}:{tenths % 600 // 10:02d}.{tenths % 10} into the video"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.env.filters["when"] = when
templates.env.filters["seg"] = lambda text: quote(str(text), safe="")
router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


def render(request: Request, name: str, who: Principal | None, status: int = 200, **context):
    svc = request.app.state.services
    context.update(user=who, gallery=svc.gallery, msg=request.query_params.get("msg"),
                   msg_kind=request.query_params.get("kind", "ok"), page=name.removesuffix(".html"))
    return templates.TemplateResponse(request, name, context, status_code=status)


@router.get("/")
def home():
    return RedirectResponse("/live", status_code=303)


@router.get("/login")
def login_page(request: Request):
    token = login_token(request)
    response = render(request, "login.html", None, csrf=token)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login", max_age=3600)
    return response


@router.get("/live")
def live_page(*, request: Request, who: Annotated[Principal, Depends(page_user)]):
    svc = request.app.state.services
    return render(request, "live.html", who, cameras=live.cameras(svc.client, svc.base), no_live=live.NO_LIVE)


@router.get("/events")
def events_page(*, request: Request, person: str = "", unknown_id: str = "", camera: str = "", type: str = "",
                before: str | None = None, who: Annotated[Principal, Depends(page_user)]):
    svc = request.app.state.services
    where = feed.EventFilter(person or None, unknown_id or None, camera or None, type or None)
    found, next_before = feed.query(svc.client, svc.gallery, where, 50, before)
    filters = {"person": person, "unknown_id": unknown_id, "camera": camera, "type": type}
    return render(request, "events.html", who, events=found, next_before=next_before, filters=filters)


@router.get("/events/{entry_id}")
def event_page(*, request: Request, entry_id: str, who: Annotated[Principal, Depends(page_user)]):
    svc = request.app.state.services
    found = feed.one(svc.client, svc.gallery, entry_id) if ENTRY_ID.fullmatch(entry_id) else None
    if found is None:
        return render(request, "error.html", who, 404, error=f"no event {entry_id} in the stream")
    found.pop("crop_jpeg_b64", None)
    return render(request, "event.html", who, event=found, sightings=event_sightings(svc, found))


@router.get("/people")
def people_page(*, request: Request, who: Annotated[Principal, Depends(page_user)]):
    store = request.app.state.services.operator.store
    return render(request, "people.html", who, people=store.identities())


@router.get("/people/{name}")
def person_page(*, request: Request, name: str, who: Annotated[Principal, Depends(page_user)]):
    svc = request.app.state.services
    try:
        identity = svc.operator.store.get(name)
        found = svc.operator.store.read_full(identity.id)
    except FacestreamError as exc:
        return render(request, "error.html", who, 404, error=str(exc))
    template_ids = found[1] if found else []
    sightings = svc.operator.unknowns.sightings(identity.id, limit=50)
    return render(request, "person.html", who, person=identity, template_ids=template_ids,
                  crops=set(crop_ids(svc, identity.id)), sightings=sightings)


@router.get("/unknowns")
def unknowns_page(*, request: Request, who: Annotated[Principal, Depends(page_user)]):
    svc = request.app.state.services
    clusters = svc.operator.clusters()
    faces = {c.id: svc.operator.unknowns.sightings(c.id, limit=6) for c in clusters[:200]}
    return render(request, "unknowns.html", who, clusters=clusters, faces=faces,
                  retention=svc.limits.retention_days)


@router.get("/unknowns/{cluster_id}")
def unknown_page(*, request: Request, cluster_id: str, who: Annotated[Principal, Depends(page_user)]):
    svc = request.app.state.services
    try:
        cluster, sightings = svc.operator.cluster(cluster_id, limit=200)
    except FacestreamError as exc:
        return render(request, "error.html", who, 404, error=str(exc))
    others = [c.id for c in svc.operator.clusters() if c.id != cluster.id]
    return render(request, "unknown.html", who, cluster=cluster, sightings=sightings, others=others)


@router.get("/search")
def search_page(*, request: Request, who: Annotated[Principal, Depends(page_user)]):
    return render(request, "search.html", who, faces=None)
