"""Every error as JSON, `{"error": "<what went wrong>"}`, with the status code that says whose fault it is.

The library raises one root exception (FacestreamError) with a message naming the problem; `status_of` reads
which kind it is from that message: something that is not there (404), a name already taken (409), a photo
over the limits (413), Redis down (503), anything else the request's fault (400).
"""

from __future__ import annotations

import logging
import re

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.core.errors import FacestreamError, SourceError

log = logging.getLogger(__name__)

_NOT_FOUND = re.compile(r"^no identity named|^no unknown person|was merged into|was named: its faces|"
                        r"^no kept face for event|no longer in gallery|^no sighting|^no event")
_CONFLICT = re.compile(r"already has|already exists")
_TOO_LARGE = re.compile(r"over the limit of|pixels .*decompression bomb")
_UNAVAILABLE = re.compile(r"^Redis failed|gave up after \d+ attempts")


class ApiError(Exception):
    """An error a route raises on purpose: status code, message, and headers (e.g. Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def status_of(exc: FacestreamError) -> int:
    message = str(exc)
    if _NOT_FOUND.search(message):
        return 404
    if _CONFLICT.search(message):
        return 409
    if isinstance(exc, SourceError) and _TOO_LARGE.search(message):
        return 413
    if _UNAVAILABLE.search(message):
        return 503
    return 400


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(FacestreamError)
    async def library_error(request: Request, exc: FacestreamError):
        status = status_of(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, exc: redis.RedisError):
        log.warning("%s %s: Redis failed: %s", request.method, request.url.path, type(exc).__name__)
        return error_response(503, f"Redis is unavailable ({type(exc).__name__}); try again shortly")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
        return error_response(500, f"internal error ({type(exc).__name__}); the console's log has the details")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
            problems.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
        return error_response(422, "invalid request: " + "; ".join(problems))
