"""The console's forms (POST): each checks the session's CSRF token and role (session.form_user), calls the
operator as the API does, and sends the browser back with a message (or, for uploads, shows the outcome)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from pipeline.api.access import ApiKeys
from pipeline.api.deps import SESSION_COOKIE, read_upload
from pipeline.api.errors import ApiError, status_of
from pipeline.api.uploads import decode
from pipeline.api.web.pages import render
from pipeline.api.web.session import (
    LOGIN_CSRF_COOKIE,
    form_user,
    login_token_ok,
    set_session,
)
from pipeline.core.errors import FacestreamError
from pipeline.gallery import validate_name

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


def back(path: str, message: str, kind: str = "ok") -> RedirectResponse:
    return RedirectResponse(f"{path}?{urlencode({'msg': message, 'kind': kind})}", status_code=303)


@router.post("/login")
async def login(request: Request):
    svc = request.app.state.services
    form = await request.form()
    if not login_token_ok(request, form.get("csrf_token")):
        return render(request, "login.html", None, 403, csrf=request.cookies.get(LOGIN_CSRF_COOKIE, ""),
                      error="missing or wrong CSRF token: reload the login page and try again")
    keys: ApiKeys = svc.keys
    record = keys.verify(str(form.get("key") or ""))
    if record is None:
        return render(request, "login.html", None, 401, csrf=request.cookies.get(LOGIN_CSRF_COOKIE, ""),
                      error="invalid or revoked API key")
    session_id, _ = svc.sessions.open(record)
    response = RedirectResponse("/live", status_code=303)
    set_session(response, session_id, svc.limits.session_hours)
    return response


@router.post("/logout")
async def logout(request: Request):
    await form_user(request)
    request.app.state.services.sessions.close(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/people/add")
async def add_person(request: Request):
    who, form = await form_user(request, "admin")
    return await add_photos(request, who, form, str(form.get("name") or ""))


@router.post("/people/{name}/photos")
async def add_to_person(request: Request, name: str):
    who, form = await form_user(request, "admin")
    return await add_photos(request, who, form, name)


async def add_photos(request: Request, who, form, name: str):
    svc = request.app.state.services
    files = [f for f in form.getlist("images") if isinstance(f, UploadFile) and f.filename]
    try:
        name = validate_name(name)
        if not files:
            raise ApiError(400, "choose at least one photo")
        if len(files) > svc.limits.max_files:
            raise ApiError(413, f"{len(files)} files: at most {svc.limits.max_files} per upload")
        uploads = [await read_upload(f, svc, "images") for f in files]
        added = await run_in_threadpool(svc.operator.add_photos, name, uploads, form.get("largest") == "on")
    except (ApiError, FacestreamError) as exc:
        return back("/people", getattr(exc, "message", str(exc)), "error")
    return render(request, "added.html", who, added=added)


@router.post("/people/{name}/rename")
async def rename(request: Request, name: str):
    _, form = await form_user(request, "admin")
    svc = request.app.state.services
    try:
        identity = svc.operator.rename(name, validate_name(str(form.get("new_name") or "")))
    except FacestreamError as exc:
        return back(f"/people/{quote(name, safe='')}", str(exc), "error")
    return back(f"/people/{quote(identity.name, safe='')}", f"renamed {name!r} to {identity.name!r}")


@router.post("/people/{name}/remove")
async def remove(request: Request, name: str):
    await form_user(request, "admin")
    try:
        templates, sightings = request.app.state.services.operator.remove_person(name)
    except FacestreamError as exc:
        return back("/people", str(exc), "error")
    return back("/people", f"removed {name!r}: {templates} templates and {sightings} sightings deleted")


@router.post("/unknowns/{cluster_id}/name")
async def name_cluster(request: Request, cluster_id: str):
    _, form = await form_user(request, "admin")
    try:
        named = request.app.state.services.operator.name(cluster_id, validate_name(str(form.get("name") or "")))
    except FacestreamError as exc:
        return back("/unknowns", str(exc), "error")
    return back("/unknowns", f"named {cluster_id} {named.name!r}: {named.templates_added} templates enrolled, "
                             f"{named.outliers} outliers left out, {named.sightings_moved} sightings moved")


@router.post("/unknowns/{cluster_id}/merge")
async def merge(request: Request, cluster_id: str):
    _, form = await form_user(request, "admin")
    other = str(form.get("other") or "")
    try:
        if other == cluster_id:
            raise ApiError(400, f"cannot merge {cluster_id} into itself")
        merged = request.app.state.services.operator.merge(cluster_id, other)
    except (ApiError, FacestreamError) as exc:
        return back("/unknowns", getattr(exc, "message", str(exc)), "error")
    return back("/unknowns", f"merged {', '.join(merged)} into {cluster_id}")


@router.post("/unknowns/{cluster_id}/sightings/{sighting_id}/remove")
async def not_this_person(request: Request, cluster_id: str, sighting_id: str):
    await form_user(request, "admin")
    try:
        remains = request.app.state.services.operator.not_this_person(cluster_id, sighting_id)
    except FacestreamError as exc:
        return back(f"/unknowns/{cluster_id}", str(exc), "error")
    if not remains:
        return back("/unknowns", f"that was {cluster_id}'s last face: the cluster is gone")
    return back(f"/unknowns/{cluster_id}", f"removed one face from {cluster_id} (not this person)")


@router.post("/unknowns/{cluster_id}/forget")
async def forget(request: Request, cluster_id: str):
    await form_user(request, "admin")
    operator = request.app.state.services.operator
    try:
        operator.unknowns.cluster(cluster_id)
        removed = operator.forget(cluster_id)
    except FacestreamError as exc:
        return back("/unknowns", str(exc), "error")
    return back("/unknowns", f"forgot {cluster_id}: {removed} sightings and their crops deleted")


@router.post("/events/{event_id}/reject")
async def reject(request: Request, event_id: str):
    _, form = await form_user(request, "admin")
    entry = str(form.get("entry_id") or "")
    try:
        name, added = request.app.state.services.operator.reject_event(event_id)
    except FacestreamError as exc:
        return back(f"/events/{entry}" if entry else "/events", str(exc), "error")
    return back(f"/events/{entry}" if entry else "/events",
                f"not {name!r}: {added} negative template added; faces like this one are refused that name")


@router.post("/search")
async def search(request: Request):
    who, form = await form_user(request)
    svc = request.app.state.services
    image = form.get("image")
    try:
        if not isinstance(image, UploadFile) or not image.filename:
            raise ApiError(400, "choose a photo to search with")
        request.app.state.recognize_limit.check(who.key_id)
        name, data = await read_upload(image, svc)
        faces = await run_in_threadpool(lambda: svc.operator.search_image(decode(svc, name, data), 10))
    except (ApiError, FacestreamError) as exc:
        status = exc.status if isinstance(exc, ApiError) else status_of(exc)
        return render(request, "search.html", who, status, faces=None,
                      error=getattr(exc, "message", str(exc)))
    return render(request, "search.html", who, faces=faces)
