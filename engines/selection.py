"""`engine: auto`: the fastest engine that works here, in a fixed preference order.

`is_available()` is only a cheap first filter: for the ORT GPU engines it says the provider is in this
onnxruntime build, and onnxruntime#13501 shows TensorRT listed where no TensorRT is installed. So the real
test is construction: `create_preferred` builds engines in preference order and falls through to the next on
EngineError, logging why each faster one was skipped, so a GPU box quietly running on CPU shows up in the
first lines of the log. `choose_engine` (a name only, no construction) stays for reports such as bench/.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engines.base import Engine
from engines.registry import available_engines, create_engine, engine_class
from pipeline.core.errors import EngineError

log = logging.getLogger(__name__)

PREFERENCE: tuple[str, ...] = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime")


def choose_engine(preference: Sequence[str] = PREFERENCE, available: Iterable[str] | None = None) -> str:
    """The first name of `preference` that says it is available; logs why others lost. Constructs nothing."""
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


def create_preferred(
    model_path: str | Path,
    preference: Sequence[str] = PREFERENCE,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Engine:
    """The first engine of `preference` that constructs on `model_path` (with `options[name]`), falling through
    on EngineError; raises EngineError listing every reason when none does."""
    if not preference:
        raise EngineError("engine preference list is empty")
    options = options or {}
    skipped: list[str] = []
    for name in preference:
        reason = _unavailable_reason(name)
        if reason is None:
            try:
                engine = create_engine(name, model_path=model_path, **dict(options.get(name, {})))
            except EngineError as exc:
                reason = f"failed to start: {exc}"
            else:
                if skipped:
                    log.warning("engine auto: chose %s; skipped %s", name, "; ".join(skipped))
                else:
                    log.info("engine auto: chose %s (first preference)", name)
                return engine
        log.info("engine auto: skipping %s (%s)", name, reason)
        skipped.append(f"{name} ({reason})")
    raise EngineError(f"engine auto: none of {list(preference)} works here: {'; '.join(skipped)}")


def _unavailable_reason(name: str) -> str | None:
    """Why `name` cannot even be tried here, or None when its class imports and `is_available()` is true."""
    try:
        cls = engine_class(name)
    except EngineError as exc:
        return str(exc)
    is_available = getattr(cls, "is_available", None)
    if is_available is not None and not is_available():
        return "is_available() is False on this machine"
    return None


def _why_unavailable(name: str) -> str:
    """A short reason for the log: unknown, failed to import, or says it cannot run here."""
    return _unavailable_reason(name) or "is_available() is False on this machine"
