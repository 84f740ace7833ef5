"""Embeddings of raw images by the shipped pipeline, cached on disk so that each image is embedded once.

`trainer calibrate` embeds thousands of LFW images (MTCNN + the card's alignment + the embedder, exactly as
`trainer eval` does: `FaceCropper`'s face choice, centre-crop fallback); `bench.openset` needs many of the
same images. Both go through `EmbeddingCache.embed`, which embeds only the images it has not seen and keeps
the rest, keyed by the path relative to the image root. One cache file per (model fingerprint, detector
settings, image root); the file is rewritten every `save_every` images, so an interrupted run keeps its work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.core.errors import EngineError
from pipeline.core.images import read_image
from trainer.prepare import FaceCropper, detector_settings

log = logging.getLogger(__name__)

EmbedFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Embedded:
    """Unit embeddings (N, D) in the order asked for, and per image "detected" or "centre_fallback"."""

    embeddings: np.ndarray
    status: np.ndarray

    @property
    def no_detection(self) -> int:
        return int(np.sum(self.status != "detected"))


class EmbeddingCache:
    """`EmbeddingCache(folder, root, fingerprint, cropper).embed(paths, embed_fn) -> Embedded`."""

    def __init__(self, folder: str | Path, root: str | Path, fingerprint: str, cropper: FaceCropper,
                 *, flip_average: bool = False, test_time_shifts=(), save_every: int = 512):
        self.root = Path(os.path.abspath(root))  # not resolve(): a tree of symlinked folders stays one tree
        self.cropper = cropper
        settings = {"root": str(self.root), "fingerprint": fingerprint, "size": list(cropper.size),
                    "template": np.round(cropper.template, 2).tolist(), "fallback": cropper.fallback,
                    "fallback_fraction": cropper.fallback_fraction, "detector": detector_settings(cropper.detector)}
        if flip_average:  # only when set, so the files written before the option keep their names
            settings["flip_average"] = True
        if test_time_shifts:
            settings["test_time_shifts"] = [list(shift) for shift in test_time_shifts]
        self.settings = settings
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        self.path = Path(folder) / f"{fingerprint}-{self.root.parent.name}-{self.root.name}-{digest}.npz"
        self.save_every = save_every
        self._rows: dict[str, tuple[np.ndarray, str]] = self._load()

    def __len__(self) -> int:
        return len(self._rows)

    def key(self, path: str | Path) -> str:
        return Path(os.path.abspath(path)).relative_to(self.root).as_posix()

    def embed(self, paths: Sequence[str | Path], embed_fn: EmbedFn, *, batch_size: int = 64,
              detect_batch_size: int = 16, progress: bool = True, desc: str = "embed") -> Embedded:
        """Embeddings of `paths` (under the root), computing and caching the ones not cached yet."""
        keys = [self.key(p) for p in paths]
        missing = list(dict.fromkeys(k for k in keys if k not in self._rows))
        if missing:
            log.info("%s: embedding %d of %d images (%d cached)", self.path.name, len(missing), len(keys),
                     len(keys) - len(missing))
            self._compute(missing, embed_fn, batch_size, detect_batch_size, progress, desc)
        rows = [self._rows[k] for k in keys]
        embeddings = np.stack([r[0] for r in rows]) if rows else np.zeros((0, 0), np.float32)
        return Embedded(embeddings, np.asarray([r[1] for r in rows]))

    def _compute(self, keys: list[str], embed_fn: EmbedFn, batch_size: int, detect_batch_size: int,
                 progress: bool, desc: str) -> None:
        since_save = 0
        for batch, vectors, statuses in embedded_batches(keys, lambda key: read_image(self.root / key), self.cropper,
                                                         embed_fn, batch_size, detect_batch_size, progress, desc):
            self._rows.update({key: (vector, status) for key, vector, status in zip(batch, vectors, statuses)})
            since_save += len(batch)
            if since_save >= self.save_every:
                self.save()
                since_save = 0
        self.save()

    def save(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._rows)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.asarray(keys), embeddings=np.stack([self._rows[k][0] for k in keys]),
                 status=np.asarray([self._rows[k][1] for k in keys]),
                 settings=np.asarray(json.dumps(self.settings, default=str)))
        tmp.replace(self.path)
        return self.path

    def _load(self) -> dict[str, tuple[np.ndarray, str]]:
        if not self.path.is_file():
            return {}
        with np.load(self.path) as data:
            keys, embeddings, status = data["keys"].tolist(), data["embeddings"], data["status"].tolist()
        log.info("%s: %d cached embeddings", self.path, len(keys))
        return {k: (embeddings[i], status[i]) for i, k in enumerate(keys)}


def embedded_batches(items: Sequence, read: Callable[[Any], np.ndarray], cropper: FaceCropper, embed_fn: EmbedFn,
                     batch_size: int = 64, detect_batch_size: int = 16, progress: bool = True,
                     desc: str = "embed") -> Iterator[tuple[list, np.ndarray, list[str]]]:
    """(items, unit embeddings, crop statuses) in order, a chunk at a time: `read(item)` images are detected and
    cropped `detect_batch_size` at a time, and embedded once `batch_size` crops are waiting (tqdm progress)."""
    pending: list[tuple[Any, Any]] = []
    with tqdm(total=len(items), unit="img", desc=desc, disable=not progress) as bar:
        for start in range(0, len(items), detect_batch_size):
            batch = items[start:start + detect_batch_size]
            pending.extend(zip(batch, cropper.crop([read(item) for item in batch]), strict=True))
            bar.update(len(batch))
            if len(pending) >= batch_size or start + detect_batch_size >= len(items):
                vectors = unit_embeddings(embed_fn, np.stack([outcome.crop for _, outcome in pending]))
                yield [item for item, _ in pending], vectors, [outcome.status for _, outcome in pending]
                pending = []


def unit_embeddings(embed_fn: EmbedFn, crops: np.ndarray) -> np.ndarray:
    """`embed_fn(crops)` checked for shape and finiteness, rows scaled to unit length (cosine = dot product)."""
    out = np.asarray(embed_fn(crops), dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != crops.shape[0]:
        raise EngineError(f"embed_fn must return ({crops.shape[0]}, D) embeddings for {crops.shape[0]} crops, "
                          f"got shape {out.shape}")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    if not np.all(np.isfinite(out)) or np.any(norms == 0):
        raise EngineError("embed_fn returned non-finite or all-zero embeddings")
    return out / norms


def pipeline_cache(folder: str | Path, root: str | Path, embedder, detector, *,
                   fallback_fraction: float) -> EmbeddingCache:
    """The cache of `embedder` (the card's input size, template and fingerprint) behind `detector`, with the
    face choice and centre-crop fallback of `trainer eval`."""
    cropper = FaceCropper(detector, embedder.size, embedder.template, fallback="centre",
                          fallback_fraction=fallback_fraction)
    return EmbeddingCache(folder, root, embedder.fingerprint, cropper, flip_average=embedder.card.flip_average,
                          test_time_shifts=embedder.card.test_time_shifts)
