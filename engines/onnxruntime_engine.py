"""ONNX Runtime engine: runs an ONNX file on CUDA or CPU, and refuses to fall back silently.

ORT quietly drops a requested execution provider that is missing from the build or fails to initialise
(e.g. CUDA without cuDNN) and runs on CPU instead; a "GPU" worker would then be 20x slower with no error.
So the provider list is built from `get_available_providers()` and checked against `session.get_providers()`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument, InvalidGraph, InvalidProtobuf

from engines.base import ClosingEngine, TensorSpec, empty_outputs, require_dynamic_batch, validate_feeds
from engines.registry import register_engine
from pipeline.core.errors import EngineError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

# ORT's element type strings -> numpy. Types outside this table (sequences, maps, bfloat16) are refused.
ORT_DTYPES: dict[str, np.dtype] = {
    f"tensor({ort_name})": np.dtype(np_name)
    for ort_name, np_name in [
        ("float", "float32"), ("float16", "float16"), ("double", "float64"),
        ("int8", "int8"), ("int16", "int16"), ("int32", "int32"), ("int64", "int64"),
        ("uint8", "uint8"), ("uint16", "uint16"), ("uint32", "uint32"), ("uint64", "uint64"),
        ("bool", "bool"),
    ]
}  # fmt: skip

# Errors ORT raises when the bytes are not a loadable ONNX graph (text, JPEG, truncated or empty file).
_NOT_ONNX_ERRORS = (InvalidProtobuf, InvalidGraph, InvalidArgument)


def resolve_providers(requested: list[str] | None, available: list[str], allow_fallback: bool) -> list[str]:
    """The provider list to hand ORT: CUDA then CPU by default, else `requested` filtered to what exists.

    Azure's provider (present in stock wheels) calls remote endpoints, so it is never chosen by default.
    """
    if requested is None:
        return [CUDA, CPU] if CUDA in available else [CPU]
    if not requested:
        raise EngineError("providers must name at least one ONNX Runtime execution provider, got []")
    missing = [p for p in requested if p not in available]
    if missing and not allow_fallback:
        raise EngineError(
            f"execution providers {missing} are not available in this onnxruntime build "
            f"(available: {available}); install the matching onnxruntime package or set allow_fallback"
        )
    if missing:
        log.warning("execution providers %s not available (have %s); falling back as allowed", missing, available)
    kept = [p for p in requested if p in available]
    return kept or [CPU]


def verify_providers(requested: list[str], actual: list[str], allow_fallback: bool) -> None:
    """Raise EngineError if the session dropped any requested provider (warn instead when fallback is allowed)."""
    dropped = [p for p in requested if p not in actual]
    if not dropped:
        return
    message = (
        f"onnxruntime fell back silently: requested {requested}, but the session uses {actual} "
        f"({dropped} failed to initialise; ORT's own log above says why)"
    )
    if not allow_fallback:
        raise EngineError(message)
    log.warning("%s; continuing because allow_fallback is set", message)


def specs_from_session(nodes: list, model: Path) -> list[TensorSpec]:
    """TensorSpecs from `session.get_inputs()`/`get_outputs()`, mapping ORT type strings to numpy dtypes."""
    specs = []
    for node in nodes:
        if node.type not in ORT_DTYPES:
            raise EngineError(f"{model}: tensor {node.name!r} has unsupported type {node.type}")
        # ORT reports dynamic dims as a symbolic name (str) or None; a negative int also means unknown.
        shape = tuple(None if isinstance(d, int) and d < 0 else d for d in node.shape)
        specs.append(TensorSpec(node.name, shape, ORT_DTYPES[node.type]))
    return specs


@register_engine("onnxruntime")
class OnnxRuntimeEngine(ClosingEngine):
    """An ONNX model in an ORT InferenceSession; `providers` is what the session really runs on.

    `memory_pattern=False` for models whose input shapes change from call to call (MTCNN: every pyramid level
    and every batch of crops is a new shape): ORT plans and keeps an allocation pattern per shape, which then
    costs time on every call and memory for good (MTCNN on 1,500 crops of random sizes: 566 vs 374 MB RSS and
    16.1 vs 12.0 CPU s); with fixed shapes it makes no difference measured.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        providers: list[str] | None = None,
        allow_fallback: bool = False,
        threads: int = 0,
        memory_pattern: bool = True,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise EngineError(f"ONNX model not found: {self.model_path}")
        if threads < 0:
            raise EngineError(f"threads must be >= 0 (0 lets onnxruntime decide), got {threads}")
        requested = resolve_providers(providers, ort.get_available_providers(), allow_fallback)
        self._session: ort.InferenceSession | None = self._open_session(requested, threads, memory_pattern)
        self.providers: list[str] = self._session.get_providers()
        verify_providers(requested, self.providers, allow_fallback)
        self.inputs = specs_from_session(self._session.get_inputs(), self.model_path)
        self.outputs = specs_from_session(self._session.get_outputs(), self.model_path)
        require_dynamic_batch(self.inputs, str(self.model_path))
        log.info("loaded %s on %s", self.model_path, self.providers)

    @classmethod
    def is_available(cls) -> bool:
        return CPU in ort.get_available_providers() or CUDA in ort.get_available_providers()

    def _open_session(self, providers: list[str], threads: int, memory_pattern: bool) -> ort.InferenceSession:
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.enable_mem_pattern = memory_pattern
        try:
            return ort.InferenceSession(str(self.model_path), sess_options=options, providers=providers)
        except _NOT_ONNX_ERRORS as exc:
            raise EngineError(f"{self.model_path} is not a valid ONNX model: {exc}") from exc
        except Exception as exc:  # ORT's other pybind errors share no base class but Exception
            raise EngineError(f"onnxruntime could not load {self.model_path} with {providers}: {exc}") from exc

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise EngineError(f"engine for {self.model_path} is closed")
        if validate_feeds(self.inputs, feeds) == 0:
            return empty_outputs(self.outputs)
        names = [spec.name for spec in self.outputs]
        try:
            results = self._session.run(names, feeds)
        except Exception as exc:  # a failure inside the graph (e.g. a shape the model cannot take)
            raise EngineError(f"onnxruntime failed running {self.model_path}: {exc}") from exc
        return dict(zip(names, results, strict=True))

    def close(self) -> None:
        self._session = None


    def __repr__(self) -> str:
        return f"OnnxRuntimeEngine({str(self.model_path)!r}, providers={self.providers})"
