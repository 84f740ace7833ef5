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


@pytest.fixture(scope="session")
def harmonic_card(tmp_path_factory) -> Path:
    """A "v2" model card harmonic with the shipped model: the shipped graph with other ONNX metadata (so the same
    embedding of the same crop) under another fingerprint, its card listing the shipped fingerprint in
    `harmonic_with` (as tests/app/test_migrate.py builds it)."""
    import onnx

    from pipeline.core.model_card import (
        fingerprint_file,
        load_card,
        onnx_path,
        save_card,
    )
    from pipeline.recognise.embedder import DEFAULT_MODEL

    old = load_card(DEFAULT_MODEL)
    folder = tmp_path_factory.mktemp("harmonic-v2")
    model = onnx.load(str(onnx_path(old, DEFAULT_MODEL)))
    model.doc_string = "the default model's graph under another fingerprint (tests/conftest.py)"
    onnx.save(model, str(folder / "v2.onnx"))
    card = old.model_copy(update={"model_id": "facestream-test-v2", "fingerprint": fingerprint_file(folder / "v2.onnx"),
                                  "onnx": "v2.onnx", "harmonic_with": [old.fingerprint],
                                  "harmonic_thresholds": {},
                                  # the shipped cohort (same graph, same embeddings), its curve for its own templates
                                  "cohort": old.cohort.model_copy(update={
                                      "file": str(DEFAULT_MODEL.parent / old.cohort.file), "harmonic_thresholds": {}})})
    assert card.fingerprint != old.fingerprint
    return save_card(card, folder / "harmonic.json")
