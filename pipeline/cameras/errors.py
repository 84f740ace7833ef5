"""The one place a Redis failure of this package becomes a GalleryError (the project's "Redis refused or failed"
error, as pipeline.redis raises it), with what was being done and no password."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisClusterException, RedisError

from pipeline.core.errors import GalleryError

REDIS_ERRORS = (RedisError, RedisClusterException)


@contextmanager
def redis_failures(what: str) -> Iterator[None]:
    """Run the block; a Redis error leaves it as GalleryError("<what>: Redis failed: ...")."""
    try:
        yield
    except REDIS_ERRORS as exc:
        # redis-py messages name host:port, never the password.
        raise GalleryError(f"{what}: Redis failed: {type(exc).__name__}: {exc}") from exc
