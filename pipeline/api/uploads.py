"""An uploaded photo decoded as the CLIs decode a file (pipeline.core.images.decode_image: the same checks,
the console's pixel limit)."""

from __future__ import annotations

import numpy as np

from pipeline.api.services import Services
from pipeline.core.images import decode_image


def decode(svc: Services, name: str, data: bytes) -> np.ndarray:
    return decode_image(data, name, svc.limits.max_upload_pixels)
