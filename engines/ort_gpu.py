"""ONNX Runtime on NVIDIA GPUs: the ORT engine pinned to the CUDA or TensorRT execution provider, with options.

Thin subclasses of `OnnxRuntimeEngine`, so provider resolution and the refusal of a silent CPU fallback are
the same code. The CUDA engine asks for [CUDA, CPU]; the TensorRT engine for [TensorRT, CUDA, CPU] as ORT
recommends, so nodes TensorRT rejects run on CUDA rather than the CPU. If a GPU provider fails to initialise
(no cuDNN, no TensorRT libraries) the session would quietly run on CPU, and `verify_providers` turns that into
an EngineError unless `allow_fallback` is set. `is_available()` only says the provider is in this ORT build
(onnxruntime#13501: TensorRT is listed with no TensorRT installed); construction is the real test, which is
why `engines.selection.create_preferred` falls through on EngineError.

TensorRT EP: FP16 on; built engines and the timing cache persist under `state/trt_cache/<onnx stem>-<sha256>/`
so a restart does not rebuild (minutes). ORT's own cache id hashes the graph's names and opset, not its
weights, so a retrained model of the same topology would reuse a stale engine: the folder is keyed by the
ONNX's sha256. One optimisation profile covers batch 1..max_batch with `opt_batch` as the tuned point.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import onnxruntime as ort

from engines.onnxruntime_engine import CPU, CUDA, OnnxRuntimeEngine
from engines.registry import register_engine
from pipeline.core.errors import EngineError

TENSORRT = "TensorrtExecutionProvider"
DEFAULT_TRT_CACHE = Path("state/trt_cache")


class _PinnedProviderEngine(OnnxRuntimeEngine):
    """An ORT engine on one GPU provider (then CPU), with that provider's options."""

    provider: str = ""
    fallbacks: tuple[str, ...] = (CPU,)  # providers after `provider`, in ORT's priority order

    def __init__(self, model_path: str | Path, allow_fallback: bool = False, threads: int = 0,
                 device_id: int = 0, memory_pattern: bool = True) -> None:
        if device_id < 0:
            raise EngineError(f"device_id must be >= 0, got {device_id}")
        self.device_id = device_id
        super().__init__(model_path, providers=[self.provider, *self.fallbacks], allow_fallback=allow_fallback,
                         threads=threads, memory_pattern=memory_pattern)

    @classmethod
    def is_available(cls) -> bool:
        """The provider is in this ORT build; whether its libraries load is only known on construction."""
        available = ort.get_available_providers()
        return all(p in available for p in (cls.provider, *cls.fallbacks))

    def provider_options(self) -> dict[str, dict[str, Any]]:
        """Options per provider name; providers not named get ORT's defaults."""
        return {self.provider: {"device_id": self.device_id}}

    def _open_session(self, providers: list[str], *session_args) -> ort.InferenceSession:
        # Options travel as (name, options) pairs: the base class's provider list stays a list of names.
        # ORT parses option values from strings; booleans as "1"/"0".
        per_provider = {name: {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in opts.items()}
                        for name, opts in self.provider_options().items()}
        with_options = [(p, per_provider[p]) if p in per_provider else p for p in providers]
        return super()._open_session(with_options, *session_args)


def cuda_options(device_id: int) -> dict[str, Any]:
    # EXHAUSTIVE pays once per new shape; the embedder sees a handful of batch sizes, the detector's
    # P-Net one per pyramid level, so the search cost amortises over a stream.
    return {"device_id": device_id, "cudnn_conv_algo_search": "EXHAUSTIVE", "arena_extend_strategy": "kSameAsRequested"}


@register_engine("onnxruntime-cuda")
class OrtCudaEngine(_PinnedProviderEngine):
    """ONNX Runtime's CUDA execution provider; cuDNN searches conv algorithms once per input shape."""

    name = "onnxruntime-cuda"
    provider = CUDA

    def provider_options(self) -> dict[str, dict[str, Any]]:
        return {CUDA: cuda_options(self.device_id)}


@register_engine("onnxruntime-tensorrt")
class OrtTensorRTEngine(_PinnedProviderEngine):
    """ONNX Runtime's TensorRT execution provider: FP16, persisted engine and timing caches."""

    name = "onnxruntime-tensorrt"
    provider = TENSORRT
    fallbacks = (CUDA, CPU)

    def __init__(self, model_path: str | Path, allow_fallback: bool = False, threads: int = 0, device_id: int = 0,
                 fp16: bool = True, cache_dir: str | Path = DEFAULT_TRT_CACHE, max_batch: int = 256,
                 opt_batch: int = 32) -> None:
        if not 1 <= opt_batch <= max_batch:
            raise EngineError(f"need 1 <= opt_batch <= max_batch, got opt_batch={opt_batch}, max_batch={max_batch}")
        if not Path(model_path).is_file():
            raise EngineError(f"ONNX model not found: {model_path}")
        self.fp16 = fp16
        self.cache_dir = model_cache_dir(cache_dir, model_path)
        self.max_batch = max_batch
        self.opt_batch = opt_batch
        self._profile: dict[str, str] = {}
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(model_path, allow_fallback=allow_fallback, threads=threads, device_id=device_id)

    def _open_session(self, providers: list[str], *session_args) -> ort.InferenceSession:
        # The profile needs the input shapes; a first CPU-only session would cost a load, so read them with onnx
        # when present, and otherwise let TensorRT EP build per shape (it still caches what it builds).
        self._profile = _batch_profile(self.model_path, self.max_batch, self.opt_batch)
        return super()._open_session(providers, *session_args)

    def provider_options(self) -> dict[str, dict[str, Any]]:
        options: dict[str, Any] = {
            "device_id": self.device_id,
            "trt_fp16_enable": self.fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(self.cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(self.cache_dir),
        }
        options.update(self._profile)
        return {TENSORRT: options, CUDA: cuda_options(self.device_id)}


def model_cache_dir(cache_dir: str | Path, model_path: str | Path) -> Path:
    """`<cache_dir>/<stem>-<sha256[:16]>`: one TensorRT EP cache per ONNX content, so new weights mean a new build."""
    digest = hashlib.sha256()
    with open(model_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return Path(cache_dir) / f"{Path(model_path).stem}-{digest.hexdigest()[:16]}"


def _batch_profile(model_path: Path, max_batch: int, opt_batch: int) -> dict[str, str]:
    """TensorRT EP's explicit profile (`trt_profile_min_shapes`, ...) for inputs whose only dynamic axis is 0."""
    try:
        import onnx
    except ImportError:
        return {}
    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    shapes = {}
    for node in graph.input:
        if node.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in node.type.tensor_type.shape.dim]
        if not dims or any(d is None for d in dims[1:]):
            return {}  # other dynamic axes (P-Net's height/width): no single profile fits; let the EP decide
        shapes[node.name] = dims[1:]

    def spec(batch: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in [batch, *rest])}" for name, rest in shapes.items())

    return {"trt_profile_min_shapes": spec(1), "trt_profile_opt_shapes": spec(opt_batch),
            "trt_profile_max_shapes": spec(max_batch)}
