"""bench.gpu_report on the committed H200 result: the goal column is computed from the rows, and input that is
not gpu_check.sh output is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gpu_report import GOAL, main, read_rows, summarise
from pipeline.core.errors import ConfigError

RESULT = Path(__file__).resolve().parents[2] / "docs" / "gpu" / "h200-gpu_check.jsonl"


def test_goal_batch_is_the_smallest_batch_at_or_over_the_goal(tmp_path):
    rows = read_rows(RESULT)
    result = summarise(rows, None)
    for name, row in result["paths"].items():
        over = [b for b, v in sorted(row["faces_per_s"].items()) if v >= GOAL]
        assert row["goal_reached_at_batch"] == (over[0] if over else None), name
    assert result["gpu"] == "NVIDIA H200" and "tensorrt-fp32" in result["skipped"]
    fake = dict(rows, **{"fast": {"path": "fast", "status": "ok", "faces_per_s": {"1": 10, "16": GOAL, "64": 1}}})
    assert summarise(fake, None)["paths"]["fast"]["goal_reached_at_batch"] == 16


def test_plot_and_json_are_written(tmp_path, capsys):
    assert main([str(RESULT), "--before", str(RESULT), "--plot", str(tmp_path / "p.png"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "embedder-before" in result["paths"] and (tmp_path / "p.png").stat().st_size > 10_000


@pytest.mark.parametrize("text", ["not json\n", json.dumps({"path": "onnxruntime-cpu"}) + "\n", ""])
def test_what_is_not_gpu_check_output_is_refused(tmp_path, text):
    path = tmp_path / "x.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError, match="x.jsonl"):
        read_rows(path)
