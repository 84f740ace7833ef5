"""`engine: auto` selection, the ORT GPU engine wrappers, and the torch-cuda engine's weights from the ONNX."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import engines.torch_cuda_engine as torch_cuda
from engines import create_engine, ort_gpu
from engines.onnxruntime_engine import OnnxRuntimeEngine
from engines.registry import _REGISTRY
from engines.selection import PREFERENCE, choose_engine
from pipeline.core.errors import EngineError
from trainer.models import create_model

REPO = Path(__file__).resolve().parents[2]
CARD = REPO / "models" / "facestream-default.json"
ONNX = REPO / "models" / "facestream-default.onnx"
CROPS = REPO / "state" / "crops" / "lfw150"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize(
    ("available", "chosen"),
    [
        ({"tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime"}, "tensorrt"),
        ({"onnxruntime-tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime"}, "onnxruntime-tensorrt"),
        ({"onnxruntime-cuda", "torch-cuda", "onnxruntime"}, "onnxruntime-cuda"),
        ({"torch-cuda", "onnxruntime", "torch"}, "torch-cuda"),
        ({"onnxruntime", "torch"}, "onnxruntime"),
    ],
)
def test_choose_engine_follows_preference(available, chosen):
    assert choose_engine(PREFERENCE, available) == chosen


def test_choose_engine_refuses_when_nothing_fits():
    with pytest.raises(EngineError, match="none of"):
        choose_engine(("onnxruntime-cuda",), {"onnxruntime"})


@pytest.mark.parametrize(
    ("working", "chosen"),
    [
        ({"onnxruntime-tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime"}, "onnxruntime-tensorrt"),
        ({"onnxruntime-cuda", "torch-cuda", "onnxruntime"}, "onnxruntime-cuda"),
        ({"torch-cuda", "onnxruntime"}, "torch-cuda"),
        ({"onnxruntime"}, "onnxruntime"),
    ],
)
def test_choose_engine_asks_is_available(monkeypatch, working, chosen):
    """The availability table comes from each registered class's `is_available()` (faked here)."""
    for name in ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime"):
        if name in _REGISTRY:
            monkeypatch.setattr(_REGISTRY[name], "is_available", classmethod(lambda cls, ok=name in working: ok))
    assert choose_engine() == chosen


def test_auto_on_this_machine_is_onnxruntime_and_logged(caplog):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the CPU answer does not apply")
    with caplog.at_level(logging.INFO, logger="engines.selection"):
        assert choose_engine() == "onnxruntime"
    message = caplog.records[-1].getMessage()
    assert "chose onnxruntime" in message and "torch-cuda" in message and "onnxruntime-cuda" in message


def test_ort_gpu_engines_report_provider_availability():
    assert ort_gpu.OrtCudaEngine.is_available() == ("CUDAExecutionProvider" in ort_gpu.ort.get_available_providers())
    assert ort_gpu.OrtTensorRTEngine.is_available() == (
        "TensorrtExecutionProvider" in ort_gpu.ort.get_available_providers()
    )


@pytest.mark.skipif(ort_gpu.OrtCudaEngine.is_available(), reason="CUDA provider present")
def test_ort_cuda_engine_refuses_cpu_only_build():
    with pytest.raises(EngineError, match="not available"):
        create_engine("onnxruntime-cuda", model_path=ONNX)


def test_tensorrt_profile_covers_the_batch_range():
    profile = ort_gpu._batch_profile(ONNX, max_batch=256, opt_batch=32)
    assert profile == {
        "trt_profile_min_shapes": "image:1x3x150x150",
        "trt_profile_opt_shapes": "image:32x3x150x150",
        "trt_profile_max_shapes": "image:256x3x150x150",
    }


def torch_cuda_engine(**options):
    """The torch-cuda engine on the shipped model, with the trainer's architectures passed in as callers do."""
    return create_engine("torch-cuda", model_path=ONNX, create_model=create_model, **options)


def real_batch(n: int = 16) -> np.ndarray:
    """Normalised real LFW crops when the cache exists, else a fixed random batch."""
    card = torch_cuda.read_card(CARD)
    if (CROPS / "meta.json").is_file():
        crops = np.load(CROPS / "crops.npy", mmap_mode="r")[:n].astype(np.float32)
    else:
        crops = np.random.default_rng(0).uniform(0, 255, (n, 150, 150, 3)).astype(np.float32)
    x = (crops - np.asarray(card["mean"], np.float32)) / np.asarray(card["std"], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def test_weights_from_onnx_initializers_reproduce_ort_on_cpu():
    """The real check that every state-dict entry (the `centre` buffer and the rewritten fc MatMul) maps."""
    module, _, _ = build = torch_cuda.build_module(CARD, create_model)
    assert build[1:] == ("image", "embedding")
    # The shipped card's `centre` is zeros (trained without re-centring); it must still come from the ONNX.
    import onnx
    from onnx import numpy_helper

    stored = {i.name: i for i in onnx.load(str(ONNX)).graph.initializer}
    np.testing.assert_array_equal(module.centre.numpy(), numpy_helper.to_array(stored["centre"]))
    engine = torch_cuda_engine(device="cpu", fp16=False, cuda_graphs=False)
    x = real_batch()
    ours = engine.run({"image": x})["embedding"]
    theirs = OnnxRuntimeEngine(ONNX).run({"image": x})["embedding"]
    assert ours.dtype == np.float32 and ours.shape == (16, 128)
    assert np.abs(ours - theirs).max() < 1e-4


def test_channels_last_layout_gives_the_same_embeddings():
    """NHWC (the default, faster on tensor cores) and NCHW are one computation: only the memory layout differs."""
    x = real_batch(4)
    nhwc = torch_cuda_engine(device="cpu", fp16=False, cuda_graphs=False)
    nchw = torch_cuda_engine(device="cpu", fp16=False, cuda_graphs=False, channels_last=False)
    conv = next(m for m in nhwc._module.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    np.testing.assert_allclose(nhwc.run({"image": x})["embedding"], nchw.run({"image": x})["embedding"],
                               atol=1e-5)


def test_run_crops_normalises_on_the_device_as_the_cpu_path_does():
    """uint8 crops in (what crosses the bus on a GPU): the same embeddings as the float32 feed made on the CPU."""
    card = torch_cuda.read_card(CARD)
    mean, std = np.asarray(card["mean"], np.float32), np.asarray(card["std"], np.float32)
    x = real_batch(6)
    crops = np.clip(np.rint(x.transpose(0, 2, 3, 1) * std + mean), 0, 255).astype(np.uint8)
    feed = np.ascontiguousarray(((crops.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2))
    engine = torch_cuda_engine(device="cpu", fp16=False, cuda_graphs=False)
    on_device = engine.run_crops(crops, mean, std)["embedding"]
    np.testing.assert_allclose(on_device, engine.run({"image": feed})["embedding"], atol=1e-6)
    assert engine.run_crops(crops[:0], mean, std)["embedding"].shape == (0, 128)
    mirrored = engine.run_crops(crops, mean, std, mirror=True)["embedding"]
    np.testing.assert_allclose(mirrored[:6], on_device, atol=1e-6)
    np.testing.assert_allclose(mirrored[6:], engine.run_crops(crops[:, :, ::-1], mean, std)["embedding"], atol=1e-6)


@pytest.mark.parametrize(("crops", "message"), [
    (np.zeros((2, 150, 150, 3), np.float32), "crops must be uint8 .N, 150, 150, 3., got float32"),
    (np.zeros((2, 3, 150, 150), np.uint8), r"got uint8 \(2, 3, 150, 150\)"),
    (np.zeros((150, 150, 3), np.uint8), r"got uint8 \(150, 150, 3\)"),
])
def test_run_crops_refuses_what_is_not_a_batch_of_aligned_crops(crops, message):
    engine = torch_cuda_engine(device="cpu", fp16=False, cuda_graphs=False)
    with pytest.raises(EngineError, match=message):
        engine.run_crops(crops, np.zeros(3, np.float32), np.ones(3, np.float32))


def test_architectures_are_passed_in_not_imported_from_the_trainer():
    # engines/ may not import trainer/ (docs/architecture.md): without `create_model` the engine cannot be built.
    with pytest.raises(EngineError, match="create_model"):
        create_engine("torch-cuda", model_path=ONNX, device="cpu", fp16=False, cuda_graphs=False)


def test_state_dict_export_round_trips(tmp_path):
    path = torch_cuda.export_state_dict(CARD, tmp_path / "weights.pt", create_model)
    from_pt = torch_cuda_engine(weights=path, device="cpu", fp16=False, cuda_graphs=False)
    from_onnx = torch_cuda_engine(device="cpu", fp16=False, cuda_graphs=False)
    x = real_batch(4)
    np.testing.assert_array_equal(from_pt.run({"image": x})["embedding"], from_onnx.run({"image": x})["embedding"])


def test_state_dict_from_another_model_is_refused(tmp_path):
    path = torch_cuda.export_state_dict(CARD, tmp_path / "weights.pt", create_model)
    payload = torch.load(path, weights_only=True)
    payload["fingerprint"] = "0" * 16
    torch.save(payload, path)
    with pytest.raises(EngineError, match="fingerprint"):
        torch_cuda_engine(weights=path, device="cpu", fp16=False, cuda_graphs=False)


def test_torch_cuda_engine_refuses_fp16_on_cpu():
    with pytest.raises(EngineError, match="CUDA"):
        torch_cuda_engine(device="cpu")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_fp16_cuda_matches_ort_cpu(cuda_graphs):
    engine = torch_cuda_engine(cuda_graphs=cuda_graphs)
    x = real_batch(16)
    reference = OnnxRuntimeEngine(ONNX, providers=["CPUExecutionProvider"]).run({"image": x})["embedding"]
    for batch in (1, 5, 16):  # 5 is padded into the 16 bucket
        ours = engine.run({"image": x[:batch]})["embedding"]
        cosine = np.sum(ours * reference[:batch], axis=1) / np.linalg.norm(ours, axis=1)
        assert cosine.min() > 0.999


@pytest.mark.gpu
@needs_cuda
def test_cuda_graphs_split_batches_above_the_largest_bucket():
    engine = torch_cuda_engine(batch_buckets=(1, 4))
    x = real_batch(10)
    graphed = engine.run({"image": x})["embedding"]
    eager = torch_cuda_engine(cuda_graphs=False).run({"image": x})["embedding"]
    assert graphed.shape == (10, 128)
    assert np.abs(graphed - eager).max() < 1e-2
    assert sorted(engine._graphs) == [1, 4]  # every bucket is captured when the engine is built
