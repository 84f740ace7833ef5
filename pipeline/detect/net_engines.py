"""MTCNN's three nets as engines: `NetEngine(x) -> tuple of arrays`, run by `engines.create_engine`.

The MTCNN stages own all pre/post-processing and only ever call `net(batch)` with a float32 NCHW array; the
backend is one of the project's engines ("torch" on the pretrained module, the reference, or "onnxruntime" on
its export), so a new backend is registered once in engines/, not again here.
Outputs keep the nets' order: P-Net and R-Net (reg, prob); O-Net (reg, landmarks, prob).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines import Engine, TensorSpec, create_engine
from pipeline.core.errors import EngineError
from pipeline.detect.export import EXAMPLE_SIZES, INPUT_NAME, OUTPUT_NAMES
from pipeline.detect.nets import load_net

# The most crops (or frames) one net call takes. A crowded frame can give R-Net thousands of proposals; one
# batch of them would set a new high-water mark of working memory that the allocator keeps for good, so the
# process would grow with the most crowded frame ever seen. Chunks bound it; 128 keeps the calls efficient.
MAX_BATCH = 128
OUTPUT_CHANNELS = {"reg": 4, "prob": 2, "landmarks": 10}


def in_chunks(net, x: np.ndarray, max_batch: int = MAX_BATCH) -> tuple[np.ndarray, ...]:
    """`net(x)` computed `max_batch` items at a time, outputs concatenated in order."""
    if len(x) <= max_batch:
        return net(x)
    parts = [net(x[start:start + max_batch]) for start in range(0, len(x), max_batch)]
    return tuple(np.concatenate(outputs) for outputs in zip(*parts, strict=True))


def net_specs(name: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """One net's input and output specs, as its ONNX export declares them (the torch engine needs them given)."""
    height, width = ("height", "width") if name == "pnet" else EXAMPLE_SIZES[name]
    inputs = [TensorSpec(INPUT_NAME, ("batch", 3, height, width), np.float32)]
    # P-Net's outputs are maps over its input; R-Net's and O-Net's one row per crop.
    maps = (None, None) if name == "pnet" else ()
    outputs = [TensorSpec(out, ("batch", OUTPUT_CHANNELS[out], *maps), np.float32) for out in OUTPUT_NAMES[name]]
    return inputs, outputs


class NetEngine:
    """One MTCNN net behind an engine: `net(x)` runs it in chunks and returns its outputs in the net's order."""

    def __init__(self, name: str, engine: Engine) -> None:
        self.name = name
        self.engine = engine
        self.output_names = OUTPUT_NAMES[name]

    @classmethod
    def torch(cls, name: str, device: str = "cpu") -> NetEngine:
        """The pretrained net run eagerly by the "torch" engine (the reference the ONNX path is checked against)."""
        inputs, outputs = net_specs(name)
        return cls(name, create_engine("torch", module=load_net(name, device), inputs=inputs, outputs=outputs,
                                       device=device))

    @classmethod
    def onnx(cls, name: str, model_path: Path, device: str = "cpu", threads: int = 0) -> NetEngine:
        """The exported net run by the "onnxruntime" engine (CPU, or CUDA when `device` says so)."""
        if device not in ("cpu", "cuda") and not device.startswith("cuda"):
            raise EngineError(f"MTCNN onnxruntime engine supports device 'cpu' or 'cuda', got {device!r}")
        providers = ["CPUExecutionProvider"] if device == "cpu" else None
        # Every pyramid level and batch of crops is a new input shape: no per-shape memory plans (see the engine).
        return cls(name, create_engine("onnxruntime", model_path=model_path, providers=providers, threads=threads,
                                       memory_pattern=False))

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return in_chunks(self._run, x)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        outputs = self.engine.run({INPUT_NAME: x})
        return tuple(outputs[name] for name in self.output_names)
