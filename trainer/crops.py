"""The aligned-crop cache: one folder of fixed-size RGB face crops, their labels, and what made them.

Layout of a finished cache folder:

- `crops.npy`   (N, H, W, 3) uint8 RGB, opened read-only as a memory map (`np.load(mmap_mode="r")`);
- `labels.npy`  (N,) int32, identity index of each crop into `meta["identities"]`;
- `meta.json`   identities, per-crop source path and status ("detected" | "centre_fallback"), per-image
  failures ("no_face" | "unreadable", with the reason), crop size, template, detector settings, counts.

A cache is complete exactly when `meta.json` exists; it is written last, atomically. While a cache is being
written, `progress.json` (replaced atomically after every chunk, once the crops it covers are flushed)
records how far the ordered source list has got; a restarted writer continues from there, overwriting any
crops written after the last commit, so an interrupted run never duplicates or loses a crop. `crops.npy` is
allocated for one crop per source image and shrunk in place to the real count when the cache is finalised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.core.errors import ConfigError, FacestreamError

log = logging.getLogger(__name__)

FORMAT = "facestream-crops"
VERSION = 1
CROPS_FILE = "crops.npy"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"
PROGRESS_FILE = "progress.json"
CROP_STATUSES = ("detected", "centre_fallback")
FAILURE_REASONS = ("no_face", "unreadable")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary sibling, fsync it, then rename over `path` (readers see old or new, never half)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def cache_fingerprint(sources: Sequence[str], labels: Sequence[int], identities: Sequence[str],
                      size: tuple[int, int], settings: dict[str, Any]) -> str:
    """What a cache was made from; a writer only resumes a folder whose fingerprint matches."""
    blob = json.dumps({"sources": list(sources), "labels": [int(x) for x in labels], "identities": list(identities),
                       "size": list(size), "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class CropCache:
    """A finished crop cache, opened read-only; `crops` is a memory map, so opening costs no RAM."""

    def __init__(self, folder: Path, crops: np.ndarray, labels: np.ndarray, meta: dict[str, Any]):
        self.folder = folder
        self.crops = crops
        self.labels = labels
        self.meta = meta

    @staticmethod
    def is_complete(folder: str | Path) -> bool:
        return (Path(folder) / META_FILE).is_file()

    @classmethod
    def open(cls, folder: str | Path) -> CropCache:
        folder = Path(folder)
        if not cls.is_complete(folder):
            hint = " (unfinished: re-run prepare to resume it)" if (folder / PROGRESS_FILE).exists() else ""
            raise FacestreamError(f"{folder} is not a finished crop cache: no {META_FILE}{hint}")
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise FacestreamError(f"{folder / META_FILE}: not a {FORMAT} v{VERSION} cache "
                                  f"(format={meta.get('format')!r}, version={meta.get('version')!r})")
        n = meta["counts"]["crops"]
        h, w = meta["size"]
        # np.memmap cannot map an empty file region, so an empty cache loads as a plain array.
        crops = np.load(folder / CROPS_FILE, mmap_mode="r" if n else None)
        labels = np.load(folder / LABELS_FILE)
        if crops.shape != (n, h, w, 3) or crops.dtype != np.uint8 or labels.shape != (n,):
            raise FacestreamError(f"{folder}: crops {crops.shape} {crops.dtype} / labels {labels.shape} do not match "
                                  f"meta.json (expected ({n}, {h}, {w}, 3) uint8 and ({n},))")
        return cls(folder, crops, labels, meta)

    @classmethod
    def create(cls, folder: str | Path, *, sources: Sequence[str], labels: Sequence[int],
               identities: Sequence[str], size: tuple[int, int], settings: dict[str, Any],
               chunk_size: int = 256) -> CropWriter:
        """A writer for `sources` (relative paths, in order); resumes an unfinished cache made from the same inputs."""
        return CropWriter(Path(folder), sources=sources, labels=labels, identities=identities, size=size,
                          settings=settings, chunk_size=chunk_size)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.meta["size"]
        return int(h), int(w)

    @property
    def identities(self) -> list[str]:
        return self.meta["identities"]

    @property
    def paths(self) -> list[str]:
        return self.meta["paths"]

    @property
    def status(self) -> list[str]:
        return self.meta["status"]

    @property
    def failures(self) -> list[dict[str, str]]:
        return self.meta["failures"]

    @property
    def counts(self) -> dict[str, int]:
        return self.meta["counts"]


class CropWriter:
    """Appends one outcome (a crop, or a failure) per source image, in source order, and commits in chunks."""

    def __init__(self, folder: Path, *, sources: Sequence[str], labels: Sequence[int], identities: Sequence[str],
                 size: tuple[int, int], settings: dict[str, Any], chunk_size: int = 256):
        if len(sources) != len(labels):
            raise ValueError(f"sources and labels must have the same length, got {len(sources)} and {len(labels)}")
        if not sources:
            raise ValueError("a crop cache needs at least one source image")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.folder = folder
        self.sources = list(sources)
        self.source_labels = [int(x) for x in labels]
        self.identities = list(identities)
        self.size = (int(size[0]), int(size[1]))
        self.settings = settings
        self.chunk_size = chunk_size
        self.fingerprint = cache_fingerprint(self.sources, self.source_labels, self.identities, self.size, settings)
        if CropCache.is_complete(folder):
            raise FacestreamError(f"{folder} already holds a finished crop cache; open it with CropCache.open")
        folder.mkdir(parents=True, exist_ok=True)
        self._state = self._resume_or_start()
        self._pending = 0

    @property
    def next_source(self) -> int:
        """Index into `sources` of the image whose outcome is added next."""
        return self._state["next_source"]

    @property
    def resumed_from(self) -> int:
        """How many source images were already committed when this writer opened the folder."""
        return self._resumed_from

    @property
    def counts(self) -> dict[str, int]:
        return _counts(self._state, len(self.sources), len(self.identities))

    def _resume_or_start(self) -> dict[str, Any]:
        progress = self.folder / PROGRESS_FILE
        shape = (len(self.sources), *self.size, 3)
        if progress.is_file() and (self.folder / CROPS_FILE).is_file():
            state = json.loads(progress.read_text(encoding="utf-8"))
            if state.get("fingerprint") != self.fingerprint:
                raise ConfigError(f"{self.folder} holds an unfinished crop cache made from other images or settings "
                                  f"(fingerprint {state.get('fingerprint')} != {self.fingerprint}); "
                                  "delete it or choose another output folder")
            self._resumed_from = state["next_source"]
            if state["next_source"] == len(self.sources):
                self._crops = None  # every outcome is in: only finalising (perhaps half done before) remains
                return state
            self._crops = np.lib.format.open_memmap(self.folder / CROPS_FILE, mode="r+")
            if self._crops.shape != shape or self._crops.dtype != np.uint8:
                raise FacestreamError(f"{self.folder / CROPS_FILE} has shape {self._crops.shape}, expected {shape}")
            self._resumed_from = state["next_source"]
            log.info("resuming crop cache %s at image %d of %d", self.folder, state["next_source"], len(self.sources))
            return state
        self._crops = np.lib.format.open_memmap(self.folder / CROPS_FILE, mode="w+", dtype=np.uint8, shape=shape)
        self._resumed_from = 0
        state = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "next_source": 0,
                 "paths": [], "labels": [], "status": [], "failures": []}
        write_json_atomic(progress, state)
        return state

    def _check_open(self) -> None:
        if self.next_source >= len(self.sources):
            raise FacestreamError(f"every one of the {len(self.sources)} source images already has an outcome")

    def add_crop(self, crop: np.ndarray, status: str) -> None:
        """Record the crop (H, W, 3) uint8 RGB made from source image `next_source`."""
        self._check_open()
        if status not in CROP_STATUSES:
            raise ValueError(f"crop status must be one of {CROP_STATUSES}, got {status!r}")
        expected = (*self.size, 3)
        if crop.shape != expected or crop.dtype != np.uint8:
            raise ValueError(f"crop must be uint8 with shape {expected}, got {crop.dtype} {crop.shape}")
        state = self._state
        self._crops[len(state["paths"])] = crop
        state["paths"].append(self.sources[state["next_source"]])
        state["labels"].append(self.source_labels[state["next_source"]])
        state["status"].append(status)
        self._advance()

    def add_failure(self, reason: str, detail: str = "") -> None:
        """Record that source image `next_source` gave no crop, and why."""
        self._check_open()
        if reason not in FAILURE_REASONS:
            raise ValueError(f"failure reason must be one of {FAILURE_REASONS}, got {reason!r}")
        self._state["failures"].append({"path": self.sources[self.next_source], "reason": reason, "detail": detail})
        self._advance()

    def _advance(self) -> None:
        self._state["next_source"] += 1
        self._pending += 1
        if self._pending >= self.chunk_size:
            self.commit()

    def commit(self) -> None:
        """Flush the crops added so far to disk, then record them as done (in that order)."""
        if self._pending == 0:
            return
        if self._crops is not None:
            self._crops.flush()
        write_json_atomic(self.folder / PROGRESS_FILE, self._state)
        self._pending = 0

    def finalise(self, extra_meta: dict[str, Any] | None = None) -> CropCache:
        """Shrink `crops.npy` to the crops made, write labels and `meta.json`, and open the finished cache."""
        if self.next_source != len(self.sources):
            raise FacestreamError(f"cannot finalise {self.folder}: {self.next_source} of {len(self.sources)} "
                                  "source images have an outcome")
        self.commit()
        state = self._state
        n = len(state["paths"])
        if self._crops is not None:
            self._crops.flush()
            self._crops = None  # close the mapping before the file under it is truncated
        _shrink_npy(self.folder / CROPS_FILE, n)
        labels_tmp = self.folder / f".{LABELS_FILE}.tmp.npy"
        np.save(labels_tmp, np.asarray(state["labels"], dtype=np.int32))
        os.replace(labels_tmp, self.folder / LABELS_FILE)
        # Settings (template, detector, fallback, ...) sit at the top level; the cache's own keys win.
        meta = {**self.settings, **(extra_meta or {}),
                "format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
                "size": list(self.size), "identities": self.identities,
                "paths": state["paths"], "status": state["status"], "failures": state["failures"],
                "counts": self.counts}
        write_json_atomic(self.folder / META_FILE, meta)
        (self.folder / PROGRESS_FILE).unlink()
        return CropCache.open(self.folder)


def _counts(state: dict[str, Any], images: int, identities: int) -> dict[str, int]:
    reasons = [f["reason"] for f in state["failures"]]
    return {"images": images, "processed": state["next_source"], "crops": len(state["paths"]),
            "detected": state["status"].count("detected"),
            "centre_fallback": state["status"].count("centre_fallback"),
            "no_face": reasons.count("no_face"), "unreadable": reasons.count("unreadable"),
            "identities": identities, "identities_with_crops": len(set(state["labels"]))}


def _shrink_npy(path: Path, n: int) -> None:
    """Cut a C-order `.npy` file to its first `n` rows in place: rewrite the shape in the header, truncate the data.

    The header is padded to a fixed length (NEP 1), and a smaller row count never needs more characters,
    so the data offset stays where it is. Idempotent: a file already holding `n` rows is left alone.
    """
    with open(path, "r+b") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        header_start = f.tell() + (2 if major == 1 else 4)
        shape, fortran_order, dtype = read_header(f)
        data_offset = f.tell()
        if fortran_order or not shape or n > shape[0]:
            raise FacestreamError(f"{path}: cannot shrink an array of shape {shape} to {n} rows")
        if shape[0] == n:
            return
        new_shape = (n, *shape[1:])
        text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": new_shape})
        room = data_offset - header_start - 1  # the header always ends with "\n"
        f.seek(header_start)
        f.write((text.ljust(room) + "\n").encode("latin1"))
        f.truncate(data_offset + n * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
