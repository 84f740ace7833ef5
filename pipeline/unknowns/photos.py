"""Unknown ids for the faces of a photo folder (`run.py --source DIR`): each unmatched face is a one-face track.

With sightings kept (`unknowns.keep`), faces join the gallery's unknown clusters in Redis, so a face of a
folder gets the id a camera gave the same person, and later runs find them; one re-clustering pass at the end
merges what the folder's order split. With nothing kept, the folder is clustered in memory by the same rule
and its ids mean something within this run only.
"""

from __future__ import annotations

import secrets
import time

import numpy as np

from pipeline.unknowns.clustering import OnlineClusters
from pipeline.unknowns.directory import UnknownDirectory
from pipeline.unknowns.sightings import Seen

PHOTOS_CAMERA = "photos"


class PhotoClusters:
    """`assign(...)` per unmatched face -> its unknown id; `finish()` -> {old id: surviving id} after re-clustering."""

    def __init__(self, directory: UnknownDirectory | None = None, online: OnlineClusters | None = None):
        if (directory is None) == (online is None):
            raise ValueError("PhotoClusters needs exactly one of a directory (kept) or online clusters (not kept)")
        self.directory, self.online = directory, online
        self._salt = secrets.randbits(32)  # in-memory ids: unlike any earlier run's

    def assign(self, embedding: np.ndarray, photo: str, quality: float, crop: np.ndarray | None) -> str:
        if self.online is not None:
            return self._memory_id(self.online.assign(np.asarray(embedding)[None, :], [max(quality, 1e-3)]))
        seen = Seen(embedding, PHOTOS_CAMERA, photo[-200:], time.time(), quality, crop)
        return self.directory.assign([seen]).cluster_id

    def finish(self) -> dict[str, str]:
        if self.online is not None:
            return {self._memory_id(c): self._memory_id(group[0])
                    for group in self.online.recluster() for c in group[1:]}
        return {old: merge.survivor for merge in self.directory.recluster() for old in merge.merged}

    def _memory_id(self, index: int) -> str:
        return f"unknown-{(self._salt + index) % 2**32:08x}"
