"""Embedding models created by name, timm-style; preprocessing travels with the model.

Every model maps a float32 batch (N, 3, H, W), RGB, already normalised by its `Preprocess`, to
(N, embedding_dim) unit-length embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pipeline.core.errors import ConfigError


@dataclass(frozen=True)
class Preprocess:
    """How an aligned uint8 RGB crop becomes the model's input: (pixel - mean) / std, per channel."""

    input_size: tuple[int, int]  # (height, width) of the aligned crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_MODELS: dict[str, tuple[Callable[..., torch.nn.Module], Preprocess]] = {}


def register_model(name: str, preprocess: Preprocess):
    """Decorator: make `create_model(name)` build the decorated class or factory."""

    def wrap(factory):
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = (factory, preprocess)
        return factory

    return wrap


def create_model(name: str, **kwargs) -> torch.nn.Module:
    factory, _ = _lookup(name)
    return factory(**kwargs)


def model_preprocess(name: str) -> Preprocess:
    return _lookup(name)[1]


def list_models() -> list[str]:
    return sorted(_MODELS)


def _lookup(name: str):
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS)) or 'none'}")
    return _MODELS[name]
