"""Issue 19, ONNX Runtime GPU / auto selection / Triton side, against fakes of onnxruntime's session, the
engine registry and tritonclient.http written from their documented behaviour."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fake_nvidia import FakeCudaEngine, FakeTrt, fake_tritonclient_http
from onnx import TensorProto, helper, numpy_helper

import engines.build
from engines import ort_gpu, registry
from engines.onnxruntime_engine import CPU, CUDA, OnnxRuntimeEngine
from engines.selection import PREFERENCE, create_preferred
from engines.triton import TritonEngine, copy_onnx, export_repository, parse_config
from pipeline.core.errors import ConfigError, EngineError
from pipeline.recognise.embedder import Embedder

REPO = Path(__file__).resolve().parents[2]
CARD = REPO / "models" / "facestream-default.json"
TRT = ort_gpu.TENSORRT
REAL_SESSION = ort.InferenceSession  # the fake below delegates I/O metadata to a real CPU session


def scale_onnx(path: Path, weight: float, external: bool = False) -> Path:
    """image float32[N,3] -> embedding = image * w (one topology; `weight` changes only the bytes)."""
    init = numpy_helper.from_array(np.full((3,), weight, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Mul", ["image", "w"], ["embedding"])], "scale",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3])], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location=f"{path.stem}.weights", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


class FakeSession:
    """ort.InferenceSession as documented: providers are names or (name, options) pairs; a provider whose
    libraries do not load is dropped with only a warning, and `get_providers()` says what is left."""

    broken: ClassVar[set[str]] = set()
    opened: ClassVar[list[FakeSession]] = []

    def __init__(self, path, sess_options=None, providers=()) -> None:
        self.requested = [p if isinstance(p, str) else p[0] for p in providers]
        self.options = {p[0]: p[1] for p in providers if not isinstance(p, str)}
        self.real = REAL_SESSION(path, providers=[CPU])
        FakeSession.opened.append(self)

    def get_providers(self):
        kept = [p for p in self.requested if p not in self.broken]
        return kept if CPU in kept else [*kept, CPU]

    def get_inputs(self):
        return self.real.get_inputs()

    def get_outputs(self):
        return self.real.get_outputs()


@pytest.fixture
def gpu_ort(monkeypatch):
    """An onnxruntime-gpu build as ORT reports it: TensorRT and CUDA listed whether or not their libraries load."""
    FakeSession.broken, FakeSession.opened = set(), []
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    return FakeSession


# --- defects 5 and 6: ORT TensorRT EP cache per ONNX content, [TensorRT, CUDA, CPU] ------------------------


def test_trt_ep_cache_folder_follows_the_weights(gpu_ort, tmp_path):
    old = scale_onnx(tmp_path / "face.onnx", 2.0)
    first = ort_gpu.OrtTensorRTEngine(old, cache_dir=tmp_path / "cache")
    same = tmp_path / "copy" / "face.onnx"
    same.parent.mkdir()
    shutil.copyfile(old, same)
    again = ort_gpu.OrtTensorRTEngine(same, cache_dir=tmp_path / "cache")
    retrained = ort_gpu.OrtTensorRTEngine(scale_onnx(tmp_path / "face.onnx", 3.0), cache_dir=tmp_path / "cache")
    assert first.cache_dir == again.cache_dir != retrained.cache_dir
    assert first.cache_dir.parent == tmp_path / "cache" and first.cache_dir.name.startswith("face-")
    options = [s.options[TRT] for s in gpu_ort.opened]
    assert options[0]["trt_engine_cache_path"] == options[0]["trt_timing_cache_path"] == str(first.cache_dir)
    assert options[2]["trt_engine_cache_path"] == str(retrained.cache_dir)


def test_trt_ep_asks_for_tensorrt_then_cuda_then_cpu(gpu_ort, tmp_path):
    engine = ort_gpu.OrtTensorRTEngine(scale_onnx(tmp_path / "face.onnx", 2.0), cache_dir=tmp_path)
    [session] = gpu_ort.opened
    assert session.requested == [TRT, CUDA, CPU] and engine.providers == [TRT, CUDA, CPU]
    assert session.options[TRT]["trt_fp16_enable"] == "1" and session.options[CUDA]["device_id"] == "0"
    assert session.options[TRT]["trt_profile_max_shapes"] == "image:256x3"


def test_trt_ep_without_its_cuda_fallback_is_refused(gpu_ort, tmp_path):
    gpu_ort.broken = {CUDA}
    with pytest.raises(EngineError, match=f"fell back silently.*{CUDA}"):
        ort_gpu.OrtTensorRTEngine(scale_onnx(tmp_path / "face.onnx", 2.0), cache_dir=tmp_path)


# --- defect 7: construct in preference order, fall through on EngineError ----------------------------------


def test_auto_falls_through_a_listed_but_missing_tensorrt(gpu_ort, tmp_path, caplog):
    """onnxruntime#13501: TensorRT is listed with no TensorRT installed; the session drops it at load."""
    gpu_ort.broken = {TRT}
    with caplog.at_level(logging.INFO, logger="engines.selection"):
        engine = create_preferred(scale_onnx(tmp_path / "face.onnx", 2.0),
                                  options={"onnxruntime-tensorrt": {"cache_dir": tmp_path / "cache"}})
    assert engine.name == "onnxruntime-cuda" and engine.providers == [CUDA, CPU]
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "onnxruntime-tensorrt (failed to start: onnxruntime fell back silently" in text
    assert "tensorrt (" in text and "chose onnxruntime-cuda" in text


def test_auto_lists_every_reason_when_nothing_starts(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @registry.register_engine("fake-gpu")
    class FakeGpu:
        def __init__(self, model_path) -> None:
            raise EngineError("libnvinfer.so.10: cannot open shared object file")

    with pytest.raises(EngineError, match=r"fake-gpu \(failed to start: libnvinfer.*nonexistent-engine \(unknown"):
        create_preferred(tmp_path / "m.onnx", ("fake-gpu", "nonexistent-engine"))
    with pytest.raises(EngineError, match="empty"):
        create_preferred(tmp_path / "m.onnx", ())


def test_embedder_auto_ends_on_cpu_when_every_gpu_engine_fails(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    class Unloadable:
        @classmethod
        def is_available(cls) -> bool:
            return True  # what a "built with" check says

        def __init__(self, model_path, **options) -> None:
            raise EngineError("CUDA driver could not initialise")

    for name in PREFERENCE[:-1]:
        registry._REGISTRY[name] = Unloadable
    embedder = Embedder(CARD, engine="auto", auto_options={"onnxruntime": {"providers": [CPU], "threads": 1}})
    assert isinstance(embedder.engine, OnnxRuntimeEngine) and embedder.engine.providers == [CPU]
    assert embedder.embed(np.zeros((2, *embedder.size, 3), np.uint8)).shape == (2, 128)
    with pytest.raises(EngineError, match="per engine"):
        Embedder(CARD, engine="auto", threads=1)


# --- defect 8 and the URL: Triton's max_batch_size ------------------------------------------------------------


@pytest.fixture
def triton(monkeypatch):
    requests, clients = [], []
    http = fake_tritonclient_http(4, requests, clients)
    monkeypatch.setitem(sys.modules, "tritonclient", type(sys)("tritonclient"))
    monkeypatch.setitem(sys.modules, "tritonclient.http", http)
    monkeypatch.setattr(sys.modules["tritonclient"], "http", http, raising=False)
    return requests, clients


def test_triton_run_splits_at_max_batch_size(triton):
    requests, _ = triton
    engine = TritonEngine("localhost:8000", "embedder")
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    out = engine.run({"image": x})["embedding"]
    assert requests == [4, 4, 2] and engine.max_batch_size == 4
    np.testing.assert_array_equal(out, x * 2)


@pytest.mark.parametrize("url, host, ssl", [("http://triton:8000", "triton:8000", False),
                                            ("https://triton:8443/", "triton:8443", True),
                                            ("triton:8000", "triton:8000", False)])
def test_triton_url_with_scheme(triton, url, host, ssl):
    _, clients = triton
    TritonEngine(url, "embedder")
    assert clients == [{"url": host, "ssl": ssl}]


@pytest.mark.parametrize("url", ["grpc://triton:8001", "http://triton:8000/v2"])
def test_triton_url_the_http_client_cannot_take(triton, url):
    with pytest.raises(EngineError, match="Triton URL"):
        TritonEngine(url, "embedder")


# --- risky: Triton export with external data, plan profile vs max_batch_size --------------------------------


def test_export_copies_onnx_external_data(tmp_path):
    (tmp_path / "src").mkdir()
    source = scale_onnx(tmp_path / "src" / "face.onnx", 2.0, external=True)
    target = tmp_path / "repo" / "1" / "model.onnx"
    target.parent.mkdir(parents=True)
    copy_onnx(source, target)
    assert (target.parent / "face.weights").is_file()
    session = ort.InferenceSession(str(target), providers=[CPU])
    np.testing.assert_array_equal(session.run(None, {"image": np.ones((2, 3), np.float32)})[0], np.full((2, 3), 2.0))


def test_export_refuses_external_data_outside_the_model_folder(tmp_path):
    (tmp_path / "src").mkdir()
    source = scale_onnx(tmp_path / "src" / "face.onnx", 2.0, external=True)
    model = onnx.load(str(source), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../elsewhere.weights"
    onnx.save(model, str(source))
    with pytest.raises(ConfigError, match="must stay beside the model"):
        copy_onnx(source, tmp_path / "model.onnx")


@pytest.mark.parametrize("profile_max, max_batch, ok", [(16, 32, False), (32, 32, True), (64, 32, True)])
def test_plan_export_checks_the_profile_against_max_batch_size(tmp_path, monkeypatch, profile_max, max_batch, ok):
    engine = FakeCudaEngine({"image": ("INPUT", (-1, 3, 150, 150), "FLOAT", profile_max),
                             "embedding": ("OUTPUT", (-1, 128), "FLOAT", profile_max)})
    monkeypatch.setattr(engines.build, "import_tensorrt", lambda: FakeTrt(engine=engine))
    plan = tmp_path / "face.plan"
    plan.write_bytes(b"plan")
    if ok:
        folder = export_repository(CARD, tmp_path / "repo", plan=plan, max_batch=max_batch)
        assert parse_config((folder / "config.pbtxt").read_text())["max_batch_size"] == max_batch
    else:
        with pytest.raises(ConfigError, match=f"up to {profile_max}.*below max_batch_size {max_batch}"):
            export_repository(CARD, tmp_path / "repo", plan=plan, max_batch=max_batch)


def test_plan_export_refuses_a_plan_tensorrt_cannot_read(tmp_path, monkeypatch):
    monkeypatch.setattr(engines.build, "import_tensorrt", lambda: FakeTrt(engine=None))
    plan = tmp_path / "face.plan"
    plan.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="could not deserialize"):
        export_repository(CARD, tmp_path / "repo", plan=plan)


# --- issue 18: a remote embedder that stops answering -------------------------------------------------------


def test_triton_that_stops_answering_is_unavailable_not_broken(triton, monkeypatch):
    from pipeline.core.errors import EngineUnavailable

    engine = TritonEngine("localhost:8000", "embedder")
    x = np.ones((2, 3), np.float32)

    def refused(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(engine._client, "infer", refused)
    with pytest.raises(EngineUnavailable, match="Triton inference failed for embedder at localhost:8000.*refused"):
        engine.run({"image": x})
    monkeypatch.undo()  # the server is back: the same engine answers again


def test_triton_unreachable_at_start_names_the_server(triton, monkeypatch):
    from pipeline.core.errors import EngineUnavailable

    http = sys.modules["tritonclient.http"]

    def refused(self, name, version=""):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(http.InferenceServerClient, "is_model_ready", refused)
    with pytest.raises(EngineUnavailable, match="cannot reach Triton model 'embedder' at triton:8000"):
        TritonEngine("triton:8000", "embedder")


def test_config_engine_triton_builds_the_triton_engine(triton):
    from pipeline.app.config import load_app_config
    from pipeline.app.services import engine_options
    from pipeline.recognise.embedder import DEFAULT_MODEL
    from engines import create_engine

    cfg = load_app_config(None, ["engine.name=triton", "engine.triton_url=http://triton:8000",
                                 "engine.triton_model=embedder"])
    options = engine_options(cfg, "triton", DEFAULT_MODEL)
    assert options == {"url": "http://triton:8000", "model_name": "embedder", "timeout_s": 10.0}
    engine = create_engine("triton", model_path=DEFAULT_MODEL, **options)
    assert engine.name == "triton" and engine.model_name == "embedder"
    default = engine_options(load_app_config(None, ["engine.name=triton"]), "triton", DEFAULT_MODEL)
    assert default["model_name"].startswith("facestream")  # the card's model_id, as `engines.triton export` names it
