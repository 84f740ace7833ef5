"""Issue 19, TensorRT and CUDA side: engines.build, engines.tensorrt_engine, engines.cuda_buffers and the torch-cuda
graph capture against fakes of tensorrt / pycuda / torch.cuda written from their documented behaviour."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from fake_nvidia import FakeCuda, FakeCudaEngine, FakeTorchCuda, FakeTrt
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from engines import build
from engines.base import TensorSpec, validate_feeds
from engines.build import (
    BuildOptions,
    EngineBuilder,
    cached_plan,
    plan_cache_key,
    timing_cache_path,
    trt_logger,
)
from engines.cuda_buffers import release_primary_context
from engines.onnx_graph import onnx_compute_dtype
from engines.tensorrt_engine import TensorRTEngine, io_specs
from engines.torch_cuda_engine import capture_graphs
from pipeline.core.errors import EngineError

SHA = "ab" * 32


def scale_onnx(path: Path, weight: float, fp16_inside: bool) -> Path:
    """image float32[N,3,4,4] -> embedding = image * weight; with `fp16_inside`, the keep_io_types=True shape:
    Cast(to=FLOAT16) -> Mul by a FLOAT16 initializer -> Cast(to=FLOAT), float32 at both edges."""
    dtype = np.float16 if fp16_inside else np.float32
    init = numpy_helper.from_array(np.array(weight, dtype), "w")
    if fp16_inside:
        nodes = [helper.make_node("Cast", ["image"], ["x16"], to=TensorProto.FLOAT16),
                 helper.make_node("Mul", ["x16", "w"], ["y16"]),
                 helper.make_node("Cast", ["y16"], ["embedding"], to=TensorProto.FLOAT)]
    else:
        nodes = [helper.make_node("Mul", ["image", "w"], ["embedding"])]
    shape = ["N", 3, 4, 4]
    graph = helper.make_graph(nodes, "scale", [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, shape)], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def fp16_io32(tmp_path) -> Path:
    return scale_onnx(tmp_path / "fp16_io32.onnx", 2.0, fp16_inside=True)


@pytest.fixture
def fp32_onnx(tmp_path) -> Path:
    return scale_onnx(tmp_path / "fp32.onnx", 2.0, fp16_inside=False)


# --- defect 1: precision from what the graph computes in, not from its inputs -----------------------------


def test_compute_dtype_sees_fp16_behind_float32_inputs(fp16_io32, fp32_onnx):
    assert onnx_compute_dtype(onnx.load(str(fp16_io32))) == np.float16
    assert onnx_compute_dtype(onnx.load(str(fp32_onnx))) == np.float32


@pytest.mark.parametrize("version, flags", [("11.1.0", 0), ("10.16.0", 1)])
def test_fp16_request_on_keep_io_types_onnx_builds_strongly_typed(fp16_io32, tmp_path, version, flags):
    trt = FakeTrt(version)
    assert EngineBuilder(trt).build(fp16_io32, BuildOptions("fp16"), tmp_path / "t.cache") == b"PLAN"
    # Strongly typed (flag on 10, implicit on 11) and never the legacy FP16 flag: the ONNX carries fp16.
    assert trt.network_flags == [flags] and trt.configs[0].flags == []


@pytest.mark.parametrize("version", ["11.1.0", "10.16.0"])
def test_fp32_request_on_keep_io_types_onnx_is_refused(fp16_io32, tmp_path, version):
    trt = FakeTrt(version)
    with pytest.raises(EngineError, match="ONNX is fp16"):
        EngineBuilder(trt).build(fp16_io32, BuildOptions("fp32"), tmp_path / "t.cache")
    assert trt.builds == 0


# --- defect 2: set_timing_cache -> False, get_timing_cache -> None ----------------------------------------


def test_refused_timing_cache_gives_way_to_a_fresh_one(fp32_onnx, tmp_path, caplog):
    timing = tmp_path / "t.cache"
    timing.write_bytes(b"FROM-AN-H100")
    trt = FakeTrt(accept_saved_cache=False)
    with caplog.at_level(logging.WARNING, logger="engines.build"):
        plan = EngineBuilder(trt).build(fp32_onnx, BuildOptions(), timing)
    assert plan == b"PLAN"
    # The saved cache was offered with ignore_mismatch=True (as NVIDIA's sample), then a fresh one replaced it.
    assert trt.configs[0].timing_calls == [(b"FROM-AN-H100", True), (b"", True)]
    assert any("refused the timing cache" in r.getMessage() for r in caplog.records)
    assert timing.read_bytes() == b"TIMING-" and not list(tmp_path.glob("*.partial"))


def test_missing_timing_cache_after_build_still_writes_the_plan(fp32_onnx, tmp_path, caplog):
    timing = tmp_path / "t.cache"
    trt = FakeTrt(return_timing_cache=False)
    with caplog.at_level(logging.WARNING, logger="engines.build"):
        plan = cached_plan(tmp_path / "m.plan",
                           lambda: EngineBuilder(trt).build(fp32_onnx, BuildOptions(), timing))
    assert plan.read_bytes() == b"PLAN"
    assert not timing.exists()
    assert any("no timing cache" in r.getMessage() for r in caplog.records)


# --- defect 3: add_optimization_profile -> -1 -------------------------------------------------------------


def test_invalid_profile_is_an_engine_error_before_building(fp32_onnx, tmp_path):
    trt = FakeTrt(profile_index=-1)
    with pytest.raises(EngineError, match=r"rejected the optimisation profile.*image.*\(1, 3, 4, 4\)"):
        EngineBuilder(trt).build(fp32_onnx, BuildOptions(max_batch=8), tmp_path / "t.cache")
    assert trt.builds == 0


# --- defect 4: trt.nptype's TypeError ---------------------------------------------------------------------


def test_tensor_type_numpy_lacks_is_an_engine_error_naming_the_tensor():
    engine = FakeCudaEngine({"image": ("INPUT", (-1, 3, 4, 4), "FLOAT", 8),
                             "embedding": ("OUTPUT", (-1, 128), "BF16", 8)})
    with pytest.raises(EngineError, match="'embedding' has type BF16"):
        io_specs(FakeTrt(), engine)


def test_io_specs_by_name():
    engine = FakeCudaEngine({"image": ("INPUT", (-1, 3, 4, 4), "HALF", 8),
                             "embedding": ("OUTPUT", (-1, 128), "FLOAT", 8)})
    inputs, outputs = io_specs(FakeTrt(), engine)
    assert inputs == [TensorSpec("image", (None, 3, 4, 4), np.float16)]
    assert outputs == [TensorSpec("embedding", (None, 128), np.float32)]


# --- risky: plan key by GPU name, one logger ---------------------------------------------------------------


def test_plan_and_timing_cache_keys_tell_h100_from_h200():
    h100, h200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"
    assert plan_cache_key(SHA, "10.16.0", "sm_90", BuildOptions(), h100) != \
        plan_cache_key(SHA, "10.16.0", "sm_90", BuildOptions(), h200)
    assert timing_cache_path("/c", "10.16.0", "sm_90", h200) == Path("/c/timing-trt10.16.0-sm_90-nvidia-h200.cache")


def test_one_trt_logger_for_builder_and_runtime(fp32_onnx, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(build, "_LOGGERS", {})
    trt = FakeTrt()
    EngineBuilder(trt).build(fp32_onnx, BuildOptions(), tmp_path / "t.cache")
    EngineBuilder(trt).build(fp32_onnx, BuildOptions(), tmp_path / "t.cache")
    trt.Runtime(trt_logger(trt))
    assert len(trt.loggers) == 3 and len({id(x) for x in trt.loggers}) == 1
    logger = trt_logger(trt)
    with caplog.at_level(logging.INFO, logger="tensorrt"):
        logger.log(FakeTrt.ILogger.Severity.VERBOSE, "tactic 0x1234 took 0.1 ms")
        logger.log(FakeTrt.ILogger.Severity.WARNING, "weights are not fp16-representable")
    assert [r.getMessage() for r in caplog.records if r.name == "tensorrt"] == ["weights are not fp16-representable"]


# --- risky: pycuda primary context, one stream without a lock ----------------------------------------------


def test_release_primary_context_pops_what_detach_leaves_pushed():
    cuda = FakeCuda()
    context = cuda.Device(0).retain_primary_context()
    release_primary_context(cuda, context)
    assert context.detached == 1 and cuda.stack == []


def bare_trt_engine(cuda: FakeCuda) -> TensorRTEngine:
    """A TensorRTEngine with its CUDA state faked, skipping __init__ (which needs the real libraries)."""
    engine = object.__new__(TensorRTEngine)
    engine.model_path = Path("face.plan")
    engine._cuda, engine._cuda_context = cuda, cuda.Device(0).retain_primary_context()
    engine._owner_thread, engine._lock, engine._buffers = threading.get_ident(), threading.Lock(), {}
    engine._context = object()
    engine.inputs = [TensorSpec("image", (None, 3), np.float32)]
    engine.outputs = [TensorSpec("embedding", (None, 3), np.float32)]
    engine.max_batch = 4
    return engine


def test_close_from_another_thread_is_refused_and_owner_close_leaves_no_context():
    cuda = FakeCuda()
    engine = bare_trt_engine(cuda)
    context = engine._cuda_context
    errors = []
    worker = threading.Thread(target=lambda: errors.append(pytest.raises(EngineError, engine.close)))
    worker.start()
    worker.join()
    assert "thread that created it" in str(errors[0].value) and context.detached == 0
    engine.close()
    assert context.detached == 1 and cuda.stack == [] and engine._context is None
    engine.close()  # a second close is a no-op


def test_concurrent_runs_do_not_share_the_stream_at_once():
    engine = bare_trt_engine(FakeCuda())
    active, peak = [0], [0]

    def run_chunk(feeds):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        time.sleep(0.02)  # the copies and execute_async_v3 on the one stream
        active[0] -= 1
        return {"embedding": feeds["image"] * 2}

    engine._run_chunk = run_chunk
    x = np.ones((6, 3), np.float32)
    results = []
    threads = [threading.Thread(target=lambda: results.append(engine.run({"image": x}))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 1
    assert len(results) == 3 and all(np.array_equal(r["embedding"], x * 2) for r in results)


# --- risky: CUDA graphs captured at build, thread-local, one pool -----------------------------------------


def test_every_bucket_is_captured_up_front_thread_local_in_one_pool():
    fake = FakeTorchCuda()
    module = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).eval()
    graphs = capture_graphs(module, (1, 16, 64), (3, 2, 2), device="cpu", dtype=None, cuda=fake)
    assert sorted(graphs) == [1, 16, 64]
    assert [c["capture_error_mode"] for c in fake.captures] == ["thread_local"] * 3
    assert all(c["pool"] is fake.pool for c in fake.captures)
    assert graphs[16][1].shape == (16, 3, 2, 2) and graphs[16][2].shape == (16, 5)
    nhwc = capture_graphs(module, (4,), (3, 2, 2), device="cpu", dtype=None, cuda=fake,
                          memory_format=torch.channels_last)
    assert nhwc[4][1].is_contiguous(memory_format=torch.channels_last) and not nhwc[4][1].is_contiguous()


# --- risky: FP16-I/O ONNX in validate_feeds --------------------------------------------------------------


def test_float32_feed_to_fp16_io_model_says_how_to_fix_it():
    specs = [TensorSpec("image", (None, 3), np.float16)]
    with pytest.raises(EngineError, match=r"must have dtype float16, got float32.*astype\(np.float16\)"):
        validate_feeds(specs, {"image": np.zeros((2, 3), np.float32)})
    with pytest.raises(EngineError) as other:
        validate_feeds(specs, {"image": np.zeros((2, 3), np.int64)})
    assert "astype" not in str(other.value)
