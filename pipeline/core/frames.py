"""`Frame`: one decoded image from one camera, the record every later stage starts from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import SourceError


@dataclass(frozen=True)
class Frame:
    """Image `index` (0, 1, ... per camera, counting dropped frames too) of `camera`.

    `timestamp`: wall clock (`time.time()`) at capture for live sources; media time in seconds
    (the container's presentation time) for files, so results on a file do not depend on how fast
    it was read. `image`: BGR uint8, (H, W, 3).
    """

    camera: str
    index: int
    timestamp: float
    image: np.ndarray

    def __post_init__(self) -> None:
        # Cheap checks only (no copy): a wrong layout here would surface much later as a detector error.
        image = self.image
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = (f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__)
            raise SourceError(f"frame {self.index} of {self.camera!r}: image must be BGR uint8 (H, W, 3), got {got}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
