"""bench.soak, briefly: run.py over the looped clips while another process enrols and removes people."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_short_soak_streams_records_events_and_counts_no_errors(tmp_path, shared_data):
    plot = tmp_path / "rss.png"
    # One enrolment a second, one LFW person kept: the churn process both adds and removes within the run.
    proc = subprocess.run([sys.executable, "-m", "bench.soak", "--minutes", "0.25", "--json", "--plot", str(plot),
                           "--churn-every", "1", "--keep", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    # 15 s cannot show a flat RSS (the warm-up is still settling): only the exit status must agree with "ok".
    assert proc.returncode == (0 if result["ok"] else 1)
    assert {"frames", "fps", "events", "events_lost", "rss", "flat", "flat_criterion", "errors", "error_detail",
            "ok", "churn", "samples", "machine"} <= set(result)
    assert result["errors"] == 0, (result["error_detail"], result["error_lines"])
    assert result["frames"] > 0 and result["fps"] > 0
    assert sum(result["events"].values()) > 0 and result["events"].get("track_started", 0) > 0
    assert result["events_jsonl"] == result["events_stream"] and result["events_lost"] == 0
    assert result["churn"]["added"] >= 2 and result["churn"]["removed"] >= 1
    rss = result["rss"]["run_py"]
    assert rss["samples"] >= 2 and 0 < rss["start_mb"] <= rss["max_mb"] and isinstance(rss["slope_mb_per_h"], float)
    assert result["rss"]["redis"]["max_mb"] > 0
    assert {"hamilton", "crowd", "meeting"} == set(result["sources"])
    assert plot.stat().st_size > 10_000
