"""Shared fixtures: the read-only data folder beside the checkout, and a real Redis server."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` resolved from the repo root; tests that need it skip where it is truly absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (it sits beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One embedded Redis server (real `redis-server`, AOF on) for the whole test session."""
    from pipeline.redis.server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A client on the session's server, emptied (FLUSHALL) before each test."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()
