"""Inference backends behind one interface, created by name: `create_engine("onnxruntime", model_path=...)`.

Importing this package is cheap: backends (onnxruntime, torch, tensorrt/pycuda) load only when an
engine that needs them is created. The ONNX exporter lives in `engines.onnx_export` for the same reason.
"""

from engines.base import Engine, TensorSpec, validate_feeds
from engines.registry import available_engines, create_engine, known_engines, register_engine

__all__ = [
    "Engine",
    "TensorSpec",
    "available_engines",
    "create_engine",
    "known_engines",
    "register_engine",
    "validate_feeds",
]
