"""TensorRT engine: runs a serialized plan (or an ONNX built through engines.build's cache) on one GPU.

Name-based I/O (TensorRT 10+): tensors are found by name, each call sets the input shapes and runs
`execute_async_v3` on one stream. Buffers are sized once for the profile's max batch; a larger batch is
split into chunks of that size. tensorrt and pycuda are imported only when an engine is constructed.

One stream, one execution context and one set of pinned buffers serve every call, so `run` holds a lock: the
detector and recogniser threads may share an engine, but their batches run one after the other. The engine
retains the device's primary context on the thread that creates it and must be closed on that thread.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path

import numpy as np

from engines.base import (
    ClosingEngine,
    TensorSpec,
    empty_outputs,
    require_dynamic_batch,
    validate_feeds,
)
from engines.build import BuildOptions, build_plan, import_tensorrt, trt_logger
from engines.cuda_buffers import (
    CudaStream,
    HostDeviceBuffer,
    check,
    import_pycuda,
    release_primary_context,
    run_in,
)
from engines.registry import register_engine
from pipeline.core.errors import EngineError

log = logging.getLogger(__name__)


def io_specs(trt, engine) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The plan's inputs and outputs as TensorSpecs, by name; EngineError for a type numpy cannot hold."""
    inputs, outputs = [], []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
        trt_dtype = engine.get_tensor_dtype(name)
        try:
            dtype = np.dtype(trt.nptype(trt_dtype))
        except TypeError as exc:  # trt.nptype raises a bare TypeError for BF16, FP8, INT4, FP4
            raise EngineError(
                f"TensorRT tensor {name!r} has type {trt_dtype}, which has no numpy equivalent; "
                f"rebuild with float32/float16 I/O ({exc})"
            ) from exc
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        (inputs if is_input else outputs).append(TensorSpec(name, shape, dtype))
    return inputs, outputs


@register_engine("tensorrt")
class TensorRTEngine(ClosingEngine):
    """A TensorRT plan on CUDA device `device`, with the same `run` contract as the ONNX Runtime engine."""

    name = "tensorrt"

    def __init__(
        self,
        model_path: str | Path,
        max_batch: int = 32,
        device: int = 0,
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
    ) -> None:
        if not self.is_available():
            raise EngineError(
                "the tensorrt engine needs the tensorrt and pycuda packages, which are not installed here "
                "(pip install tensorrt pycuda on a machine with an NVIDIA GPU); use engine 'onnxruntime' instead"
            )
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise EngineError(f"model not found: {self.model_path}")
        self._trt = import_tensorrt()
        self._cuda = import_pycuda()
        self._lock = threading.Lock()
        self._owner_thread = threading.get_ident()
        self._cuda_context = check(
            lambda: self._cuda.Device(device).retain_primary_context(), f"CUDA device {device}"
        )
        self._buffers: dict[str, HostDeviceBuffer] = {}
        self._context = None
        try:
            run_in(self._cuda_context, lambda: self._load(max_batch, device, precision, cache_dir))
        except BaseException:
            self.close()
            raise
        log.info("loaded %s on cuda:%d (max batch %d)", self.plan_path, device, self.max_batch)

    @classmethod
    def is_available(cls) -> bool:
        """True when tensorrt and pycuda import and CUDA finds a device; never raises."""
        if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("pycuda") is None:
            return False
        try:
            return import_pycuda().Device.count() > 0
        except Exception:  # noqa: BLE001 — no driver, no device, broken install: all mean "not here"
            return False

    def _load(self, max_batch: int, device: int, precision: str, cache_dir: str | Path | None) -> None:
        if self.model_path.suffix == ".onnx":
            options = BuildOptions(precision=precision, max_batch=max_batch)
            self.plan_path = build_plan(self.model_path, options, cache_dir, device)
        else:
            self.plan_path = self.model_path
        self._runtime = self._trt.Runtime(trt_logger(self._trt))
        self._engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self._engine is None:
            raise EngineError(
                f"TensorRT {self._trt.__version__} could not deserialize {self.plan_path}; a plan only loads on "
                "the TensorRT version and GPU architecture that built it (rebuild it with python -m engines.build)"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError(f"TensorRT could not create an execution context for {self.plan_path}")
        self.inputs, self.outputs = io_specs(self._trt, self._engine)
        require_dynamic_batch(self.inputs, str(self.plan_path))
        self.max_batch = min(self._engine.get_tensor_profile_shape(s.name, 0)[2][0] for s in self.inputs)
        self._stream = CudaStream()
        self._allocate()

    def _allocate(self) -> None:
        """Set every input to its max profile shape, read the outputs' max shapes, bind one buffer per tensor."""
        for spec in self.inputs:
            max_shape = tuple(self._engine.get_tensor_profile_shape(spec.name, 0)[2])
            max_shape = (self.max_batch, *max_shape[1:])
            check(self._context.set_input_shape(spec.name, max_shape), f"set_input_shape({spec.name!r})")
            self._buffers[spec.name] = HostDeviceBuffer(spec.name, max_shape, spec.dtype)
        for spec in self.outputs:
            max_shape = tuple(self._context.get_tensor_shape(spec.name))
            if any(d < 0 for d in max_shape):
                raise EngineError(f"output {spec.describe()} has a data-dependent shape; not supported")
            self._buffers[spec.name] = HostDeviceBuffer(spec.name, max_shape, spec.dtype)
        for name, buffer in self._buffers.items():
            check(self._context.set_tensor_address(name, buffer.address), f"set_tensor_address({name!r})")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._context is None:
            raise EngineError(f"engine for {self.model_path} is closed")
        batch = validate_feeds(self.inputs, feeds)
        if batch == 0:
            return empty_outputs(self.outputs)
        # One stream and one set of pinned buffers: a second caller would overwrite the first one's staging.
        with self._lock:
            if self._context is None:  # closed by another thread while this call waited
                raise EngineError(f"engine for {self.model_path} is closed")
            chunks = []
            for start in range(0, batch, self.max_batch):
                part = {name: array[start : start + self.max_batch] for name, array in feeds.items()}
                chunks.append(run_in(self._cuda_context, lambda part=part: self._run_chunk(part)))
        if len(chunks) == 1:
            return chunks[0]
        return {spec.name: np.concatenate([c[spec.name] for c in chunks]) for spec in self.outputs}

    def _run_chunk(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        stream = self._stream
        for spec in self.inputs:
            array = np.ascontiguousarray(feeds[spec.name])
            check(self._context.set_input_shape(spec.name, array.shape), f"set_input_shape({spec.name!r})")
            self._buffers[spec.name].to_device(array, stream.stream)
        check(self._context.execute_async_v3(stream.handle), f"execute_async_v3 on {self.plan_path}")
        staged = {}
        for spec in self.outputs:
            shape = tuple(self._context.get_tensor_shape(spec.name))
            staged[spec.name] = self._buffers[spec.name].to_host(shape, stream.stream)
        stream.synchronize()
        return {name: array.copy() for name, array in staged.items()}  # pinned memory is reused next call

    def close(self) -> None:
        """Free the buffers and TensorRT objects now (context before engine), then release the CUDA context.

        Must run on the thread that created the engine: pycuda skips `detach()` from any other thread, which
        would leak the retained primary context.
        """
        if getattr(self, "_cuda_context", None) is None:
            return
        if threading.get_ident() != self._owner_thread:
            raise EngineError(
                f"close the TensorRT engine for {self.model_path} on the thread that created it; pycuda cannot "
                "release its CUDA context from another thread"
            )
        with self._lock:
            buffers, self._buffers = self._buffers, {}

            def release() -> None:
                for buffer in buffers.values():
                    buffer.close()
                self._context = None
                self._engine = None
                self._runtime = None
                self._stream = None

            context, self._cuda_context = self._cuda_context, None
            try:
                run_in(context, release)
            finally:
                release_primary_context(self._cuda, context)

    def __repr__(self) -> str:
        return f"TensorRTEngine({str(self.model_path)!r}, max_batch={getattr(self, 'max_batch', '?')})"
