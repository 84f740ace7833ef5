"""engines/: torch vs ONNX Runtime parity on a real exported conv net, feed validation, provider checks, registry."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from engines import (
    Engine,
    TensorSpec,
    available_engines,
    create_engine,
    known_engines,
    onnxruntime_engine,
    registry,
    validate_feeds,
)
from engines.onnx_export import export_onnx
from engines.onnxruntime_engine import CPU, CUDA, OnnxRuntimeEngine, resolve_providers, verify_providers
from engines.torch_engine import TorchEngine
from pipeline.core.errors import EngineError

AZURE = "AzureExecutionProvider"
TRT = "TensorrtExecutionProvider"
HAS_CUDA = CUDA in ort.get_available_providers()

INPUTS = [TensorSpec("input", (None, 3, 112, 112), np.float32)]
OUTPUTS = [TensorSpec("embedding", (None, 128), np.float32)]


class TinyEmbedder(nn.Module):
    """A small FaceNet-shaped net: strided conv/PReLU stages, pooled, projected to 128-d and L2-normalised."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.PReLU(16),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.PReLU(32),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.PReLU(64),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.project = nn.Linear(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.project(self.features(x)), dim=1)


@pytest.fixture(scope="module")
def module() -> TinyEmbedder:
    torch.manual_seed(0)
    net = TinyEmbedder()
    # Non-trivial BatchNorm statistics, so an oracle left in train mode would visibly disagree with ONNX.
    net.features[1].running_mean.uniform_(-0.5, 0.5)
    net.features[1].running_var.uniform_(0.5, 2.0)
    return net  # left in train mode on purpose: export and TorchEngine must both switch to eval themselves


@pytest.fixture(scope="module")
def onnx_path(module: TinyEmbedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("engines") / "tiny.onnx"
    return export_onnx(module, torch.randn(2, 3, 112, 112), path, ["input"], ["embedding"])


@pytest.fixture(scope="module")
def ort_engine(onnx_path: Path) -> OnnxRuntimeEngine:
    with OnnxRuntimeEngine(onnx_path, providers=[CPU], threads=1) as engine:
        yield engine


@pytest.fixture(scope="module")
def torch_engine(module: TinyEmbedder) -> TorchEngine:
    with TorchEngine(module, INPUTS, OUTPUTS) as engine:
        yield engine


def faces(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 3, 112, 112)).astype(np.float32)


# ---------------------------------------------------------------- parity and dynamic batch


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_torch_and_onnxruntime_agree_at_any_batch(ort_engine, torch_engine, batch):
    feeds = {"input": faces(batch, seed=batch)}
    got = ort_engine.run(feeds)["embedding"]
    want = torch_engine.run(feeds)["embedding"]
    assert got.shape == want.shape == (batch, 128)
    assert got.dtype == want.dtype == np.float32
    assert np.abs(got - want).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    if batch > 1:  # different faces must give different embeddings, or parity would be vacuous
        assert np.abs(got[0] - got[1]).max() > 1e-3


def test_row_results_do_not_depend_on_batch_neighbours(ort_engine):
    batch = faces(5, seed=7)
    together = ort_engine.run({"input": batch})["embedding"]
    alone = ort_engine.run({"input": batch[2:3]})["embedding"]
    np.testing.assert_allclose(together[2:3], alone, atol=1e-5)


def test_batch_zero_returns_empty_outputs_without_calling_the_backend(ort_engine, torch_engine, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("backend called for an empty batch")

    monkeypatch.setattr(ort_engine._session, "run", fail)
    monkeypatch.setattr(torch_engine._module, "forward", fail)
    for engine in (ort_engine, torch_engine):
        out = engine.run({"input": faces(0)})
        assert list(out) == ["embedding"]
        assert out["embedding"].shape == (0, 128) and out["embedding"].dtype == np.float32


def test_onnxruntime_specs_come_from_the_model(ort_engine):
    assert ort_engine.inputs == [TensorSpec("input", ("batch", 3, 112, 112), np.float32)]
    assert ort_engine.outputs == [TensorSpec("embedding", ("batch", 128), np.float32)]
    assert ort_engine.providers == [CPU]
    assert ort_engine._session.get_session_options().intra_op_num_threads == 1


def test_engines_satisfy_the_protocol(ort_engine, torch_engine):
    assert isinstance(ort_engine, Engine) and isinstance(torch_engine, Engine)
    assert (ort_engine.name, torch_engine.name) == ("onnxruntime", "torch")


# ---------------------------------------------------------------- errors


def feed_cases() -> list:
    good = faces(2)
    return [
        pytest.param({"image": good}, r"missing \['input'\], unknown \['image'\]", id="wrong-name"),
        pytest.param({"input": good, "extra": good}, r"unknown \['extra'\]", id="extra-name"),
        pytest.param({"input": good.astype(np.float64)}, "dtype float32, got float64", id="float64"),
        pytest.param({"input": (good * 100).astype(np.uint8)}, "dtype float32, got uint8", id="uint8"),
        pytest.param({"input": good[0]}, r"rank 4, got shape \(3, 112, 112\)", id="rank"),
        pytest.param({"input": faces(2)[:, :, :100]}, r"size 112 on axis 2, got shape \(2, 3, 100, 112\)", id="dim"),
        pytest.param({"input": good.tolist()}, "must be a numpy array, got list", id="list"),
    ]


@pytest.mark.parametrize("kind", ["onnxruntime", "torch"])
@pytest.mark.parametrize(("feeds", "message"), feed_cases())
def test_bad_feeds_raise_engine_error_with_expected_and_actual(ort_engine, torch_engine, kind, feeds, message):
    engine = ort_engine if kind == "onnxruntime" else torch_engine
    with pytest.raises(EngineError, match=message):
        engine.run(feeds)


def test_inputs_must_agree_on_batch_size():
    specs = [TensorSpec("a", (None, 4), np.float32), TensorSpec("b", ("batch", 2), np.float32)]
    ok = {"a": np.zeros((3, 4), np.float32), "b": np.zeros((3, 2), np.float32)}
    assert validate_feeds(specs, ok) == 3
    with pytest.raises(EngineError, match=r"disagree on batch size.*'a': 3, 'b': 5"):
        validate_feeds(specs, {**ok, "b": np.zeros((5, 2), np.float32)})


def _not_onnx(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / f"{kind}.onnx"
    if kind == "text":
        path.write_text("this is a README, not a model\n")
    elif kind == "empty":
        path.write_bytes(b"")
    else:  # a real JPEG renamed, the classic mix-up
        jpeg = request.getfixturevalue("shared_data") / "insightface_rest_test_images" / "Stallone.jpg"
        path.write_bytes(jpeg.read_bytes())
    return path


@pytest.mark.parametrize("kind", ["text", "empty", "jpeg"])
def test_non_onnx_file_is_refused_by_name(kind, tmp_path, request):
    path = _not_onnx(kind, tmp_path, request)
    with pytest.raises(EngineError, match=f"{path.name} is not a valid ONNX model"):
        create_engine("onnxruntime", model_path=path)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        pytest.param("tensorflow", {}, "unknown engine 'tensorflow'; known engines: onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt, tensorrt, torch, torch-cuda, triton", id="unknown"),
        pytest.param("auto", {}, "unknown engine 'auto'", id="auto-not-yet"),
        pytest.param("onnxruntime", {"model_path": "/nonexistent/face.onnx"}, "not found: /nonexistent/face.onnx",
                     id="missing-file"),
        pytest.param("onnxruntime", {"model": "x.onnx"}, "does not accept options", id="bad-option"),
        pytest.param("onnxruntime", {"model_path": "MODEL", "threads": -1}, "threads must be >= 0", id="threads"),
        pytest.param("onnxruntime", {"model_path": "MODEL", "providers": []}, "at least one", id="no-providers"),
    ],
)  # fmt: skip
def test_create_engine_errors(name, options, message, onnx_path):
    options = {k: onnx_path if v == "MODEL" else v for k, v in options.items()}
    with pytest.raises(EngineError, match=message):
        create_engine(name, **options)


def test_fixed_batch_model_is_refused_at_load(module, tmp_path):
    example = torch.from_numpy(faces(1))
    path = export_onnx(module, example, tmp_path / "fixed.onnx", ["input"], ["embedding"], dynamic_axes={})
    with pytest.raises(EngineError, match="fixed batch axis"):
        OnnxRuntimeEngine(path)


def test_torch_engine_output_count_must_match_specs(module):
    engine = TorchEngine(module, INPUTS, [*OUTPUTS, TensorSpec("extra", (None,), np.float32)])
    with pytest.raises(EngineError, match="module returned 1 outputs, output specs name 2"):
        engine.run({"input": faces(1)})


def test_closed_engines_refuse_to_run(onnx_path, module):
    for engine in (OnnxRuntimeEngine(onnx_path), TorchEngine(module, INPUTS, OUTPUTS)):
        with engine:
            engine.run({"input": faces(1)})
        with pytest.raises(EngineError, match="closed"):
            engine.run({"input": faces(1)})


# ---------------------------------------------------------------- providers


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is really available here")
def test_unavailable_provider_is_refused_unless_fallback_allowed(onnx_path, caplog):
    with pytest.raises(EngineError, match=f"{CUDA}.*not available"):
        OnnxRuntimeEngine(onnx_path, providers=[CUDA, CPU])
    with caplog.at_level(logging.WARNING, logger="engines.onnxruntime_engine"):
        engine = OnnxRuntimeEngine(onnx_path, providers=[CUDA, CPU], allow_fallback=True)
    assert engine.providers == [CPU]
    assert any(CUDA in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert engine.run({"input": faces(1)})["embedding"].shape == (1, 128)


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is really available here, so ORT would not fall back")
@pytest.mark.filterwarnings("ignore:Specified provider")
def test_silent_fallback_inside_onnxruntime_is_caught(onnx_path, monkeypatch, caplog):
    # Claim CUDA exists, so the request reaches ORT, which then quietly runs on CPU (as when cuDNN is missing).
    monkeypatch.setattr(onnxruntime_engine.ort, "get_available_providers", lambda: [CUDA, CPU])
    with pytest.raises(EngineError, match=f"fell back silently.*{CUDA}"):
        OnnxRuntimeEngine(onnx_path)
    with caplog.at_level(logging.WARNING, logger="engines.onnxruntime_engine"):
        engine = OnnxRuntimeEngine(onnx_path, allow_fallback=True)
    assert engine.providers == [CPU]
    assert any("fell back silently" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("requested", "available", "allow", "expected"),
    [
        (None, [AZURE, CPU], False, [CPU]),
        (None, [TRT, CUDA, AZURE, CPU], False, [CUDA, CPU]),
        ([CPU], [CUDA, CPU], False, [CPU]),
        ([CUDA, CPU], [AZURE, CPU], False, EngineError),
        ([CUDA, CPU], [AZURE, CPU], True, [CPU]),
        ([CUDA], [AZURE, CPU], True, [CPU]),
        ([TRT, CUDA, CPU], [CUDA, CPU], False, EngineError),
    ],
)
def test_resolve_providers(requested, available, allow, expected):
    if expected is EngineError:
        with pytest.raises(EngineError, match="not available"):
            resolve_providers(requested, available, allow)
    else:
        assert resolve_providers(requested, available, allow) == expected


@pytest.mark.parametrize(
    ("requested", "actual", "dropped"),
    [
        ([CUDA, CPU], [CUDA, CPU], None),
        ([CUDA], [CUDA, CPU], None),  # ORT always appends CPU; that is not a fallback
        ([CUDA, CPU], [CPU], CUDA),
        ([TRT, CUDA, CPU], [CUDA, CPU], TRT),
    ],
)
def test_verify_providers(requested, actual, dropped, caplog):
    if dropped is None:
        verify_providers(requested, actual, allow_fallback=False)
        return
    with pytest.raises(EngineError, match=f"fell back silently.*{dropped}"):
        verify_providers(requested, actual, allow_fallback=False)
    with caplog.at_level(logging.WARNING, logger="engines.onnxruntime_engine"):
        verify_providers(requested, actual, allow_fallback=True)
    assert any(dropped in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- registry and export


def test_available_engines_lists_working_backends():
    assert {"onnxruntime", "torch"} <= set(available_engines())
    assert {"onnxruntime", "torch"} <= set(known_engines())


def test_create_engine_builds_registered_classes(onnx_path, module):
    assert isinstance(create_engine("onnxruntime", model_path=onnx_path), OnnxRuntimeEngine)
    assert isinstance(create_engine("torch", module=module, inputs=INPUTS, outputs=OUTPUTS), TorchEngine)


def test_registry_reports_unusable_backends_and_refuses_duplicates(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @registry.register_engine("broken")
    class Broken:
        @classmethod
        def is_available(cls) -> bool:
            return False

    assert "broken" in known_engines() and "broken" not in available_engines()
    with pytest.raises(EngineError, match="already registered"):
        registry.register_engine("broken")(type("Other", (), {}))


def test_export_is_deterministic_and_keeps_module_mode(tmp_path):
    torch.manual_seed(1)
    net = TinyEmbedder().train()
    a = export_onnx(net, torch.randn(2, 3, 112, 112), tmp_path / "a.onnx", ["input"], ["e"])
    b = export_onnx(net, torch.randn(3, 3, 112, 112), tmp_path / "b.onnx", ["input"], ["e"])
    assert a.read_bytes() == b.read_bytes()
    assert net.training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]  # no partial files left
