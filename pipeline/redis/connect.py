"""Redis connections: turning the config's `redis.url` into a client.

`connect(url, state_dir)` uses a remote URL as given and falls back to the embedded server
(server.py) when the URL is unset, or local and nothing listens there. `rediss://` URLs take
redis-py's TLS options as query keys, e.g. `rediss://user:pw@host:6380/0?ssl_ca_certs=/path/ca.pem`.
URLs are shown with their secrets redacted (urls.py).

A Redis Cluster URL (`redis+cluster://[user:pw@]host:port[,host:port...]`, urls.py) gives a
`redis.cluster.RedisCluster` with the same client options; the embedded server never stands in for a cluster.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from pipeline.core.errors import GalleryError
from pipeline.core.urls import redact, scrub
from pipeline.redis.server import EmbeddedRedis
from pipeline.redis.urls import CLIENT_OPTIONS, is_cluster, is_local, parse_cluster

log = logging.getLogger(__name__)

_OWNED: dict[Path, EmbeddedRedis] = {}  # servers connect() started in this process, by data_dir
# rediss:// query keys naming files (e.g. ?ssl_ca_certs=/etc/ssl/my-ca.pem): checked before connecting, since
# the driver reports a missing one as a connection failure.
_TLS_FILE_KEYS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def connect(url: str | None, state_dir: Path) -> redis.Redis | RedisCluster:
    """A client for `url`; `None`, or a local URL where nothing answers: the embedded server.

    The embedded server keeps its data in `state_dir/redis`. Remote URLs are used as given
    (user/password in the URL are sent as AUTH); failures name the server with the password redacted.
    A cluster URL gives a RedisCluster client.
    """
    embedded_dir = Path(state_dir) / "redis"
    if url is None:
        return _embedded(embedded_dir).client()
    if is_cluster(url):
        return connect_cluster(url)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise GalleryError(f"unsupported Redis URL {redact(url)}: use redis://, rediss://, unix:// or, for a "
                           "cluster, redis+cluster:// (rediss+cluster://)")
    shown = redact(url)
    where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
    _check_tls_files(url, shown)
    try:
        client = redis.Redis.from_url(url, **CLIENT_OPTIONS)
        # The probe only PINGs: a server that accepts but never answers (e.g. plain Redis behind a rediss://
        # URL, waiting for the rest of a TLS hello it cannot parse) fails in seconds, not socket_timeout.
        probe_options = {**CLIENT_OPTIONS, "socket_timeout": CLIENT_OPTIONS["socket_connect_timeout"]}
        probe = redis.Redis.from_url(url, **probe_options, retry=Retry(NoBackoff(), 0))
    except ValueError as exc:
        raise GalleryError(f"malformed Redis URL {shown}: {scrub(str(exc), url)}") from None
    try:
        probe.ping()
        return client
    except redis.AuthenticationError:  # a ConnectionError subclass: must come first
        raise GalleryError(f"authentication failed for {shown}") from None
    except redis.ResponseError as exc:
        raise GalleryError(f"Redis at {where} refused PING ({shown}): {scrub(str(exc), url)}") from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        tls = _tls_problem(exc)
        if tls is not None:  # something answers, so never fall back to the embedded server
            raise GalleryError(f"TLS with Redis at {where} failed ({shown}): {scrub(tls, url)}") from None
        if not (is_local(url) and _nothing_listening(exc)):
            raise GalleryError(f"cannot reach Redis at {where} ({shown}): "
                               f"{scrub(str(exc), url)}") from None
    finally:
        probe.close()
    client.close()
    server = _embedded(embedded_dir)
    log.warning("nothing answers at %s; using the embedded Redis server instead (data in %s, "
                "listening on %s, password in %s). To use it directly set redis.url to null; to use your "
                "own server, start it and keep redis.url=%s", shown, embedded_dir, server.redacted_url,
                embedded_dir / "password", shown)
    return server.client()


def connect_cluster(url: str) -> RedisCluster:
    """A RedisCluster client for a cluster URL (urls.py); GalleryError if no seed answers, a seed refuses our
    password, or the server is not in cluster mode. Never falls back to the embedded server."""
    parsed = parse_cluster(url)
    shown = parsed.shown
    _check_tls_files(parsed.node_url, shown)
    seeds = [ClusterNode(host, port) for host, port in parsed.seeds]
    try:
        # The constructor discovers the cluster at once (CLUSTER SLOTS on the seeds in turn), so failures show here.
        return RedisCluster.from_url(parsed.node_url, startup_nodes=seeds, **CLIENT_OPTIONS)
    except ValueError as exc:
        raise GalleryError(f"malformed Redis Cluster URL {shown}: {scrub(str(exc), parsed.node_url)}") from None
    except (RedisClusterException, redis.RedisError) as exc:
        raise GalleryError(f"cannot use Redis Cluster at {shown}: "
                           f"{_cluster_problem(exc, parsed.node_url)}") from None


def _cluster_problem(exc: BaseException, node_url: str) -> str:
    """What a failed cluster discovery means, in words (redis-py wraps the cause in a generic message)."""
    for cause in _causes(exc):
        if isinstance(cause, redis.AuthenticationError) or "WRONGPASS" in str(cause) or "NOAUTH" in str(cause):
            return f"authentication failed ({scrub(str(cause), node_url)})"
        if "cluster support disabled" in str(cause) or "Cluster mode is not enabled" in str(cause):
            return ("the server is not in cluster mode (cluster-enabled no); use a redis:// URL for a "
                    "single server")
    tls = _tls_problem(exc)
    if tls is not None:
        return f"TLS failed: {scrub(tls, node_url)}"
    return f"no seed node answered ({scrub(str(exc), node_url)})"


def _check_tls_files(url: str, shown: str) -> None:
    # Checked before connecting, since the driver reports a missing file as a connection failure.
    for key, value in parse_qsl(urlsplit(url).query):
        if key in _TLS_FILE_KEYS and not Path(value).is_file():
            raise GalleryError(f"Redis URL {shown}: {key} file {value} not found")


def stop_embedded(state_dir: Path) -> None:
    """Stop the embedded server that `connect` started in this process for `state_dir` (else no-op)."""
    server = _OWNED.pop((Path(state_dir) / "redis").absolute(), None)
    if server is not None:
        server.stop()


def _embedded(data_dir: Path) -> EmbeddedRedis:
    # One object per data folder in this process, so repeated connect() calls share the server we own.
    server = _OWNED.get(data_dir.absolute())
    if server is None or server.port is None:
        server = EmbeddedRedis(data_dir).start()
        if server.owner:
            _OWNED[server.data_dir] = server
    return server


def _causes(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:  # a chain can loop back on itself
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _tls_problem(exc: BaseException) -> str | None:
    """What went wrong in a TLS handshake behind the driver's ConnectionError, else None."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (f"the server's certificate was not accepted ({cause.verify_message}); give the CA that "
                    "signed it with ?ssl_ca_certs=FILE in the URL")
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed ({cause.reason or cause}); is the server speaking TLS on that port?"
        if isinstance(cause, TimeoutError) and "handshake" in str(cause):
            return "no answer to the TLS handshake; is the server speaking TLS on that port?"
    return None


def _nothing_listening(exc: BaseException) -> bool:
    """A refused connection or a missing socket file: no server there. Anything else (a timeout, a closed
    connection) means something is listening but is not a usable Redis: starting another would hide that."""
    return any(isinstance(c, (ConnectionRefusedError, FileNotFoundError)) for c in _causes(exc))
