"""The app's middleware: a limit on request bodies; requests counted by route template and status, for
/api/v1/metrics (never a path with a name in it); the security headers of every response (the pages may not be
framed, and run only the console's own script)."""

from __future__ import annotations

import threading
from collections import Counter

from fastapi import HTTPException

from pipeline.api.errors import error_response

REQUESTS: Counter = Counter()
_lock = threading.Lock()


class CountRequests:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        docs = scope.get("path", "").endswith("/docs")  # Swagger UI loads its script and styles from a CDN

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = list(message.get("headers", [])) + security_headers(docs)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope.get("path", "")
            if path.startswith("/api/"):
                with _lock:
                    REQUESTS[(template_of(scope) if scope.get("route") else "unmatched", status["code"])] += 1


def template_of(scope) -> str:
    """/api/v1/people/Alice -> /api/v1/people/{name}: the route's shape, without the values in it."""
    parts = scope.get("path", "").split("/")
    for key, value in (scope.get("path_params") or {}).items():
        parts = [f"{{{key}}}" if part == str(value) else part for part in parts]
    return "/".join(parts)


CSP = b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"


def security_headers(docs: bool) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"same-origin")]
    if not docs:
        headers.append((b"content-security-policy", CSP))
    return headers


class BodyLimit:
    """Refuses a request body over `limit` bytes (413): by its Content-Length before reading, or as it streams."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            response = error_response(413, f"request body of {int(length):,} bytes is over the limit of "
                                           f"{self.limit:,} bytes")
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body is over the limit of {self.limit:,} bytes")
            return message

        return await self.app(scope, counted, send)
