"""Per-stage metrics and the Prometheus endpoint run.py serves with --metrics-port."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from pipeline.core.errors import ConfigError
from pipeline.video.metrics import MetricsServer, StageMetrics


def test_endpoint_serves_stage_figures_on_loopback_only():
    metrics = StageMetrics()
    metrics.observe("detect", 0.040, items=2)
    metrics.observe("embed", 0.010)
    server = MetricsServer(metrics, port=0, extra=lambda: [("frames_dropped", {"camera": "cam0"}, 7.0)])
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
        assert "detect" in text and "embed" in text
        assert 'camera="cam0"' in text and "7.0" in text
        assert server._server.server_address[0] == "127.0.0.1"  # not reachable from other hosts
    finally:
        server.close()


def test_busy_port_is_a_clear_config_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="cannot serve metrics on 127.0.0.1"):
            MetricsServer(StageMetrics(), port=taken.getsockname()[1])


def test_summary_reports_per_stage_latency():
    metrics = StageMetrics()
    for _ in range(10):
        metrics.observe("detect", 0.050)
    summary = metrics.summary()
    detect = summary["stages"]["detect"] if "stages" in summary else summary["detect"]
    assert detect["calls"] == 10 and abs(detect["ms_per_call"] - 50.0) < 0.01
