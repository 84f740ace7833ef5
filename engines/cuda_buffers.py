"""CUDA memory for the TensorRT engine, through pycuda: pinned host + device buffers that free themselves.

`check` is the one place a CUDA/TensorRT status becomes an EngineError: pycuda raises `pycuda.driver.Error`
subclasses, TensorRT's Python calls return False on failure, and a raw CUDA API returns a nonzero code.
pycuda is imported inside functions only, so this module imports on machines without CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.core.errors import EngineError


def import_pycuda():
    """`pycuda.driver`, initialised; EngineError saying what is missing when pycuda or the driver is absent."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise EngineError(
            f"pycuda is not installed here (pip install pycuda; needs the CUDA toolkit): {exc}"
        ) from exc
    try:
        cuda.init()
    except Exception as exc:  # pycuda.driver.Error when there is no driver or device
        raise EngineError(f"CUDA driver could not initialise: {exc}") from exc
    return cuda


def check(status_or_call: Any, what: str = "CUDA call") -> Any:
    """Raise EngineError naming `what` if the status says failure; return the call's result otherwise.

    Accepts a zero-argument callable (a pycuda call: its exceptions become EngineError), a bool (TensorRT's
    `set_input_shape`/`set_tensor_address`/`execute_async_v3`: False is failure), an int status (0 is
    success) or a `(status, *results)` tuple as cuda-python returns (the results are returned).
    """
    if callable(status_or_call):
        try:
            return status_or_call()
        except EngineError:
            raise
        except Exception as exc:  # pycuda.driver.{LogicError,RuntimeError,MemoryError} share only Exception
            raise EngineError(f"{what} failed: {exc}") from exc
    status, results = status_or_call, ()
    if isinstance(status, tuple):
        status, *results = status
    if isinstance(status, bool):
        failed = not status
    elif isinstance(status, int) or hasattr(status, "value"):
        failed = int(getattr(status, "value", status)) != 0
    else:
        raise EngineError(
            f"{what}: cannot read status {status!r} ({type(status).__name__})"
        )
    if failed:
        raise EngineError(f"{what} failed (status {status!r})")
    return results[0] if len(results) == 1 else (tuple(results) if results else status)


def device_compute_capability(device: int = 0) -> tuple[int, int]:
    """(major, minor) of CUDA device `device`, e.g. (9, 0) on an H100/H200."""
    cuda = import_pycuda()
    count = check(cuda.Device.count, "cuDeviceGetCount")
    if not 0 <= device < count:
        raise EngineError(
            f"CUDA device {device} does not exist; this machine has {count}"
        )
    return tuple(
        check(
            lambda: cuda.Device(device).compute_capability(),
            "cuDeviceComputeCapability",
        )
    )


def device_name(device: int = 0) -> str:
    """The GPU's product name, e.g. "NVIDIA H200": part of the plan key, since sm_90 alone is H100 and H200."""
    cuda = import_pycuda()
    return str(check(lambda: cuda.Device(device).name(), "cuDeviceGetName"))


def release_primary_context(cuda, context) -> None:
    """Release a context from `Device.retain_primary_context()` and leave this thread's context stack clean.

    pycuda's `detach()` pushes the context when it is not current and may leave it pushed after releasing it,
    so whatever is still current afterwards and has our handle is popped explicitly.
    """
    handle = int(context.handle)
    check(context.detach, "release primary CUDA context")
    current = check(cuda.Context.get_current, "cuCtxGetCurrent")
    if current is not None and int(current.handle) == handle:
        check(cuda.Context.pop, "cuCtxPopCurrent after release")


class HostDeviceBuffer:
    """A pinned host array and a device allocation of the same size, for one tensor at its largest shape.

    Sized once for the profile's max batch, so per-call shapes only take a view; `close()` (or leaving the
    `with` block) frees both allocations at a known point instead of whenever the GC runs.
    """

    def __init__(self, name: str, max_shape: tuple[int, ...], dtype: np.dtype) -> None:
        cuda = import_pycuda()
        self.name = name
        self.max_shape = tuple(int(d) for d in max_shape)
        self.dtype = np.dtype(dtype)
        size = math.prod(self.max_shape)
        self.host = check(
            lambda: cuda.pagelocked_empty(size, self.dtype),
            f"pinned alloc for {name!r}",
        )
        self.device = check(
            lambda: cuda.mem_alloc(max(self.host.nbytes, 1)),
            f"device alloc for {name!r}",
        )
        self._cuda = cuda

    @property
    def address(self) -> int:
        """The device pointer as TensorRT's `set_tensor_address` takes it."""
        return int(self.device)

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        """The pinned host memory as an array of `shape` (which must fit in the max shape)."""
        size = math.prod(shape)
        if size > self.host.size:
            raise EngineError(
                f"{self.name!r}: shape {shape} does not fit buffer sized for {self.max_shape}"
            )
        return self.host[:size].reshape(shape)

    def to_device(self, array: np.ndarray, stream) -> None:
        """Stage `array` in pinned memory and queue its copy to the device on `stream`."""
        staged = self.view(array.shape)
        np.copyto(staged, array, casting="no")
        check(
            lambda: self._cuda.memcpy_htod_async(self.device, staged, stream),
            f"copy {self.name!r} to device",
        )

    def to_host(self, shape: tuple[int, ...], stream) -> np.ndarray:
        """Queue the device -> pinned copy of `shape`'s elements; valid once `stream` is synchronised."""
        staged = self.view(shape)
        check(
            lambda: self._cuda.memcpy_dtoh_async(staged, self.device, stream),
            f"copy {self.name!r} to host",
        )
        return staged

    def close(self) -> None:
        device, self.device = getattr(self, "device", None), None
        host, self.host = getattr(self, "host", None), None
        if device is not None:
            check(device.free, f"free device memory of {self.name!r}")
        base = getattr(host, "base", None)
        if base is not None and hasattr(
            base, "free"
        ):  # pycuda's HostAllocation behind the pinned array
            check(base.free, f"free pinned memory of {self.name!r}")

    def __enter__(self) -> HostDeviceBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class CudaStream:
    """One pycuda Stream; `handle` is the integer TensorRT's `execute_async_v3` takes."""

    def __init__(self) -> None:
        cuda = import_pycuda()
        self.stream = check(cuda.Stream, "cuStreamCreate")

    @property
    def handle(self) -> int:
        return int(self.stream.handle)

    def synchronize(self) -> None:
        check(self.stream.synchronize, "cuStreamSynchronize")


def run_in(context, call: Callable[[], Any]) -> Any:
    """Run `call` with pycuda context `context` current on this thread, popping it afterwards."""
    check(context.push, "cuCtxPushCurrent")
    try:
        return call()
    finally:
        check(context.pop, "cuCtxPopCurrent")
