"""ONNX -> serialized TensorRT plan, cached on disk: `python -m engines.build MODEL.onnx [--precision fp16]`.

A plan only runs on the TensorRT version and GPU architecture that built it, so plans are keyed by
(sha256 of the ONNX, TensorRT version, compute capability such as "sm_90") plus the build options, and a
change in any of them builds a new plan instead of loading one that would fail to deserialize.

Precision: TensorRT 11 removed `BuilderFlag.FP16/INT8` and the INT8 calibrators; networks are strongly typed,
so precision is whatever the ONNX carries (an fp16 ONNX for fp16, a Q/DQ ONNX for int8). TensorRT 10 takes
the same strongly typed path, and keeps one legacy branch (`legacy_fp16_flag`) for an fp32 ONNX built as fp16.
Everything up to `EngineBuilder` is pure and runs without TensorRT; `tensorrt` is imported only to build.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from engines.base import TensorSpec, is_fixed
from engines.onnx_graph import onnx_float_dtype, onnx_has_qdq, onnx_input_specs
from pipeline.core.errors import EngineError, FacestreamError
from pipeline.core.logs import configure_logging

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CACHE_DIR = Path("~/.cache/facestream/tensorrt")


# --- pure logic: versions, keys, paths, shapes, precision decisions --------------------------------------


def parse_trt_version(version: str) -> tuple[int, int, int]:
    """`"10.3.0.26"` -> (10, 3, 0); raise EngineError for anything that does not start with major.minor."""
    match = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", version)
    if match is None:
        raise EngineError(
            f"cannot parse TensorRT version {version!r}; expected 'major.minor[.patch...]'"
        )
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def compute_capability_tag(capability: tuple[int, int]) -> str:
    """(9, 0) -> "sm_90": the GPU architecture a plan is tied to."""
    major, minor = capability
    return f"sm_{major}{minor}"


@dataclass(frozen=True)
class BuildOptions:
    """What shapes the plan besides the ONNX, TensorRT and the GPU; all of it goes into the cache key."""

    precision: str = "fp32"
    max_batch: int = 32
    opt_batch: int | None = (
        None  # None: max_batch // 2 (at least 1), a typical crowded frame
    )
    workspace_mb: int = 1024

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineError(
                f"precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        if self.max_batch < 1:
            raise EngineError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.opt_batch is not None and not 1 <= self.opt_batch <= self.max_batch:
            raise EngineError(
                f"opt_batch must be in [1, max_batch={self.max_batch}], got {self.opt_batch}"
            )
        if self.workspace_mb < 1:
            raise EngineError(f"workspace_mb must be >= 1, got {self.workspace_mb}")

    @property
    def resolved_opt_batch(self) -> int:
        return (
            self.opt_batch
            if self.opt_batch is not None
            else max(1, self.max_batch // 2)
        )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_cache_key(
    onnx_sha256: str, trt_version: str, compute_capability: str, options: BuildOptions
) -> str:
    """A hex key that changes when the ONNX bytes, TensorRT version, GPU architecture or build options change."""
    parts = [
        onnx_sha256, trt_version, compute_capability, options.precision,
        str(options.max_batch), str(options.resolved_opt_batch), str(options.workspace_mb),
    ]  # fmt: skip
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def plan_path(cache_dir: str | Path, onnx_path: str | Path, key: str) -> Path:
    """`<cache_dir>/<onnx stem>-<key>.plan`: the stem keeps the cache folder readable."""
    return Path(cache_dir).expanduser() / f"{Path(onnx_path).stem}-{key}.plan"


def timing_cache_path(
    cache_dir: str | Path, trt_version: str, compute_capability: str
) -> Path:
    """One timing cache per (TensorRT version, GPU architecture): timings from elsewhere do not transfer."""
    return (
        Path(cache_dir).expanduser()
        / f"timing-trt{trt_version}-{compute_capability}.cache"
    )


@dataclass(frozen=True)
class ProfileShapes:
    """One input's (min, opt, max) shapes for the single optimisation profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def profile_shapes(
    inputs: Sequence[TensorSpec], options: BuildOptions
) -> dict[str, ProfileShapes]:
    """Batch axis 1 / opt / max; every other axis comes from the ONNX and must be fixed there."""
    shapes = {}
    for spec in inputs:
        if spec.rank == 0:
            raise EngineError(
                f"input {spec.describe()} is a scalar; TensorRT profiles need a batch axis"
            )
        rest = spec.shape[1:]
        if not all(is_fixed(d) for d in rest):
            raise EngineError(
                f"input {spec.describe()} has a dynamic non-batch axis; only axis 0 may be dynamic for a "
                "single batch profile (re-export with fixed image size)"
            )
        if is_fixed(spec.shape[0]):
            raise EngineError(
                f"input {spec.describe()} has a fixed batch axis; engines need a dynamic one"
            )
        rest_ints = tuple(int(d) for d in rest)
        shapes[spec.name] = ProfileShapes(
            (1, *rest_ints),
            (options.resolved_opt_batch, *rest_ints),
            (options.max_batch, *rest_ints),
        )
    return shapes


def legacy_precision_api(trt_version: str) -> bool:
    """The ONE version check: TensorRT < 11 still has BuilderFlag.FP16 and weakly typed networks."""
    return parse_trt_version(trt_version)[0] < 11


@dataclass(frozen=True)
class NetworkMode:
    strongly_typed_flag: bool  # pass NetworkDefinitionCreationFlag.STRONGLY_TYPED (TRT 10; implicit in 11)
    legacy_fp16_flag: (
        bool  # weakly typed network + BuilderFlag.FP16 (TRT 10 only, fp32 ONNX only)
    )


def network_mode(
    trt_version: str, precision: str, onnx_float_dtype: np.dtype, has_qdq: bool
) -> NetworkMode:
    """How to build for `precision` given what the ONNX carries; EngineError when the ONNX cannot give it."""
    legacy = legacy_precision_api(trt_version)
    onnx_float_dtype = np.dtype(onnx_float_dtype)
    if precision == "int8" and not has_qdq:
        raise EngineError(
            "int8 needs a Q/DQ ONNX (QuantizeLinear/DequantizeLinear nodes, e.g. from NVIDIA ModelOpt); "
            "TensorRT calibrators are gone in TensorRT 11 and not used here"
        )
    if precision == "fp16" and onnx_float_dtype != np.float16:
        if legacy:
            return NetworkMode(strongly_typed_flag=False, legacy_fp16_flag=True)
        raise EngineError(
            f"fp16 on TensorRT {trt_version} needs an fp16 ONNX (its inputs are {onnx_float_dtype}); "
            "TensorRT 11 removed BuilderFlag.FP16, so convert the ONNX to fp16 first"
        )
    if precision == "fp32" and onnx_float_dtype == np.float16:
        raise EngineError(
            "fp32 was asked for but the ONNX is fp16; strongly typed networks keep the ONNX's types"
        )
    return NetworkMode(strongly_typed_flag=legacy, legacy_fp16_flag=False)


def cached_plan(path: Path, build: Callable[[], bytes]) -> Path:
    """Return `path` if a plan is already there, else write `build()`'s bytes there atomically."""
    if path.is_file() and path.stat().st_size > 0:
        log.info("using cached TensorRT plan %s", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    data = build()
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(
        partial, path
    )  # a crash mid-write never leaves a truncated plan under the real name
    log.info("wrote TensorRT plan %s (%d bytes)", path, len(data))
    return path


# --- TensorRT: imported lazily, only when a plan is actually built ---------------------------------------


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineError(
            f"TensorRT is not installed here (pip install tensorrt; needs an NVIDIA GPU): {exc}"
        ) from exc
    return tensorrt


class EngineBuilder:
    """Parses an ONNX into a network, adds one batch profile, builds a serialized plan with a timing cache."""

    def __init__(self, trt_module=None) -> None:
        self.trt = trt_module or import_tensorrt()
        self.logger = make_trt_logger(self.trt)

    def build(
        self, onnx_path: Path, options: BuildOptions, timing_cache: Path
    ) -> bytes:
        trt = self.trt
        model = onnx.load(str(onnx_path), load_external_data=False)
        specs = onnx_input_specs(model)
        mode = network_mode(
            trt.__version__,
            options.precision,
            onnx_float_dtype(specs),
            onnx_has_qdq(model),
        )
        builder = trt.Builder(self.logger)
        flags = (
            1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            if mode.strongly_typed_flag
            else 0
        )
        network = builder.create_network(flags)
        self._parse(trt.OnnxParser(network, self.logger), onnx_path)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(
            trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20
        )
        if (
            mode.legacy_fp16_flag
        ):  # TensorRT 10 only; network_mode never sets this on 11
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for name, shapes in profile_shapes(specs, options).items():
            profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
        config.add_optimization_profile(profile)
        cache = config.create_timing_cache(
            timing_cache.read_bytes() if timing_cache.is_file() else b""
        )
        config.set_timing_cache(cache, False)
        log.info(
            "building TensorRT %s plan for %s (%s)", options.precision, onnx_path, mode
        )
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(
                f"TensorRT failed to build {onnx_path}; its log above says why"
            )
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
        return bytes(plan)

    def _parse(self, parser, onnx_path: Path) -> None:
        if parser.parse_from_file(str(onnx_path)):
            return
        messages = []
        for index in range(parser.num_errors):
            error = parser.get_error(index)
            node_name = error.node_name() if hasattr(error, "node_name") else ""
            operator = error.node_operator() if hasattr(error, "node_operator") else ""
            message = f"node {error.node()} {node_name} ({operator}): {error.code()}: {error.desc()}"
            log.error("ONNX parser error in %s: %s", onnx_path, message)
            messages.append(message)
        raise EngineError(
            f"TensorRT could not parse {onnx_path}: {'; '.join(messages) or 'no details given'}"
        )


def make_trt_logger(trt):
    """A `trt.ILogger` that forwards TensorRT's messages to `logging` instead of stderr."""
    levels = {
        trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL,
        trt.ILogger.Severity.ERROR: logging.ERROR,
        trt.ILogger.Severity.WARNING: logging.WARNING,
        trt.ILogger.Severity.INFO: logging.DEBUG,  # INFO is chatty (per-layer tactics)
        trt.ILogger.Severity.VERBOSE: logging.DEBUG,
    }
    trt_log = logging.getLogger("tensorrt")

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:
            trt_log.log(levels.get(severity, logging.INFO), "%s", msg)

    return _Logger()


def build_plan(
    onnx_path: str | Path,
    options: BuildOptions | None = None,
    cache_dir: str | Path | None = None,
    device: int = 0,
) -> Path:
    """The cached plan for `onnx_path` on this machine's TensorRT and GPU `device`, building it if needed."""
    from engines.cuda_buffers import device_compute_capability

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX model not found: {onnx_path}")
    options = options or BuildOptions()
    trt = import_tensorrt()
    capability = compute_capability_tag(device_compute_capability(device))
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
    key = plan_cache_key(file_sha256(onnx_path), trt.__version__, capability, options)
    timing = timing_cache_path(cache_dir, trt.__version__, capability)
    return cached_plan(
        plan_path(cache_dir, onnx_path, key),
        lambda: EngineBuilder(trt).build(onnx_path, options, timing),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engines.build", description=__doc__.splitlines()[0]
    )
    parser.add_argument("model", type=Path, help="ONNX file (dynamic batch axis)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--opt-batch", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--workspace-mb", type=int, default=1024)
    parser.add_argument("--device", type=int, default=0)
    args = parser.parse_args(argv)
    configure_logging("INFO")
    try:
        options = BuildOptions(
            args.precision, args.max_batch, args.opt_batch, args.workspace_mb
        )
        path = build_plan(args.model, options, args.cache_dir, args.device)
    except FacestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
