"""Torch engine: runs an nn.Module directly, the parity oracle the exported engines are checked against."""

from __future__ import annotations

import numpy as np
import torch

from engines.base import ClosingEngine, TensorSpec, empty_outputs, require_dynamic_batch, validate_feeds
from engines.registry import register_engine
from pipeline.core.errors import EngineError


@register_engine("torch")
class TorchEngine(ClosingEngine):
    """An nn.Module behind the Engine interface: numpy feeds in input-spec order, outputs named by output specs.

    The module is put in eval mode and moved to `device` (both in place): an oracle with dropout or
    batch-norm statistics updating would not be comparable with the exported model.
    """

    name = "torch"

    def __init__(
        self,
        module: torch.nn.Module,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(module, torch.nn.Module):
            raise EngineError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if not inputs or not outputs:
            raise EngineError(f"torch engine needs at least one input and one output spec, got {inputs}, {outputs}")
        try:
            self.device = torch.device(device)
            self._module: torch.nn.Module | None = module.to(self.device).eval()
        except (RuntimeError, AssertionError) as exc:  # e.g. "cuda" on a CPU-only build raises AssertionError
            raise EngineError(f"torch engine cannot use device {device!r}: {exc}") from exc
        self._module_name = type(module).__name__
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        require_dynamic_batch(self.inputs, f"torch module {self._module_name}")

    @classmethod
    def is_available(cls) -> bool:
        return True  # the module imported, so torch did; CPU always works

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._module is None:
            raise EngineError("torch engine is closed")
        if validate_feeds(self.inputs, feeds) == 0:
            return empty_outputs(self.outputs)
        args = [torch.from_numpy(np.ascontiguousarray(feeds[spec.name])).to(self.device) for spec in self.inputs]
        with torch.inference_mode():
            result = self._module(*args)
        if isinstance(result, torch.Tensor):
            tensors: tuple = (result,)
        elif isinstance(result, (tuple, list)):
            tensors = tuple(result)
        else:
            raise EngineError(f"module must return a tensor or a tuple of tensors, got {type(result).__name__}")
        if len(tensors) != len(self.outputs):
            raise EngineError(
                f"module returned {len(tensors)} outputs, output specs name {len(self.outputs)}: "
                f"{[spec.name for spec in self.outputs]}"
            )
        return {spec.name: t.detach().cpu().numpy() for spec, t in zip(self.outputs, tensors, strict=True)}

    def close(self) -> None:
        self._module = None


    def __repr__(self) -> str:
        return f"TorchEngine({self._module_name}, device={self.device})"
