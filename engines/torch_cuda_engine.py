"""Torch CUDA engine: the card's architecture rebuilt in torch, weights taken from the exported ONNX, run in FP16.

No second weight file to keep in sync: the TorchScript ONNX exporter keeps state-dict names for the initializers
it does not rewrite (conv weights and biases, buffers such as `centre`). It rewrites one kind: an `nn.Linear`
without bias becomes `MatMul(x, W^T)` with an anonymous initializer (`onnx::MatMul_695`), so a missing
`<module>.weight` is looked up as the B input of the node named `/<module path>/MatMul` (or `/Gemm`) and
transposed back. Every state-dict entry must be filled, with the right shape, or loading fails.

The architectures themselves are the trainer's: callers pass its `create_model` (architecture name -> module),
so engines/ never imports the trainer.

Machines without the `onnx` package (a bare GPU box) load a `.pt` made by `export_state_dict` instead; it
records the ONNX fingerprint it came from, and a mismatch with the card is refused.

With `cuda_graphs`, every batch bucket (1, 16, 64, 256 by default) is captured when the engine is built, all
into one shared memory pool, with `capture_error_mode="thread_local"`: capturing later, in the recognise
thread, in the default "global" mode would fail (or poison the capture) whenever the detector thread touched
CUDA at the same moment. A batch is padded up to the nearest bucket (larger ones are split into top-bucket
chunks), which removes the per-kernel launch cost that dominates small batches on a fast GPU. The static
buffers are shared, so `run` holds a lock.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from engines.base import (
    ClosingEngine,
    TensorSpec,
    empty_outputs,
    require_dynamic_batch,
    validate_feeds,
)
from engines.registry import register_engine
from pipeline.core.errors import EngineError

log = logging.getLogger(__name__)

DEFAULT_BUCKETS = (1, 16, 64, 256)
CreateModel = Callable[[str], torch.nn.Module]  # architecture name (the card's `architecture`) -> fresh module
STATE_DICT_FORMAT = "facestream-torch-weights"


def read_card(card_path: Path) -> dict:
    """The card fields this engine needs, read without pydantic (it must run on a bare GPU box)."""
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineError(f"cannot read model card {card_path}: {exc}") from exc
    missing = [key for key in ("architecture", "input_size", "embedding_dim", "fingerprint") if key not in card]
    if missing:
        raise EngineError(f"model card {card_path} lacks {missing}")
    return card


def onnx_weights(onnx_path: Path, names: Sequence[str]) -> tuple[dict[str, np.ndarray], str, str]:
    """State-dict entries `names` recovered from the ONNX initializers, plus the graph's input and output name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    inits = {init.name: init for init in model.graph.initializer}
    nodes = {node.name: node for node in model.graph.node}
    weights: dict[str, np.ndarray] = {}
    for name in names:
        if name in inits:
            weights[name] = numpy_helper.to_array(inits[name])
            continue
        module, _, leaf = name.rpartition(".")
        node = next((nodes.get(f"/{module.replace('.', '/')}/{op}") for op in ("MatMul", "Gemm")
                     if f"/{module.replace('.', '/')}/{op}" in nodes), None)
        if leaf != "weight" or node is None or len(node.input) < 2 or node.input[1] not in inits:
            continue
        array = numpy_helper.to_array(inits[node.input[1]])
        trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        weights[name] = array if node.op_type == "Gemm" and trans_b else array.T
    graph_inputs = [i.name for i in model.graph.input if i.name not in inits]
    return weights, graph_inputs[0], model.graph.output[0].name


def build_module(card_path: str | Path, create_model: CreateModel,
                 weights: str | Path | None = None) -> tuple[torch.nn.Module, str, str]:
    """The card's architecture, made by `create_model`, with its exported weights (from the ONNX, or from a
    `.pt` made here), fp32, CPU. Returns (module, input name, output name).
    """
    card_path = Path(card_path)
    card = read_card(card_path)
    module = create_model(card["architecture"]).eval()
    expected = module.state_dict()
    if weights is not None and Path(weights).suffix == ".pt":
        payload = torch.load(Path(weights), map_location="cpu", weights_only=True)
        if payload.get("format") != STATE_DICT_FORMAT or payload.get("fingerprint") != card["fingerprint"]:
            raise EngineError(f"{weights} is not the exported weights of {card_path} (fingerprint "
                              f"{payload.get('fingerprint')!r}, card {card['fingerprint']!r})")
        found = {k: np.asarray(v) for k, v in payload["state_dict"].items()}
        input_name, output_name = payload["input_name"], payload["output_name"]
    else:
        onnx_path = Path(weights) if weights is not None else card_path.parent / card.get("onnx", "")
        try:
            found, input_name, output_name = onnx_weights(onnx_path, list(expected))
        except ImportError as exc:
            raise EngineError(f"loading weights from {onnx_path} needs the onnx package ({exc}); "
                              "pass a .pt from engines.torch_cuda_engine.export_state_dict instead") from exc
    _check_weights(expected, found, card_path)
    module.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in found.items()})
    return module, input_name, output_name


def _check_weights(expected: dict[str, torch.Tensor], found: dict[str, np.ndarray], source: Path) -> None:
    missing = sorted(set(expected) - set(found))
    if missing:
        raise EngineError(f"weights for {source} lack state-dict entries {missing}")
    wrong = {k: (tuple(expected[k].shape), found[k].shape) for k in expected if tuple(expected[k].shape) != found[k].shape}
    if wrong:
        raise EngineError(f"weights for {source} have wrong shapes (expected, found): {wrong}")


def export_state_dict(card_path: str | Path, out: str | Path, create_model: CreateModel) -> Path:
    """Write the card's weights (read from its ONNX) as a `.pt` for machines without the onnx package."""
    module, input_name, output_name = build_module(card_path, create_model)
    payload = {
        "format": STATE_DICT_FORMAT,
        "fingerprint": read_card(Path(card_path))["fingerprint"],
        "input_name": input_name,
        "output_name": output_name,
        "state_dict": module.state_dict(),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out)
    return out


Graphs = dict[int, tuple[object, torch.Tensor, torch.Tensor]]  # bucket -> (CUDAGraph, static in, static out)


def capture_graphs(module: torch.nn.Module, buckets: Sequence[int], sample_shape: tuple[int, ...],
                   device: torch.device, dtype: torch.dtype, cuda=torch.cuda,
                   memory_format: torch.memory_format = torch.contiguous_format) -> Graphs:
    """Capture one CUDA graph per bucket, now, into one memory pool (`cuda` is `torch.cuda`; tests pass a fake).

    Warm-up runs on a side stream first, as torch.cuda.graphs requires (cuDNN picks its algorithms there).
    """
    # One pool for all buckets: replays never overlap (the engine's lock) and each output is cloned right after
    # its own replay, so another bucket later reusing that memory is harmless.
    pool = cuda.graph_pool_handle()
    graphs: Graphs = {}
    with torch.inference_mode():
        for bucket in sorted(buckets, reverse=True):  # largest first, so the smaller captures reuse its blocks
            static_in = torch.zeros((bucket, *sample_shape), device=device, dtype=dtype).contiguous(
                memory_format=memory_format)
            stream = cuda.Stream()
            stream.wait_stream(cuda.current_stream())
            with cuda.stream(stream):
                for _ in range(2):
                    module(static_in)
            cuda.current_stream().wait_stream(stream)
            graph = cuda.CUDAGraph()
            with cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                static_out = module(static_in)
            graphs[bucket] = (graph, static_in, static_out)
            log.debug("captured a CUDA graph for batch %d", bucket)
    return graphs


@register_engine("torch-cuda")
class TorchCudaEngine(ClosingEngine):
    """The card's torch module on CUDA (FP16 by default), same interface as the ONNX Runtime engine.

    `model_path`: the ONNX file (its card is the `.json` beside it unless `card_path` says otherwise).
    `create_model`: architecture name -> module (the trainer's `trainer.models.create_model`). `weights`: a
    `.pt` from `export_state_dict` instead of the ONNX's initializers. `device="cpu"`, `fp16=False`,
    `cuda_graphs=False` give an fp32 CPU run of the same module (how the tests check weights). `channels_last`
    runs the convolutions in NHWC, the layout the tensor cores want: on an H200 the network alone went from
    97,000 to 121,100 faces/s at batch 256 in fp16 (gpu_check.sh); the NCHW feed is converted on the device.
    """

    name = "torch-cuda"

    def __init__(
        self,
        model_path: str | Path,
        create_model: CreateModel,
        card_path: str | Path | None = None,
        weights: str | Path | None = None,
        device: str = "cuda",
        fp16: bool = True,
        cuda_graphs: bool = True,
        batch_buckets: Sequence[int] = DEFAULT_BUCKETS,
        channels_last: bool = True,
    ) -> None:
        self.model_path = Path(model_path)
        card_path = Path(card_path) if card_path is not None else self.model_path.with_suffix(".json")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EngineError("torch-cuda engine: torch reports no CUDA device (torch.cuda.is_available() is False)")
        if (fp16 or cuda_graphs) and self.device.type != "cuda":
            raise EngineError(f"fp16 and cuda_graphs need a CUDA device, got device={device!r}")
        if not batch_buckets or any(b < 1 for b in batch_buckets):
            raise EngineError(f"batch_buckets must be positive batch sizes, got {tuple(batch_buckets)}")
        card = read_card(card_path)
        weights = weights if weights is not None else self.model_path
        module, input_name, output_name = build_module(card_path, create_model, weights)
        self.dtype = torch.float16 if fp16 else torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._module: torch.nn.Module | None = module.to(self.device, self.dtype).to(
            memory_format=self.memory_format).eval()
        height, width = card["input_size"]
        self.inputs = [TensorSpec(input_name, ("batch", 3, height, width), np.float32)]
        self.outputs = [TensorSpec(output_name, ("batch", card["embedding_dim"]), np.float32)]
        require_dynamic_batch(self.inputs, str(self.model_path))
        self.buckets = tuple(sorted(set(batch_buckets))) if cuda_graphs else ()
        self._lock = threading.Lock()
        self._normalisations: dict[tuple[bytes, bytes], tuple[torch.Tensor, torch.Tensor]] = {}
        try:
            self._graphs: Graphs = capture_graphs(self._module, self.buckets, self.inputs[0].shape[1:],
                                                  self.device, self.dtype,
                                                  memory_format=self.memory_format) if self.buckets else {}
        except RuntimeError as exc:  # capture refused (an op that syncs), or out of memory
            raise EngineError(f"torch-cuda could not capture CUDA graphs for {self.buckets}: {exc}") from exc
        log.info("loaded %s (%s) on %s, %s, cuda graphs for %s", self.model_path, card["architecture"],
                 self.device, self.dtype, self.buckets or "no batch")

    @classmethod
    def is_available(cls) -> bool:
        return torch.cuda.is_available()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._module is None:
            raise EngineError(f"engine for {self.model_path} is closed")
        batch = validate_feeds(self.inputs, feeds)
        if batch == 0:
            return empty_outputs(self.outputs)
        return self._infer(self._to_device(feeds[self.inputs[0].name]).to(self.dtype))

    def run_crops(self, crops: np.ndarray, mean: np.ndarray, std: np.ndarray,
                  mirror: bool = False) -> dict[str, np.ndarray]:
        """Aligned uint8 RGB crops (N, h, w, 3) in, outputs as `run`'s; `(crop - mean) / std` and the NHWC -> NCHW
        layout are done on the device. A batch then crosses the bus as uint8, a quarter of the float32 bytes,
        and the CPU does no per-pixel work: on an H200 that per-pixel work, not the GPU, bounded the embedder.
        `mirror`: the crops' mirror images are made there too and run after them (2N rows out, mirrors last).
        """
        if self._module is None:
            raise EngineError(f"engine for {self.model_path} is closed")
        _, channels, height, width = self.inputs[0].shape
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (height, width, channels):
            raise EngineError(f"crops must be uint8 (N, {height}, {width}, {channels}), "
                              f"got {crops.dtype} {crops.shape}")
        if len(crops) == 0:
            return empty_outputs(self.outputs)
        mean_t, std_t = self._normalisation(mean, std)
        x = self._to_device(crops).to(torch.float32)  # float32 first, as the CPU path computes
        x = ((x - mean_t) / std_t).permute(0, 3, 1, 2)  # an NCHW view of NHWC memory: already channels_last
        if mirror:
            x = torch.cat([x, x.flip(3)])
        return self._infer(x.to(self.dtype))

    def _normalisation(self, mean: np.ndarray, std: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """mean and std as device tensors, copied once per distinct value, not on every call (the hot path)."""
        key = (np.asarray(mean, np.float32).tobytes(), np.asarray(std, np.float32).tobytes())
        if key not in self._normalisations:
            self._normalisations[key] = tuple(torch.as_tensor(np.asarray(v, np.float32), device=self.device)
                                              for v in (mean, std))
        return self._normalisations[key]

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True)

    def _infer(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        with self._lock:  # the graphs' static buffers are shared by every caller
            if self._module is None:  # closed by another thread while this call waited
                raise EngineError(f"engine for {self.model_path} is closed")
            try:
                with torch.inference_mode():
                    y = (self._forward_graphs(x) if self.buckets
                         else self._module(x.contiguous(memory_format=self.memory_format)))
                    return {self.outputs[0].name: y.float().cpu().numpy()}
            except RuntimeError as exc:  # CUDA OOM, a shape the module cannot take
                raise EngineError(f"torch-cuda failed running {self.model_path}: {exc}") from exc

    def _forward_graphs(self, x: torch.Tensor) -> torch.Tensor:
        """Replay the captured graph of the smallest bucket holding the batch; split batches over the largest."""
        top = self.buckets[-1]
        parts = []
        for start in range(0, len(x), top):
            chunk = x[start:start + top]
            bucket = next(b for b in self.buckets if b >= len(chunk))
            graph, static_in, static_out = self._graphs[bucket]
            static_in[: len(chunk)].copy_(chunk)  # NCHW -> the captured layout, on the device
            static_in[len(chunk):].zero_()
            graph.replay()
            parts.append(static_out[: len(chunk)].clone())
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        with self._lock:
            self._graphs = {}
            self._module = None


    def __repr__(self) -> str:
        return f"TorchCudaEngine({str(self.model_path)!r}, device={self.device}, dtype={self.dtype})"
