"""Redis URL pieces shared by `connect` and the embedded server: client options and what counts as local.
Showing a URL without its secrets is `pipeline.core.urls.redact`."""

from __future__ import annotations

from urllib.parse import urlsplit

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
# Timeouts for every client we hand out: a dead server fails fast, an idle pooled connection is
# checked before reuse instead of failing the first command after a network blip.
CLIENT_OPTIONS = dict(socket_connect_timeout=5.0, socket_timeout=30.0, health_check_interval=30,
                      socket_keepalive=True, decode_responses=False)


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "unix" or (parts.scheme in ("redis", "rediss") and (parts.hostname or "") in LOCAL_HOSTS)


