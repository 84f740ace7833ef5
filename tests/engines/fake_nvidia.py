"""Small fakes of tensorrt, pycuda and tritonclient, written from their documented behaviour (return values,
None, raised errors), so the NVIDIA code paths run on a CPU-only machine. Each fake does only what the code
under test calls; a knob (`profile_index`, `accept_saved_cache`, ...) sets the documented failure to simulate.
"""

from __future__ import annotations

import contextlib
import types
from typing import ClassVar

import numpy as np

# --- tensorrt ---------------------------------------------------------------------------------------------


class _Severity:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = "INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"


class _ILogger:
    Severity = _Severity

    def __init__(self) -> None:
        pass


class FakeTimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> memoryview:  # IHostMemory supports the buffer protocol
        return memoryview(b"TIMING-" + self.data[:8])


class FakeBuilderConfig:
    """IBuilderConfig: add_optimization_profile -> index or -1, set_timing_cache -> bool,
    get_timing_cache -> the cache or None."""

    def __init__(self, trt: FakeTrt) -> None:
        self.trt, self.flags, self.timing_calls, self._cache = trt, [], [], None

    def set_memory_pool_limit(self, pool, size) -> None:
        self.workspace = size

    def set_flag(self, flag) -> None:
        self.flags.append(flag)

    def add_optimization_profile(self, profile) -> int:
        self.trt.profiles.append(profile)
        return self.trt.profile_index

    def create_timing_cache(self, data: bytes) -> FakeTimingCache:
        return FakeTimingCache(bytes(data))

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        self.timing_calls.append((cache.data, ignore_mismatch))
        # A saved cache from a GPU whose device properties differ is refused (False), not raised.
        accepted = not cache.data or self.trt.accept_saved_cache
        if accepted:
            self._cache = cache
        return accepted

    def get_timing_cache(self):
        return self._cache if self.trt.return_timing_cache else None


class FakeProfile:
    def __init__(self) -> None:
        self.shapes = {}

    def set_shape(self, name, min, opt, max) -> None:
        self.shapes[name] = (min, opt, max)


class FakeBuilder:
    def __init__(self, trt: FakeTrt, logger) -> None:
        self.trt, self.logger = trt, logger
        trt.loggers.append(logger)

    def create_network(self, flags: int):
        self.trt.network_flags.append(flags)
        return types.SimpleNamespace()

    def create_builder_config(self) -> FakeBuilderConfig:
        config = FakeBuilderConfig(self.trt)
        self.trt.configs.append(config)
        return config

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile()

    def build_serialized_network(self, network, config):
        self.trt.builds += 1
        return memoryview(b"PLAN")


class FakeParser:
    def __init__(self, network, logger) -> None:
        self.num_errors = 0

    def parse_from_file(self, path: str) -> bool:
        return True


class FakeTrt:
    """The slice of `tensorrt` that engines.build and engines.tensorrt_engine use."""

    ILogger = _ILogger
    NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    BuilderFlag = types.SimpleNamespace(FP16="FP16")
    TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    DTYPES: ClassVar[dict[str, type]] = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32}

    def __init__(self, version: str = "11.1.0", *, profile_index: int = 0, accept_saved_cache: bool = True,
                 return_timing_cache: bool = True, engine=None) -> None:
        self.__version__ = version
        self.profile_index, self.accept_saved_cache = profile_index, accept_saved_cache
        self.return_timing_cache, self.engine = return_timing_cache, engine
        self.loggers, self.network_flags, self.configs, self.profiles, self.builds = [], [], [], [], 0

    def Builder(self, logger) -> FakeBuilder:
        return FakeBuilder(self, logger)

    def OnnxParser(self, network, logger) -> FakeParser:
        return FakeParser(network, logger)

    def Runtime(self, logger):
        self.loggers.append(logger)
        return types.SimpleNamespace(deserialize_cuda_engine=lambda data: self.engine)

    def nptype(self, trt_type):
        # tensorrt.nptype raises a bare TypeError for types numpy lacks (BF16, FP8, INT4, FP4).
        if trt_type not in self.DTYPES:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return self.DTYPES[trt_type]


class FakeCudaEngine:
    """ICudaEngine: name-based tensors; `tensors` maps name -> (mode, shape, dtype name, profile max batch)."""

    def __init__(self, tensors: dict[str, tuple[str, tuple[int, ...], str, int]]) -> None:
        self.tensors = tensors
        self.num_io_tensors = len(tensors)

    def get_tensor_name(self, index: int) -> str:
        return list(self.tensors)[index]

    def get_tensor_mode(self, name: str) -> str:
        return self.tensors[name][0]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name][1]

    def get_tensor_dtype(self, name: str) -> str:
        return self.tensors[name][2]

    def get_tensor_profile_shape(self, name: str, profile: int):
        rest = self.tensors[name][1][1:]
        top = self.tensors[name][3]
        return (1, *rest), (top, *rest), (top, *rest)


# --- pycuda -----------------------------------------------------------------------------------------------


class FakeCuda:
    """pycuda.driver's context stack. `detach()` of a context that is not current pushes it, releases it and
    leaves it pushed (the leak the engine must clean up); from another thread pycuda skips it."""

    def __init__(self) -> None:
        self.stack: list[FakeContext] = []
        cuda = self

        class Context:
            @staticmethod
            def get_current():
                return cuda.stack[-1] if cuda.stack else None

            @staticmethod
            def pop():
                cuda.stack.pop()

        self.Context = Context

    def Device(self, index: int):
        return types.SimpleNamespace(retain_primary_context=lambda: FakeContext(self, 0xC0FFEE + index))


class FakeContext:
    def __init__(self, cuda: FakeCuda, handle: int) -> None:
        self.cuda, self.handle, self.detached = cuda, handle, 0

    def push(self) -> None:
        self.cuda.stack.append(self)

    def pop(self) -> None:
        self.cuda.stack.pop()

    def detach(self) -> None:
        if not self.cuda.stack or self.cuda.stack[-1] is not self:
            self.cuda.stack.append(self)
        self.detached += 1


# --- torch.cuda (graph capture only) ----------------------------------------------------------------------


class FakeTorchCuda:
    """torch.cuda's capture API, recording each `graph(...)` call's pool and capture_error_mode."""

    def __init__(self) -> None:
        self.pool = object()
        self.captures: list[dict] = []

    def graph_pool_handle(self):
        return self.pool

    def Stream(self):
        return types.SimpleNamespace(wait_stream=lambda other: None)

    def current_stream(self):
        return types.SimpleNamespace(wait_stream=lambda other: None)

    @contextlib.contextmanager
    def stream(self, stream):
        yield

    def CUDAGraph(self):
        return types.SimpleNamespace(replay=lambda: None)

    @contextlib.contextmanager
    def graph(self, graph, pool=None, stream=None, capture_error_mode="global"):
        self.captures.append({"graph": graph, "pool": pool, "capture_error_mode": capture_error_mode})
        yield


# --- tritonclient.http ------------------------------------------------------------------------------------


class FakeInferenceServerException(Exception):
    pass


def fake_tritonclient_http(max_batch_size: int, requests: list[int], clients: list[dict]):
    """A `tritonclient.http` module serving one model "embedder": image FP32[-1, 3] -> embedding = 2 * image.

    Like the real server it refuses (does not split) a request above max_batch_size, and like the real client
    it refuses a URL that carries a scheme.
    """

    class InferInput:
        def __init__(self, name, shape, datatype) -> None:
            self.name, self.shape, self.datatype = name, shape, datatype

        def set_data_from_numpy(self, array, binary_data=True) -> None:
            self.array = array

    class InferRequestedOutput:
        def __init__(self, name, binary_data=True) -> None:
            self.name = name

    class InferenceServerClient:
        def __init__(self, url, verbose=False, concurrency=1, connection_timeout=60.0, network_timeout=60.0,
                     ssl=False, **_) -> None:
            if "://" in url:
                raise FakeInferenceServerException("url should not include the scheme")
            clients.append({"url": url, "ssl": ssl})

        def is_model_ready(self, name, version=""):
            return name == "embedder"

        def get_model_metadata(self, name, version=""):
            tensor = {"datatype": "FP32", "shape": [-1, 3]}
            return {"inputs": [{"name": "image", **tensor}], "outputs": [{"name": "embedding", **tensor}]}

        def get_model_config(self, name, version=""):
            return {"name": name, "max_batch_size": max_batch_size}

        def infer(self, name, inputs, model_version="", outputs=None):
            batch = inputs[0].shape[0]
            requests.append(batch)
            if max_batch_size and batch > max_batch_size:
                raise FakeInferenceServerException(
                    f"[request id: <id_unknown>] inference request batch-size must be <= {max_batch_size} for "
                    f"'{name}'")
            result = {"embedding": inputs[0].array * 2}
            return types.SimpleNamespace(as_numpy=lambda key: result[key])

        def close(self) -> None:
            pass

    return types.SimpleNamespace(InferInput=InferInput, InferRequestedOutput=InferRequestedOutput,
                                 InferenceServerClient=InferenceServerClient)
