"""The console's app over a real Redis with real models: one app (and one detector and embedder) per module,
an admin and a viewer key, and the clip's reference photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipeline.api import create_app
from pipeline.api.services import Services
from pipeline.app.config import load_app_config
from pipeline.app.console import console_services

MODEL = Path(__file__).resolve().parents[2] / "models" / "facestream-default.json"
PHOTOS = "ageitgey_face_recognition_examples/reference_photos"
LIN, ALEX = f"{PHOTOS}/lin-manuel-miranda.png", f"{PHOTOS}/alex-lacamoire.png"


@dataclass
class Console:
    http: TestClient
    svc: Services
    admin: dict  # headers
    viewer: dict
    admin_key: str
    viewer_key: str

    @property
    def operator(self):
        return self.svc.operator


def build_console(redis_server, gallery: str, overrides: tuple[str, ...] = ()) -> Console:
    client = redis_server.client()
    cfg = load_app_config(None, list(overrides))
    svc = console_services(cfg, gallery, MODEL, client=client)
    http = TestClient(create_app(svc), base_url="http://127.0.0.1")
    _, admin = svc.keys.create("admin")
    _, viewer = svc.keys.create("viewer")
    return Console(http, svc, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {viewer}"},
                   admin, viewer)


@pytest.fixture(scope="module")
def console(redis_server) -> Console:
    """A console on gallery `test-api` of an emptied server; the models load on first use, once per module."""
    from pipeline.app.services import set_threads

    set_threads()
    redis_server.client().flushall()
    made = build_console(redis_server, "test-api")
    yield made
    made.http.close()


@pytest.fixture(scope="session")
def make_console(redis_server):
    """`make_console(gallery, ("console.recognize_per_minute=2",))`: another console on the same server."""
    return lambda gallery, overrides=(): build_console(redis_server, gallery, overrides)


@pytest.fixture(scope="session")
def photos(shared_data) -> dict[str, bytes]:
    """The clip's two reference photos (PNG bytes): "lin" (Lin-Manuel Miranda) and "alex" (Alex Lacamoire)."""
    return {"lin": (shared_data / LIN).read_bytes(), "alex": (shared_data / ALEX).read_bytes()}


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A few hundred bytes of PNG declaring width x height pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def bomb() -> bytes:
    return bomb_png()

