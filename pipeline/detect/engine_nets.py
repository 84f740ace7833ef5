"""How a stage runs its net: a callable `net(x) -> tuple of arrays`, backed by torch or ONNX Runtime.

The MTCNN stages own all pre/post-processing and only ever call `net(batch)` with a float32 NCHW array,
so adding a backend (TensorRT later) means one more small class here, not a change to the stages.
Outputs keep the nets' order: P-Net and R-Net (reg, prob); O-Net (reg, landmarks, prob).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from pipeline.core.errors import EngineError
from pipeline.detect.export import INPUT_NAME, OUTPUT_NAMES
from pipeline.detect.nets import load_net

# The most crops (or frames) one net call takes. A crowded frame can give R-Net thousands of proposals; one
# batch of them would set a new high-water mark of working memory that the allocator keeps for good, so the
# process would grow with the most crowded frame ever seen. Chunks bound it; 128 keeps the calls efficient.
MAX_BATCH = 128


class NetRunner(Protocol):
    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]: ...


def in_chunks(net, x: np.ndarray, max_batch: int = MAX_BATCH) -> tuple[np.ndarray, ...]:
    """`net(x)` computed `max_batch` items at a time, outputs concatenated in order."""
    if len(x) <= max_batch:
        return net(x)
    parts = [net(x[start:start + max_batch]) for start in range(0, len(x), max_batch)]
    return tuple(np.concatenate(outputs) for outputs in zip(*parts, strict=True))


class TorchNet:
    """A pretrained net run eagerly by torch (the reference the ONNX path is checked against)."""

    def __init__(self, name: str, device: str = "cpu") -> None:
        self.name = name
        self.device = torch.device(device)
        self.module = load_net(name, self.device)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return in_chunks(self._run, x)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            outputs = self.module(torch.from_numpy(x).to(self.device))
        return tuple(out.cpu().numpy() for out in outputs)


class OnnxNet:
    """An exported net run through the project's ONNX Runtime engine (`engines.create_engine`)."""

    def __init__(self, name: str, model_path: Path, device: str = "cpu", threads: int = 0) -> None:
        # Imported here so the torch engine path never needs engines/ or onnxruntime.
        from engines.registry import create_engine

        self.name = name
        providers = ["CPUExecutionProvider"] if device == "cpu" else None
        if device not in ("cpu", "cuda") and not device.startswith("cuda"):
            raise EngineError(f"MTCNN onnxruntime engine supports device 'cpu' or 'cuda', got {device!r}")
        self.engine = create_engine("onnxruntime", model_path=model_path, providers=providers, threads=threads)
        self.output_names = OUTPUT_NAMES[name]

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return in_chunks(self._run, x)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        outputs = self.engine.run({INPUT_NAME: x})
        return tuple(outputs[name] for name in self.output_names)
