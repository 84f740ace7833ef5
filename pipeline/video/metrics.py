"""Per-stage latency and throughput of the streaming runner, and an optional Prometheus endpoint.

`StageMetrics` is shared by every runner thread: `with metrics.time("detect", items=4): ...` records one
call's wall time and how many items (frames, faces) it handled; `metrics.count("frames_dropped", n)` keeps
plain counters. `summary()` turns them into the numbers the run summary prints: calls, items, mean/p50/p90
ms per call, ms per item, and items per second of the run's wall time.

Percentiles come from the last `window` samples of each stage (a bounded deque), so a long-running worker
keeps constant memory; totals and means are over the whole run.

`MetricsServer(metrics, port)` serves the same numbers for Prometheus, bound to 127.0.0.1 by default: a
worker's metrics name its cameras and galleries, which is nobody else's business unless asked for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 10_000


@dataclass
class _Stage:
    calls: int = 0
    items: int = 0
    seconds: float = 0.0
    recent: deque = field(default_factory=lambda: deque(maxlen=DEFAULT_WINDOW))


class StageMetrics:
    """Thread-safe per-stage timings (`time`, `observe`), counters (`count`) and latency samples (`latency`)."""

    def __init__(self, window: int = DEFAULT_WINDOW):
        self.window = int(window)
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self._stages: dict[str, _Stage] = {}
        self._counters: dict[str, int] = {}
        self._latency: deque = deque(maxlen=self.window)

    @contextmanager
    def time(self, stage: str, items: int = 1) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(stage, time.perf_counter() - start, items)

    def observe(self, stage: str, seconds: float, items: int = 1) -> None:
        with self._lock:
            s = self._stages.get(stage)
            if s is None:
                s = self._stages[stage] = _Stage(recent=deque(maxlen=self.window))
            s.calls += 1
            s.items += int(items)
            s.seconds += float(seconds)
            s.recent.append(float(seconds))

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + int(n)

    def set_count(self, name: str, value: int) -> None:
        """Counters owned elsewhere (a source's drop count) copied in as they are."""
        with self._lock:
            self._counters[name] = int(value)

    def latency(self, seconds: float) -> None:
        """End-to-end latency of one frame: captured -> its events emitted and annotation written."""
        with self._lock:
            self._latency.append(float(seconds))

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def summary(self) -> dict:
        """{"wall_s", "stages": {name: {...}}, "counters": {...}, "latency_ms": {...}}, rounded for people."""
        wall = max(time.perf_counter() - self.started, 1e-9)
        with self._lock:
            stages = {name: _describe(s, wall) for name, s in self._stages.items()}
            latency = np.asarray(self._latency, np.float64) * 1000.0
            counters = dict(self._counters)
        return {"wall_s": round(wall, 2), "stages": stages, "counters": counters,
                "latency_ms": _percentiles(latency)}


def _describe(s: _Stage, wall: float) -> dict:
    recent = np.asarray(s.recent, np.float64) * 1000.0
    return {"calls": s.calls, "items": s.items,
            "ms_per_call": round(1000.0 * s.seconds / max(s.calls, 1), 2),
            "ms_per_item": round(1000.0 * s.seconds / max(s.items, 1), 2),
            **{f"{k}_ms": v for k, v in _percentiles(recent).items() if k != "count"},
            "busy_pct": round(100.0 * s.seconds / wall, 1),
            "items_per_s": round(s.items / wall, 2)}


def _percentiles(ms: np.ndarray) -> dict:
    if len(ms) == 0:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "mean": None}
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"count": int(len(ms)), "p50": round(float(p50), 2), "p90": round(float(p90), 2),
            "p99": round(float(p99), 2), "mean": round(float(ms.mean()), 2)}


class MetricsServer:
    """Prometheus text endpoint over `StageMetrics` (read at scrape time, so nothing is counted twice).

    `extra` returns more gauges at scrape time as (name, labels, value), e.g. each camera's dropped frames.
    """

    def __init__(self, metrics: StageMetrics, port: int, host: str = "127.0.0.1",
                 extra: Callable[[], list[tuple[str, dict, float]]] | None = None):
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise ConfigError("--metrics-port needs prometheus-client "
                              "(pip install prometheus-client==0.26.0)") from None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(metrics, extra))
        try:
            self._server, self._thread = start_http_server(int(port), addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
        self.port = int(self._server.server_port)
        log.info("Prometheus metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Collector:
    def __init__(self, metrics: StageMetrics, extra: Callable[[], list[tuple[str, dict, float]]] | None):
        self.metrics = metrics
        self.extra = extra

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        summary = self.metrics.summary()
        seconds = CounterMetricFamily("facestream_stage_seconds", "wall time spent in each stage", labels=["stage"])
        items = CounterMetricFamily("facestream_stage_items", "items (frames, faces) each stage handled",
                                    labels=["stage"])
        p90 = GaugeMetricFamily("facestream_stage_p90_ms", "p90 ms per call, recent window", labels=["stage"])
        for name, s in summary["stages"].items():
            seconds.add_metric([name], s["ms_per_call"] * s["calls"] / 1000.0)
            items.add_metric([name], s["items"])
            p90.add_metric([name], s["p90_ms"] or 0.0)
        yield from (seconds, items, p90)
        for name, value in summary["counters"].items():
            yield CounterMetricFamily(f"facestream_{name}", name.replace("_", " "), value=value)
        latency = GaugeMetricFamily("facestream_frame_latency_ms", "capture to output, recent window",
                                    labels=["quantile"])
        for q in ("p50", "p90", "p99"):
            latency.add_metric([q], summary["latency_ms"][q] or 0.0)
        yield latency
        families: dict[str, GaugeMetricFamily] = {}
        for name, labels, value in (self.extra() if self.extra else []):
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(f"facestream_{name}", name.replace("_", " "),
                                                            labels=list(labels))
            family.add_metric([str(v) for v in labels.values()], value)
        yield from families.values()
