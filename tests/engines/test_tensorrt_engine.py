"""engines/build, onnx_graph, cuda_buffers, tensorrt_engine: plan cache keys and profiles on CPU; build/run/parity
on a GPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from engines import create_engine
from engines.base import TensorSpec
from engines.build import (
    BuildOptions,
    NetworkMode,
    cached_plan,
    compute_capability_tag,
    file_sha256,
    main,
    network_mode,
    parse_trt_version,
    plan_cache_key,
    plan_path,
    profile_shapes,
    timing_cache_path,
)  # fmt: skip
from engines.cuda_buffers import HostDeviceBuffer, check
from engines.onnx_export import export_onnx
from engines.onnx_graph import onnx_float_dtype, onnx_has_qdq, onnx_input_specs
from engines.tensorrt_engine import TensorRTEngine
from pipeline.core.errors import EngineError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "facestream-default.onnx"
HAS_TRT_STACK = (
    importlib.util.find_spec("tensorrt") is not None
    and importlib.util.find_spec("pycuda") is not None
)
SHA = "ab" * 32


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(
        TinyNet(), torch.randn(2, 3, 40, 48), path, ["image"], ["embedding"]
    )


# --- cache key and paths ---------------------------------------------------------------------------------


def test_cache_key_is_stable_for_equal_inputs():
    options = BuildOptions()
    assert plan_cache_key(SHA, "10.3.0", "sm_90", options) == plan_cache_key(
        SHA, "10.3.0", "sm_90", BuildOptions()
    )


@pytest.mark.parametrize(
    "changed",
    [
        {"sha": "cd" * 32},
        {"version": "10.4.0"},
        {"version": "11.0.0"},
        {"capability": "sm_89"},
        {"options": BuildOptions(precision="fp16")},
        {"options": BuildOptions(max_batch=64)},
        {"options": BuildOptions(opt_batch=4)},
    ],
)
def test_cache_key_changes_with_each_part(changed):
    base = {
        "sha": SHA,
        "version": "10.3.0",
        "capability": "sm_90",
        "options": BuildOptions(),
    }
    other = base | changed
    key = plan_cache_key(
        base["sha"], base["version"], base["capability"], base["options"]
    )
    assert (
        plan_cache_key(
            other["sha"], other["version"], other["capability"], other["options"]
        )
        != key
    )


def test_cache_key_follows_onnx_bytes(tiny_onnx, tmp_path):
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(tiny_onnx.read_bytes())
    assert file_sha256(copy) == file_sha256(tiny_onnx)
    copy.write_bytes(tiny_onnx.read_bytes() + b"\0")
    assert file_sha256(copy) != file_sha256(tiny_onnx)


def test_plan_and_timing_cache_paths(tmp_path):
    assert (
        plan_path(tmp_path, "/models/face.onnx", "k123") == tmp_path / "face-k123.plan"
    )
    assert (
        timing_cache_path(tmp_path, "10.3.0", "sm_90")
        == tmp_path / "timing-trt10.3.0-sm_90.cache"
    )


def test_cached_plan_builds_once_then_reuses_and_rebuilds_on_new_key(tmp_path):
    calls = []

    def build() -> bytes:
        calls.append(1)
        return b"plan-bytes"

    first = cached_plan(plan_path(tmp_path, "m.onnx", "key1"), build)
    again = cached_plan(plan_path(tmp_path, "m.onnx", "key1"), build)
    other = cached_plan(plan_path(tmp_path, "m.onnx", "key2"), build)
    assert first == again != other
    assert len(calls) == 2 and first.read_bytes() == b"plan-bytes"
    assert not list(tmp_path.glob("*.partial"))


def test_cached_plan_leaves_nothing_when_build_fails(tmp_path):
    def build() -> bytes:
        raise EngineError("parse failed")

    with pytest.raises(EngineError):
        cached_plan(plan_path(tmp_path, "m.onnx", "k"), build)
    assert list(tmp_path.iterdir()) == []


# --- profile shapes from a real ONNX ---------------------------------------------------------------------


def test_profile_shapes_from_exported_onnx(tiny_onnx):
    specs = onnx_input_specs(onnx.load(str(tiny_onnx)))
    assert [s.name for s in specs] == ["image"] and specs[0].shape[1:] == (3, 40, 48)
    shapes = profile_shapes(specs, BuildOptions(max_batch=16, opt_batch=4))
    assert shapes["image"].min == (1, 3, 40, 48)
    assert shapes["image"].opt == (4, 3, 40, 48)
    assert shapes["image"].max == (16, 3, 40, 48)


def test_profile_opt_defaults_to_half_max(tiny_onnx):
    specs = onnx_input_specs(onnx.load(str(tiny_onnx)))
    assert profile_shapes(specs, BuildOptions(max_batch=1))["image"].opt[0] == 1
    assert profile_shapes(specs, BuildOptions(max_batch=32))["image"].opt[0] == 16


@pytest.mark.parametrize(
    "shape, match",
    [
        ((None, 3, None, 112), "dynamic non-batch"),
        ((8, 3, 112, 112), "fixed batch"),
        ((), "scalar"),
    ],
)
def test_profile_refuses_shapes_one_batch_profile_cannot_cover(shape, match):
    with pytest.raises(EngineError, match=match):
        profile_shapes([TensorSpec("image", shape, np.float32)], BuildOptions())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"precision": "bf16"},
        {"max_batch": 0},
        {"max_batch": 8, "opt_batch": 9},
        {"workspace_mb": 0},
    ],
)
def test_build_options_reject_bad_values(kwargs):
    with pytest.raises(EngineError):
        BuildOptions(**kwargs)


def test_onnx_precision_facts(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    assert onnx_float_dtype(onnx_input_specs(model)) == np.float32
    assert not onnx_has_qdq(model)


# --- versions and the TensorRT-10-only branch ------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.3.0.26", (10, 3, 0)),
        ("11.0.0", (11, 0, 0)),
        ("10.12", (10, 12, 0)),
        ("8.6.1.post1", (8, 6, 1)),
    ],
)
def test_parse_trt_version(text, expected):
    assert parse_trt_version(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "v10.3"])
def test_parse_trt_version_rejects_garbage(text):
    with pytest.raises(EngineError, match="cannot parse"):
        parse_trt_version(text)


@pytest.mark.parametrize(
    "version, precision, dtype, qdq, expected",
    [
        ("10.3.0", "fp32", np.float32, False, NetworkMode(True, False)),
        (
            "10.3.0",
            "fp16",
            np.float32,
            False,
            NetworkMode(False, True),
        ),  # the one legacy branch
        ("10.3.0", "fp16", np.float16, False, NetworkMode(True, False)),
        ("10.3.0", "int8", np.float32, True, NetworkMode(True, False)),
        ("11.0.0", "fp32", np.float32, False, NetworkMode(False, False)),
        ("11.0.0", "fp16", np.float16, False, NetworkMode(False, False)),
        ("11.2.1", "int8", np.float32, True, NetworkMode(False, False)),
    ],
)
def test_network_mode(version, precision, dtype, qdq, expected):
    assert network_mode(version, precision, np.dtype(dtype), qdq) == expected


@pytest.mark.parametrize(
    "version, precision, dtype, qdq, match",
    [
        ("11.0.0", "fp16", np.float32, False, "needs an fp16 ONNX"),
        ("10.3.0", "int8", np.float32, False, "Q/DQ"),
        ("11.0.0", "int8", np.float32, False, "Q/DQ"),
        ("11.0.0", "fp32", np.float16, False, "ONNX is fp16"),
    ],
)
def test_network_mode_refuses_what_the_onnx_cannot_carry(
    version, precision, dtype, qdq, match
):
    with pytest.raises(EngineError, match=match):
        network_mode(version, precision, np.dtype(dtype), qdq)


def test_compute_capability_tag():
    assert compute_capability_tag((9, 0)) == "sm_90"
    assert compute_capability_tag((8, 6)) == "sm_86"


# --- the status helper -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [0, True, (0, 7)])
def test_check_passes_success(status):
    check(status, "call")


def test_check_returns_results():
    assert check((0, 7), "call") == 7
    assert check(lambda: 5, "call") == 5


@pytest.mark.parametrize("status", [1, 700, False, (2, None)])
def test_check_raises_on_failure(status):
    with pytest.raises(EngineError, match="memcpy failed"):
        check(status, "memcpy")


def test_check_wraps_exceptions_from_calls():
    def boom():
        raise RuntimeError("cuMemAlloc failed: out of memory")

    with pytest.raises(EngineError, match="mem_alloc failed: cuMemAlloc"):
        check(boom, "mem_alloc")


# --- behaviour on a machine without TensorRT -------------------------------------------------------------


@pytest.mark.skipif(HAS_TRT_STACK, reason="tensorrt and pycuda are installed here")
def test_modules_import_without_tensorrt_or_pycuda():
    assert "tensorrt" not in sys.modules and "pycuda" not in sys.modules
    assert TensorRTEngine.is_available() is False
    assert "tensorrt" not in sys.modules


@pytest.mark.skipif(HAS_TRT_STACK, reason="tensorrt and pycuda are installed here")
def test_create_engine_says_tensorrt_is_missing(tiny_onnx):
    with pytest.raises(EngineError, match="tensorrt and pycuda .* not installed"):
        create_engine("tensorrt", model_path=tiny_onnx)


@pytest.mark.skipif(HAS_TRT_STACK, reason="tensorrt and pycuda are installed here")
def test_buffers_say_pycuda_is_missing():
    with pytest.raises(EngineError, match="pycuda is not installed"):
        HostDeviceBuffer("image", (4, 3, 8, 8), np.float32)


@pytest.mark.skipif(HAS_TRT_STACK, reason="tensorrt and pycuda are installed here")
def test_build_cli_fails_cleanly_without_tensorrt(tiny_onnx, tmp_path, capsys):
    assert main([str(tiny_onnx), "--cache-dir", str(tmp_path)]) == 1
    assert "TensorRT is not installed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_build_cli_reports_missing_model(tmp_path, capsys):
    assert main([str(tmp_path / "absent.onnx"), "--cache-dir", str(tmp_path)]) == 1
    assert "ONNX model not found" in capsys.readouterr().err


# --- GPU: build -> run -> parity with ONNX Runtime -------------------------------------------------------


def _gpu_ready() -> bool:
    return HAS_TRT_STACK and TensorRTEngine.is_available()


needs_gpu = pytest.mark.skipif(
    not _gpu_ready(), reason="needs tensorrt, pycuda and a CUDA device"
)


def _faces(batch: int) -> np.ndarray:
    return (
        np.random.default_rng(0)
        .uniform(-0.5, 0.5, (batch, 3, 150, 150))
        .astype(np.float32)
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    )


@pytest.fixture(scope="module")
def ort_reference():
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    with OnnxRuntimeEngine(SHIPPED, providers=["CPUExecutionProvider"]) as engine:
        yield engine.run({"image": _faces(11)})["embedding"]


@pytest.mark.gpu
@needs_gpu
def test_gpu_fp32_parity_with_onnxruntime_and_batch_split(tmp_path, ort_reference):
    with TensorRTEngine(
        SHIPPED, max_batch=4, cache_dir=tmp_path
    ) as engine:  # 11 faces -> chunks 4+4+3
        assert engine.max_batch == 4
        assert [s.name for s in engine.inputs] == ["image"] and [
            s.name for s in engine.outputs
        ] == ["embedding"]
        got = engine.run({"image": _faces(11)})["embedding"]
        assert engine.run({"image": _faces(0)})["embedding"].shape == (0, 128)
    assert got.shape == (11, 128) and got.dtype == np.float32
    assert np.max(np.abs(got - ort_reference)) < 1e-3
    assert (
        len(list(tmp_path.glob("*.plan"))) == 1
        and len(list(tmp_path.glob("timing-*.cache"))) == 1
    )


@pytest.mark.gpu
@needs_gpu
def test_gpu_plan_is_reused_and_loads_directly(tmp_path):
    from engines.build import build_plan

    first = build_plan(SHIPPED, BuildOptions(max_batch=2), tmp_path)
    mtime = first.stat().st_mtime_ns
    assert (
        build_plan(SHIPPED, BuildOptions(max_batch=2), tmp_path) == first
        and first.stat().st_mtime_ns == mtime
    )
    with create_engine("tensorrt", model_path=first) as engine:
        assert engine.run({"image": _faces(2)})["embedding"].shape == (2, 128)


@pytest.mark.gpu
@needs_gpu
def test_gpu_fp16_cosine_with_onnxruntime(tmp_path, ort_reference):
    import tensorrt

    if not parse_trt_version(tensorrt.__version__)[0] < 11:
        pytest.skip(
            "TensorRT 11 builds fp16 only from an fp16 ONNX, which is not shipped"
        )
    with TensorRTEngine(
        SHIPPED, max_batch=16, precision="fp16", cache_dir=tmp_path
    ) as engine:
        got = engine.run({"image": _faces(11)})["embedding"]
    assert np.min(_cosine(got.astype(np.float32), ort_reference)) > 0.999
