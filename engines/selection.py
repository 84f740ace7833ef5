"""`engine: auto`: the fastest engine that is installed and working here, in a fixed preference order.

Working means the registered class imports and its `is_available()` says yes (CUDA present for torch-cuda,
the provider in this onnxruntime build for the ORT GPU engines, a GPU and the TensorRT runtime for tensorrt).
The choice and the reason each faster engine was skipped are logged, so a GPU box quietly running on CPU
shows up in the first lines of the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from engines.registry import available_engines, engine_class
from pipeline.core.errors import EngineError

log = logging.getLogger(__name__)

PREFERENCE: tuple[str, ...] = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime")


def choose_engine(preference: Sequence[str] = PREFERENCE, available: Iterable[str] | None = None) -> str:
    """The first name of `preference` that is available (`available_engines()` unless given); logs why others lost."""
    if not preference:
        raise EngineError("engine preference list is empty")
    usable = set(available_engines() if available is None else available)
    skipped = []
    for name in preference:
        if name in usable:
            if skipped:
                log.info("engine auto: chose %s; skipped %s", name, "; ".join(skipped))
            else:
                log.info("engine auto: chose %s (first preference)", name)
            return name
        skipped.append(f"{name} ({_why_unavailable(name)})")
    raise EngineError(f"engine auto: none of {list(preference)} is usable here: {'; '.join(skipped)}")


def _why_unavailable(name: str) -> str:
    """A short reason for the log: unknown, failed to import, or says it cannot run here."""
    try:
        engine_class(name)
    except EngineError as exc:
        return str(exc)
    return "is_available() is False on this machine"
