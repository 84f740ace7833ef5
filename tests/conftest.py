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


@pytest.fixture(scope="session")
def enrol_photos(redis_server, shared_data):
    """`enrol_photos(gallery, {name: photo under ../shared/data})` -> gallery: cleared, then each person enrolled
    from the largest face of the photo through the library (the detector and embedder load once per session)."""
    from pipeline.app.config import AppConfig
    from pipeline.app.services import make_detector, make_embedder, set_threads
    from pipeline.core.images import read_image
    from pipeline.gallery import GalleryStore

    set_threads()
    cfg = AppConfig()
    detector = make_detector(cfg)
    embedder = make_embedder(cfg, Path(__file__).resolve().parents[1] / "models" / "facestream-default.json")

    def enrol(gallery: str, photos: dict[str, str]) -> str:
        store = GalleryStore(redis_server.client(), gallery)
        store.clear()
        for name, photo in photos.items():
            image = read_image(shared_data / photo)
            faces = detector.detect_one(image)
            largest = faces[[int(faces.area.argmax())]]
            store.add(name, embedder.embed(embedder.crops(image, largest)), [photo], embedder.fingerprint)
        return gallery
    return enrol
