"""Dependencies of the routes: the services, who is asking (`require_role`), uploads within the limits.

A request is authenticated by `Authorization: Bearer <key>` (programs) or by the browser's session cookie
(pages, and the API calls their JavaScript makes). A cookie is sent by the browser on its own, so a change
made with one (any method but GET/HEAD) must also carry the session's CSRF token: the `csrf_token` field of a
page's form, or the `X-CSRF-Token` header of a script's call.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import Depends, Request, UploadFile
from fastapi.security import HTTPBearer

from pipeline.api.access import Principal, role_allows
from pipeline.api.errors import ApiError
from pipeline.api.services import Services

log = logging.getLogger(__name__)

SESSION_COOKIE = "fs_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def services(request: Request) -> Services:
    return request.app.state.services


# Declares the scheme in the OpenAPI document (the docs' "Authorize" button); the header is parsed below, so that
# a malformed one gets a message rather than being ignored.
bearer = HTTPBearer(auto_error=False, description="an API key: enroll.py keys create --role admin|viewer")


def principal(request: Request, _: Annotated[object, Depends(bearer)] = None) -> Principal | None:
    """Who is asking, or None; a bearer key wins over a cookie."""
    if hasattr(request.state, "principal"):
        return request.state.principal
    svc: Services = request.app.state.services
    header = request.headers.get("authorization", "")
    found = None
    if header:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "the Authorization header must be 'Bearer <API key>'",
                           {"WWW-Authenticate": "Bearer"})
        record = svc.keys.verify(key)
        if record is None:
            raise ApiError(401, "invalid or revoked API key", {"WWW-Authenticate": "Bearer"})
        found = Principal(record.id, record.role, "bearer")
    else:
        found = svc.sessions.get(request.cookies.get(SESSION_COOKIE))
    request.state.principal = found
    return found


def require_role(role: str):
    """`Depends(require_role("admin"))`: 401 without a key or login, 403 when the role is not enough."""

    def check(request: Request, who: Annotated[Principal | None, Depends(principal)]) -> Principal:
        if who is None:
            raise ApiError(401, "authentication required: send 'Authorization: Bearer <API key>' "
                                "(enroll.py keys create) or log in", {"WWW-Authenticate": "Bearer"})
        if not role_allows(who.role, role):
            raise ApiError(403, f"this needs the {role} role; key {who.key_id} is a {who.role}")
        # A cookie comes with every request the browser makes, even one another site makes it send.
        cookie_change = who.via == "session" and request.method not in SAFE_METHODS
        if cookie_change and request.url.path.startswith("/api/") and not csrf_matches(
                who, request.headers.get(CSRF_HEADER)):
            raise ApiError(403, f"missing or wrong CSRF token: a logged-in browser's change needs the "
                                f"{CSRF_HEADER} header")
        return who

    return check


def csrf_matches(who: Principal, token: str | None) -> bool:
    return bool(token and who.csrf and hmac.compare_digest(token, who.csrf))


def multipart(request: Request) -> None:
    """415 unless the body is multipart/form-data (checked before the body is read)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise ApiError(415, f"expected multipart/form-data (an image file in a form field), got "
                            f"{kind or 'no content type'}")


async def read_upload(upload: UploadFile, svc: Services, field: str = "image") -> tuple[str, bytes]:
    """(file name, bytes) of one uploaded file, refused (413) past the byte limit, (400) when empty."""
    limit = svc.limits.max_upload_bytes
    data = await upload.read(limit + 1)
    name = (upload.filename or field).rsplit("/", 1)[-1][:200]
    if len(data) > limit:
        raise ApiError(413, f"{field}: the file is over the upload limit of {limit:,} bytes")
    if not data:
        raise ApiError(400, f"{field}: the file is empty (0 bytes)")
    return name, data
