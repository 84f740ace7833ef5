"""ONNX -> serialized TensorRT plan, cached on disk: `python -m engines.build MODEL.onnx [--precision fp16]`.

A plan only runs on the TensorRT version and GPU architecture that built it, so plans are keyed by
(sha256 of the ONNX, TensorRT version, compute capability such as "sm_90", GPU name) plus the build options,
and a change in any of them builds a new plan instead of loading one that would fail to deserialize. The GPU
name is in the key because an H100 and an H200 share sm_90 but not their tuned tactics.

Precision: TensorRT 11 removed `BuilderFlag.FP16/INT8` and the INT8 calibrators; networks are strongly typed,
so precision is whatever the ONNX computes in (FLOAT16 weights or Casts for fp16, even behind float32 inputs;
a Q/DQ ONNX for int8). TensorRT 10 takes the same strongly typed path, and keeps one legacy branch
(`legacy_fp16_flag`) for an fp32 ONNX built as fp16.
Everything up to `EngineBuilder` is pure and runs without TensorRT; `tensorrt` is imported only to build.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.base import TensorSpec, is_fixed
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
        raise EngineError(f"cannot parse TensorRT version {version!r}; expected 'major.minor[.patch...]'")
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
    opt_batch: int | None = None  # None: max_batch // 2 (at least 1), a typical crowded frame
    workspace_mb: int = 1024

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_batch < 1:
            raise EngineError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.opt_batch is not None and not 1 <= self.opt_batch <= self.max_batch:
            raise EngineError(f"opt_batch must be in [1, max_batch={self.max_batch}], got {self.opt_batch}")
        if self.workspace_mb < 1:
            raise EngineError(f"workspace_mb must be >= 1, got {self.workspace_mb}")

    @property
    def resolved_opt_batch(self) -> int:
        return self.opt_batch if self.opt_batch is not None else max(1, self.max_batch // 2)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_cache_key(
    onnx_sha256: str, trt_version: str, compute_capability: str, options: BuildOptions, gpu_name: str = ""
) -> str:
    """A hex key that changes when the ONNX bytes, TensorRT version, GPU (architecture, name) or options change."""
    parts = [
        onnx_sha256, trt_version, compute_capability, gpu_name, options.precision,
        str(options.max_batch), str(options.resolved_opt_batch), str(options.workspace_mb),
    ]  # fmt: skip
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def plan_path(cache_dir: str | Path, onnx_path: str | Path, key: str) -> Path:
    """`<cache_dir>/<onnx stem>-<key>.plan`: the stem keeps the cache folder readable."""
    return Path(cache_dir).expanduser() / f"{Path(onnx_path).stem}-{key}.plan"


def gpu_slug(gpu_name: str) -> str:
    """`"NVIDIA H200"` -> `"nvidia-h200"`: a GPU name as a file-name part."""
    return re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")


def timing_cache_path(cache_dir: str | Path, trt_version: str, compute_capability: str, gpu_name: str = "") -> Path:
    """One timing cache per (TensorRT version, GPU architecture, GPU name): timings from elsewhere do not transfer."""
    gpu = f"-{gpu_slug(gpu_name)}" if gpu_name else ""
    return Path(cache_dir).expanduser() / f"timing-trt{trt_version}-{compute_capability}{gpu}.cache"


@dataclass(frozen=True)
class ProfileShapes:
    """One input's (min, opt, max) shapes for the single optimisation profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def profile_shapes(inputs: Sequence[TensorSpec], options: BuildOptions) -> dict[str, ProfileShapes]:
    """Batch axis 1 / opt / max; every other axis comes from the ONNX and must be fixed there."""
    shapes = {}
    for spec in inputs:
        if spec.rank == 0:
            raise EngineError(f"input {spec.describe()} is a scalar; TensorRT profiles need a batch axis")
        rest = spec.shape[1:]
        if not all(is_fixed(d) for d in rest):
            raise EngineError(
                f"input {spec.describe()} has a dynamic non-batch axis; only axis 0 may be dynamic for a "
                "single batch profile (re-export with fixed image size)"
            )
        if is_fixed(spec.shape[0]):
            raise EngineError(f"input {spec.describe()} has a fixed batch axis; engines need a dynamic one")
        rest_ints = tuple(int(d) for d in rest)
        shapes[spec.name] = ProfileShapes((1, *rest_ints), (options.resolved_opt_batch, *rest_ints),
                                          (options.max_batch, *rest_ints))
    return shapes


def legacy_precision_api(trt_version: str) -> bool:
    """The ONE version check: TensorRT < 11 still has BuilderFlag.FP16 and weakly typed networks."""
    return parse_trt_version(trt_version)[0] < 11


@dataclass(frozen=True)
class NetworkMode:
    strongly_typed_flag: bool  # pass NetworkDefinitionCreationFlag.STRONGLY_TYPED (TRT 10; implicit in 11)
    legacy_fp16_flag: bool  # weakly typed network + BuilderFlag.FP16 (TRT 10 only, fp32 ONNX only)


def network_mode(trt_version: str, precision: str, onnx_float_dtype: np.dtype, has_qdq: bool) -> NetworkMode:
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
            f"fp16 on TensorRT {trt_version} needs an fp16 ONNX (it computes in {onnx_float_dtype}); "
            "TensorRT 11 removed BuilderFlag.FP16, so convert the ONNX to fp16 first"
        )
    if precision == "fp32" and onnx_float_dtype == np.float16:
        raise EngineError("fp32 was asked for but the ONNX is fp16; strongly typed networks keep the ONNX's types")
    return NetworkMode(strongly_typed_flag=legacy, legacy_fp16_flag=False)


def cached_plan(path: Path, build: Callable[[], bytes]) -> Path:
    """Return `path` if a plan is already there, else write `build()`'s bytes there atomically."""
    if path.is_file() and path.stat().st_size > 0:
        log.info("using cached TensorRT plan %s", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    data = build()
    write_atomically(path, data)
    log.info("wrote TensorRT plan %s (%d bytes)", path, len(data))
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a partial file and a rename: a crash mid-write never leaves a truncated file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# --- TensorRT: imported lazily, only when a plan is actually built ---------------------------------------


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineError(f"TensorRT is not installed here (pip install tensorrt; needs an NVIDIA GPU): {exc}") \
            from exc
    return tensorrt


class EngineBuilder:
    """Parses an ONNX into a network, adds one batch profile, builds a serialized plan with a timing cache."""

    def __init__(self, trt_module=None) -> None:
        self.trt = trt_module or import_tensorrt()
        self.logger = trt_logger(self.trt)

    def build(self, onnx_path: Path, options: BuildOptions, timing_cache: Path) -> bytes:
        trt = self.trt
        # onnx only here: loading a prebuilt plan (and importing this module) works on a box without it.
        try:
            import onnx
        except ImportError as exc:
            raise EngineError(f"building a TensorRT plan needs the onnx package (to read the ONNX's precision): "
                              f"{exc}") from exc

        from engines.onnx_graph import (
            onnx_compute_dtype,
            onnx_has_qdq,
            onnx_input_specs,
        )

        model = onnx.load(str(onnx_path), load_external_data=False)
        specs = onnx_input_specs(model)
        mode = network_mode(trt.__version__, options.precision, onnx_compute_dtype(model), onnx_has_qdq(model))
        builder = trt.Builder(self.logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if mode.strongly_typed_flag else 0
        network = builder.create_network(flags)
        self._parse(trt.OnnxParser(network, self.logger), onnx_path)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
        if mode.legacy_fp16_flag:  # TensorRT 10 only; network_mode never sets this on 11
            config.set_flag(trt.BuilderFlag.FP16)
        self._add_profile(builder, config, profile_shapes(specs, options))
        self._load_timing_cache(config, timing_cache)
        log.info("building TensorRT %s plan for %s (%s)", options.precision, onnx_path, mode)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(f"TensorRT failed to build {onnx_path}; its log above says why")
        self._save_timing_cache(config, timing_cache)
        return bytes(plan)

    def _add_profile(self, builder, config, shapes: dict[str, ProfileShapes]) -> None:
        profile = builder.create_optimization_profile()
        for name, shape in shapes.items():
            profile.set_shape(name, shape.min, shape.opt, shape.max)
        # add_optimization_profile returns the profile's index, or -1 when TensorRT finds it invalid.
        if config.add_optimization_profile(profile) < 0:
            described = {name: (s.min, s.opt, s.max) for name, s in shapes.items()}
            raise EngineError(f"TensorRT rejected the optimisation profile (min, opt, max) {described}")

    def _load_timing_cache(self, config, path: Path) -> None:
        """Reuse the saved timings; a cache TensorRT will not take (other device, corrupt) gives way to a fresh one."""
        saved = path.read_bytes() if path.is_file() else b""
        cache = config.create_timing_cache(saved)
        # ignore_mismatch=True as NVIDIA's sample does: the path is already per GPU name, and a False return
        # (device properties differ, e.g. another driver) must not abort the build.
        if cache is not None and config.set_timing_cache(cache, True):
            return
        log.warning("TensorRT refused the timing cache %s; building with a fresh one", path)
        fresh = config.create_timing_cache(b"")
        if fresh is None or not config.set_timing_cache(fresh, True):
            raise EngineError(f"TensorRT could not set even an empty timing cache (saved one: {path})")

    def _save_timing_cache(self, config, path: Path) -> None:
        # get_timing_cache() may return None; the plan is built by then, so losing the cache is only a warning.
        cache = config.get_timing_cache()
        serialized = cache.serialize() if cache is not None else None
        if serialized is None:
            log.warning("TensorRT returned no timing cache after the build; %s is not updated", path)
            return
        write_atomically(path, bytes(serialized))

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
        raise EngineError(f"TensorRT could not parse {onnx_path}: {'; '.join(messages) or 'no details given'}")


_LOGGERS: dict[int, object] = {}
_LOGGERS_LOCK = threading.Lock()


def trt_logger(trt):
    """The process's one `trt.ILogger` for this tensorrt module: TensorRT expects the same logger for every
    Builder and Runtime (it warns when a second one differs), so it is made once and shared."""
    with _LOGGERS_LOCK:
        logger = _LOGGERS.get(id(trt))
        if logger is None:
            logger = _LOGGERS[id(trt)] = make_trt_logger(trt)
        return logger


def make_trt_logger(trt):
    """A new `trt.ILogger` that forwards TensorRT's messages to `logging`, dropping disabled severities early."""
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
            # VERBOSE/INFO arrive per layer and tactic; skip them unless the "tensorrt" logger wants DEBUG.
            level = levels.get(severity, logging.INFO)
            if trt_log.isEnabledFor(level):
                trt_log.log(level, "%s", msg)

    return _Logger()


def build_plan(
    onnx_path: str | Path,
    options: BuildOptions | None = None,
    cache_dir: str | Path | None = None,
    device: int = 0,
) -> Path:
    """The cached plan for `onnx_path` on this machine's TensorRT and GPU `device`, building it if needed."""
    from engines.cuda_buffers import device_compute_capability, device_name

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX model not found: {onnx_path}")
    options = options or BuildOptions()
    trt = import_tensorrt()
    capability = compute_capability_tag(device_compute_capability(device))
    gpu = device_name(device)
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
    key = plan_cache_key(file_sha256(onnx_path), trt.__version__, capability, options, gpu)
    timing = timing_cache_path(cache_dir, trt.__version__, capability, gpu)
    return cached_plan(plan_path(cache_dir, onnx_path, key),
                       lambda: EngineBuilder(trt).build(onnx_path, options, timing))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engines.build", description=__doc__.splitlines()[0])
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
        options = BuildOptions(args.precision, args.max_batch, args.opt_batch, args.workspace_mb)
        path = build_plan(args.model, options, args.cache_dir, args.device)
    except FacestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
