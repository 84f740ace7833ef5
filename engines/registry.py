"""Engines created by name, timm-style: `create_engine("onnxruntime", model_path=...)`.

Built-in engines live in their own modules and are imported only when asked for, so `import engines` never
pulls in torch, onnxruntime, tensorrt or pycuda, and a machine missing one backend can still use the
others. A registered engine class may define `is_available() -> bool` (a classmethod) to say whether its
backend works on this machine; `available_engines()` reports the names that import and say yes.
`engine: auto` is not a registered name: `engines.selection.create_preferred` builds the first of these that starts.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from engines.base import Engine
from pipeline.core.errors import EngineError

log = logging.getLogger(__name__)

# name -> module that registers it on import.
BUILTIN_MODULES: dict[str, str] = {
    "onnxruntime": "engines.onnxruntime_engine",
    "torch": "engines.torch_engine",
    "tensorrt": "engines.tensorrt_engine",
    "triton": "engines.triton",
    "torch-cuda": "engines.torch_cuda_engine",
    "onnxruntime-cuda": "engines.ort_gpu",
    "onnxruntime-tensorrt": "engines.ort_gpu",
}

_REGISTRY: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_engine(name: str) -> Callable[[T], T]:
    """Class decorator: make `create_engine(name, **options)` construct this class with `options`."""

    def decorate(cls: T) -> T:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise EngineError(f"engine name {name!r} is already registered to {existing.__qualname__}")
        _REGISTRY[name] = cls
        return cls

    return decorate


def known_engines() -> list[str]:
    """Every name `create_engine` recognises, whether or not its backend works here."""
    return sorted(set(_REGISTRY) | set(BUILTIN_MODULES))


def engine_class(name: str) -> type:
    """The class registered under `name`, importing its built-in module on first use."""
    if name not in _REGISTRY and name in BUILTIN_MODULES:
        try:
            importlib.import_module(BUILTIN_MODULES[name])
        except ImportError as exc:
            raise EngineError(f"engine {name!r} is not usable here: its backend failed to import ({exc})") from exc
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EngineError(f"unknown engine {name!r}; known engines: {', '.join(known_engines())}") from None


def create_engine(name: str, **options: Any) -> Engine:
    """Construct the engine registered as `name` with `options` (its constructor's keyword arguments)."""
    cls = engine_class(name)
    try:
        # Bind before calling so a wrong keyword from config is reported as such, not as a TypeError from inside.
        inspect.signature(cls).bind(**options)
    except TypeError as exc:
        raise EngineError(f"engine {name!r} does not accept options {sorted(options)}: {exc}") from exc
    return cls(**options)


def available_engines() -> list[str]:
    """Names whose backend imports and reports itself usable on this machine, sorted."""
    names = []
    for name in known_engines():
        try:
            cls = engine_class(name)
        except EngineError as exc:
            log.debug("engine %s unavailable: %s", name, exc)
            continue
        is_available = getattr(cls, "is_available", None)
        if is_available is None or is_available():
            names.append(name)
    return names
