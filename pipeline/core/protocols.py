"""The roles the parts play for each other, as small protocols: whatever detects faces, embeds them, or matches
embeddings can stand in for the shipped MTCNN, `Embedder` and `Matcher` (tests, other models, a remote service).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from pipeline.core.faces import Faces
from pipeline.core.model_card import ModelCard


class Detector(Protocol):
    """Faces with 5 landmarks in BGR images: one `Faces` per image, in order."""

    def detect(self, images: Sequence[np.ndarray]) -> list[Faces]: ...

    def detect_one(self, image: np.ndarray) -> Faces: ...


class Embedder(Protocol):
    """Aligned crops of faces as the model card says, and their unit-length embeddings."""

    card: ModelCard
    size: tuple[int, int]  # crop (height, width)
    template: np.ndarray  # (5, 2) landmark positions in the crop

    @property
    def fingerprint(self) -> str: ...

    def crops(self, image_bgr: np.ndarray, faces: Faces) -> np.ndarray: ...

    def embed(self, crops_rgb: np.ndarray) -> np.ndarray: ...


class Matcher(Protocol):
    """One `Match` per embedding (pipeline.gallery.matcher.Match: an identity or unknown)."""

    def match(self, embeddings: np.ndarray) -> list: ...
