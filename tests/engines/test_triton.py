"""Triton model repository export (layout, config.pbtxt read back) and the triton engine without tritonclient."""

import builtins
import sys
from pathlib import Path

import pytest

from engines.triton import TritonEngine, export_repository, parse_config, preferred_batches
from pipeline.core.errors import ConfigError, EngineError

REPO = Path(__file__).resolve().parents[2]
CARD = REPO / "models" / "facestream-default.json"


@pytest.mark.parametrize("max_batch", [8, 32])
def test_onnx_repository_layout_and_config(tmp_path, max_batch):
    folder = export_repository(CARD, tmp_path, max_batch=max_batch, name="embedder")
    assert folder == tmp_path / "embedder"
    assert (folder / "1" / "model.onnx").read_bytes() == (REPO / "models" / "facestream-default.onnx").read_bytes()
    config = parse_config((folder / "config.pbtxt").read_text())
    assert config["name"] == "embedder" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == max_batch
    assert config["input"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": [3, 150, 150]}]
    # The batch axis is left out; the embedding axis is -1 or 128 depending on what the exporter fixed.
    [output] = config["output"]
    assert output["name"] == "embedding" and output["data_type"] == "TYPE_FP32" and len(output["dims"]) == 1
    assert output["dims"][0] in (-1, 128)
    batching = config["dynamic_batching"]
    assert batching["preferred_batch_size"] == list(preferred_batches(max_batch))
    assert max(batching["preferred_batch_size"]) == max_batch and batching["max_queue_delay_microseconds"] > 0
    assert config["instance_group"] == {"count": 1, "kind": "KIND_GPU"}


def test_plan_repository(tmp_path):
    plan = tmp_path / "embedder.plan"
    plan.write_bytes(b"not really a plan")
    folder = export_repository(CARD, tmp_path / "repo", plan=plan, max_batch=16)
    assert (folder / "1" / "model.plan").read_bytes() == b"not really a plan"
    assert not (folder / "1" / "model.onnx").exists()
    assert parse_config((folder / "config.pbtxt").read_text())["platform"] == "tensorrt_plan"


def test_missing_plan_and_bad_batch_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="plan not found"):
        export_repository(CARD, tmp_path, plan=tmp_path / "missing.plan")
    with pytest.raises(ConfigError, match="max_batch"):
        export_repository(CARD, tmp_path, max_batch=0)


@pytest.fixture
def no_tritonclient(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "tritonclient" or name.startswith("tritonclient."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for module in [m for m in sys.modules if m == "tritonclient" or m.startswith("tritonclient.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_engine_without_tritonclient_raises_engine_error(no_tritonclient):
    assert TritonEngine.is_available() is False
    with pytest.raises(EngineError, match="tritonclient"):
        TritonEngine("localhost:8000", "embedder")
