"""Showing a URL without its secrets (Redis URLs, RTSP cameras): a password in the netloc or in a `password=`
query value becomes `***`, in the URL itself and in any driver message that echoes it."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

_SECRET_QUERY_KEYS = ("password", "ssl_password")


def redact(url: str) -> str:
    """`url` with its password (in the netloc or a `password=` query) replaced by `***`; text that is not a URL
    (a webcam index, a file path) as it is."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is not None:  # user names kept: they help debugging
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    if any(k in _SECRET_QUERY_KEYS for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
        query = [(k, "***" if k in _SECRET_QUERY_KEYS else v)
                 for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        parts = parts._replace(query=urlencode(query, safe="*"))
    # Not geturl(): it turns unix:///path into unix:/path.
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def scrub(message: str, url: str) -> str:
    """`message` with any password from `url` blanked (driver messages could echo it)."""
    for secret in _secrets_of(url):
        message = message.replace(secret, "***")
    return message


def _secrets_of(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [parts.password, unquote(parts.password or "")]
    found += [v for k, v in parse_qsl(parts.query) if k in _SECRET_QUERY_KEYS]
    return [f for f in found if f]
