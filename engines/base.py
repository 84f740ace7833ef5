"""What every inference engine is: named tensor specs in and out, one `run` over numpy feeds.

Axis 0 of every input and output is the batch axis. Engines accept any batch size >= 1, and a batch of 0
returns empty outputs without touching the backend (a frame with no faces is the common case).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from pipeline.core.errors import EngineError

Dim = int | None | str  # an int is fixed; None or a symbolic name (e.g. "batch") is dynamic


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: its shape (None/str = dynamic dimension) and numpy dtype."""

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype

    def __post_init__(self) -> None:
        # Normalise so that specs built from `np.float32` and `np.dtype("float32")` compare equal.
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        """`input: float32[batch, 3, 112, 112]`: the spec as error messages quote it."""
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


def is_fixed(dim: Dim) -> bool:
    """True when `dim` is a concrete size rather than a dynamic (None or symbolic) one."""
    return isinstance(dim, int) and dim >= 0


@runtime_checkable
class Engine(Protocol):
    """An inference backend behind one interface; implementations are registered by name."""

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: feeds keyed by input name, outputs keyed by output name."""
        ...

    def close(self) -> None:
        """Release the backend's resources; the engine is unusable afterwards."""
        ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc_info: object) -> None: ...


class ClosingEngine:
    """`with engine:` for every engine: closes it on the way out (the Engine protocol's context manager)."""

    def close(self) -> None:  # pragma: no cover - every engine defines its own
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def validate_feeds(specs: list[TensorSpec], feeds: dict[str, np.ndarray]) -> int:
    """Check `feeds` against `specs` and return the batch size; raise EngineError saying expected vs actual.

    Checks names, dtype (exact: no silent casts), rank, fixed dimensions and that every batched input has
    the same batch size. Values are not inspected (NaN checks are the caller's business; this runs per call).
    """
    expected = {spec.name for spec in specs}
    missing = sorted(expected - feeds.keys())
    unknown = sorted(feeds.keys() - expected)
    if missing or unknown:
        raise EngineError(
            f"input names do not match: missing {missing}, unknown {unknown}; "
            f"expected {[spec.describe() for spec in specs]}"
        )
    batch_sizes: dict[str, int] = {}
    for spec in specs:
        _check_array(spec, feeds[spec.name])
        if spec.rank > 0:
            batch_sizes[spec.name] = feeds[spec.name].shape[0]
    if len(set(batch_sizes.values())) > 1:
        raise EngineError(f"inputs disagree on batch size (axis 0): {batch_sizes}")
    return next(iter(batch_sizes.values()), 1)


def _check_array(spec: TensorSpec, array: np.ndarray) -> None:
    if not isinstance(array, np.ndarray):
        raise EngineError(f"input {spec.name!r} must be a numpy array, got {type(array).__name__}")
    if array.dtype != spec.dtype:
        hint = ""
        if {array.dtype, spec.dtype} == {np.dtype(np.float32), np.dtype(np.float16)}:
            # An FP16 ONNX converted without keep_io_types takes float16 crops; casting is the caller's call.
            hint = (f"; this model's I/O is {spec.dtype} (an FP16-I/O export?): cast with .astype(np.{spec.dtype}) "
                    "or re-export with keep_io_types=True")
        raise EngineError(
            f"input {spec.name!r} must have dtype {spec.dtype}, got {array.dtype} ({spec.describe()}){hint}"
        )
    if array.ndim != spec.rank:
        raise EngineError(
            f"input {spec.name!r} must have rank {spec.rank}, got shape {array.shape} ({spec.describe()})"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
        if is_fixed(want) and want != got:
            raise EngineError(
                f"input {spec.name!r} must have size {want} on axis {axis}, got shape {array.shape} "
                f"({spec.describe()})"
            )


def require_dynamic_batch(specs: list[TensorSpec], model: str) -> None:
    """Refuse a model whose axis 0 is fixed: the engine contract is any batch size, so fail at load, not mid-stream."""
    fixed = [spec.describe() for spec in specs if spec.rank > 0 and is_fixed(spec.shape[0])]
    if fixed:
        raise EngineError(
            f"{model} has a fixed batch axis (axis 0) on {fixed}; engines need a dynamic batch axis "
            "(re-export with one, e.g. engines.onnx_export.export_onnx)"
        )


def empty_outputs(specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Outputs for a batch of 0: axis 0 is 0; other dynamic axes are 0 too, since nothing fixes them."""
    return {
        spec.name: np.empty((0, *(d if is_fixed(d) else 0 for d in spec.shape[1:])), spec.dtype) for spec in specs
    }
