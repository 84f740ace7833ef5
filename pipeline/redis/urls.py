"""Redis URL pieces shared by `connect` and the embedded server: client options, what counts as local, and the
cluster URL form. Showing a URL without its secrets is `pipeline.core.urls.redact` (`redact_cluster` for the
cluster form, whose several hosts `urlsplit` cannot parse).

A Redis Cluster URL is `redis+cluster://[user:password@]host:port[,host:port...][/0][?options]` (`rediss+cluster://`
for TLS, the same query options as rediss://): every host is a seed, tried in turn to discover the cluster, so
naming more than one lets a client start while one node is down. A cluster has database 0 only.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.core.errors import GalleryError
from pipeline.core.urls import redact

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
# Timeouts for every client we hand out: a dead server fails fast, an idle pooled connection is
# checked before reuse instead of failing the first command after a network blip.
CLIENT_OPTIONS = dict(socket_connect_timeout=5.0, socket_timeout=30.0, health_check_interval=30,
                      socket_keepalive=True, decode_responses=False)


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "unix" or (parts.scheme in ("redis", "rediss") and (parts.hostname or "") in LOCAL_HOSTS)




CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


@dataclass(frozen=True)
class ClusterURL:
    """A parsed cluster URL: `node_url` is the first seed as a one-node URL carrying the credentials and
    options every node gets; `seeds` are all (host, port) given; `shown` is the URL with secrets redacted."""

    node_url: str
    seeds: tuple[tuple[str, int], ...]
    shown: str


def is_cluster(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def parse_cluster(url: str) -> ClusterURL:
    """`url` in the cluster form split into seeds and a one-node URL; GalleryError naming what is wrong."""
    scheme, _, rest = url.partition("://")
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts = netloc.rpartition("@")
    auth = userinfo + at
    shown = redact_cluster(url)
    path = urlsplit(tail).path
    if path not in ("", "/", "/0"):
        raise GalleryError(f"Redis Cluster URL {shown}: a cluster has database 0 only, got {path!r}")
    seeds = []
    for seed in hosts.split(","):
        try:
            parts = urlsplit(f"//{seed}")
            host, port = parts.hostname, parts.port or 6379
        except ValueError:
            host = None
        if not host:
            raise GalleryError(f"Redis Cluster URL {shown}: {seed!r} is not host:port")
        seeds.append((host, port))
    node = f"{CLUSTER_SCHEMES[scheme]}://{auth}{hosts.split(',')[0]}{tail}"
    return ClusterURL(node, tuple(seeds), shown)


def redact_cluster(url: str) -> str:
    """A cluster URL with the password in its user info or query replaced by `***` (hosts kept)."""
    scheme, _, rest = url.partition("://")
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts = netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    tail = redact(f"redis://host{tail}").removeprefix("redis://host")  # query secrets, by the shared rule
    return f"{scheme}://{user}{':***' if colon else ''}{at}{hosts}{tail}"
