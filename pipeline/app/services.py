"""The composition root: config -> detector, embedder, gallery; used by every entry point."""

from __future__ import annotations

from pathlib import Path

from pipeline.app.config import AppConfig
from pipeline.core.errors import GalleryError
from pipeline.detect import MTCNN, detector_from_config
from pipeline.gallery import GalleryStore
from pipeline.recognise.embedder import Embedder


def make_embedder(cfg: AppConfig, model: Path) -> Embedder:
    return Embedder.from_config(model, cfg.engine, batch_size=cfg.run.embed_batch)


def make_detector(cfg: AppConfig, min_face_size: int | None = None) -> MTCNN:
    return detector_from_config(cfg.detector, min_face_size)


def open_gallery(client, gallery: str, fingerprint: str) -> GalleryStore:
    store = GalleryStore(client, gallery)
    meta = store.meta()
    if meta.get("dtype"):
        store = GalleryStore(client, gallery, dtype=meta["dtype"])
    bound = meta.get("fingerprint")
    if bound and bound != fingerprint:
        raise GalleryError(f"gallery {gallery!r} holds templates of model {bound}, but the embedder is model "
                           f"{fingerprint}: use the gallery's model (--model) or re-enrol into another gallery")
    return store


def set_threads() -> None:
    """One torch thread: the runner's own threads already keep both cores busy (see the module notes)."""
    import torch

    torch.set_num_threads(1)
