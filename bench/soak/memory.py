"""RSS from /proc over the soak: sampling, the warm-up cut, each process's trend, and the `flat` verdict.

RSS from outside, not tracemalloc: it also sees what ONNX Runtime, torch, FFmpeg and the allocator keep.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.soak.inputs import VIDEOS

FLAT_SLOPE_MB_H = 10.0
FLAT_GROWTH_MB = 10.0
FLAT_CRITERION = (f"run.py RSS after warm-up: slope < {FLAT_SLOPE_MB_H} MB/h and end - start < "
                  f"{FLAT_GROWTH_MB} MB (start/end: medians of the first/last tenth of the samples)")
LOOPED_LINE = re.compile(r" reconnected to (\S+) ")


def rss_mb(pid: int | None) -> float | None:
    """VmRSS of `pid` in MB (MiB), None if it is gone."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def sample(pids: dict[str, int | None], seconds: float, every: float, proc: subprocess.Popen,
           log: Path) -> list[dict]:
    """RSS of each pid every `every` s for `seconds` s (or until run.py exits), and how many cameras have
    looped at least once so far (run.py's "reconnected to CAMERA" lines); a progress bar in minutes."""
    samples, started = [], time.monotonic()
    with tqdm(total=round(seconds / 60, 2), unit="min", desc="soak", file=sys.stderr,
              bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} min [{elapsed}<{remaining}]{postfix}") as bar:
        while True:
            t = time.monotonic() - started
            looped = len(set(LOOPED_LINE.findall(log.read_text(errors="replace"))))
            samples.append({"t_s": round(t, 2), "looped": looped, **{k: rss_mb(pid) for k, pid in pids.items()}})
            bar.n = round(min(t, seconds) / 60, 2)
            bar.set_postfix_str(f"run.py {samples[-1]['run_py'] or 0:.0f} MB", refresh=True)
            if t >= seconds or proc.poll() is not None:
                return samples
            time.sleep(min(every, max(0.0, seconds - t)) or every)


def warmup(samples: list[dict], minutes: float, warmup_min: float) -> tuple[float, str]:
    """End of the warm-up (s) and why: the later of `warmup_min` and every camera's first loop, at most a third
    of the run."""
    end, why = warmup_min * 60.0, f"--warmup-min {warmup_min}"
    looped = next((s["t_s"] for s in samples if s["looped"] >= len(VIDEOS)), None)
    if looped is None:
        why += " (not every camera looped)"
    elif looped > end:
        end, why = looped, "every camera's first loop"
    if end > minutes * 20.0:
        end, why = minutes * 20.0, "a third of the run"
    return end, why


def trend(samples: list[dict], key: str, warmup_s: float) -> dict | None:
    """start/end/max/slope of one process's RSS over the post-warm-up samples."""
    points = [(s["t_s"], s[key]) for s in samples if s["t_s"] >= warmup_s and s[key] is not None]
    if len(points) < 2:
        return None
    t, mb = np.array(points).T
    tenth = max(1, len(mb) // 10)
    start, end = float(np.median(mb[:tenth])), float(np.median(mb[-tenth:]))
    slope, slope_se = _slope(t / 3600.0, mb)
    first = next((s[key] for s in samples if s[key] is not None), None)
    return {"at_streaming_start_mb": round(first, 1), "start_mb": round(start, 1), "end_mb": round(end, 1),
            "growth_mb": round(end - start, 1), "max_mb": round(float(mb.max()), 1),
            "min_mb": round(float(mb.min()), 1), "slope_mb_per_h": round(slope, 2),
            # What the run can resolve: frames in flight move RSS by several MB from sample to sample.
            "slope_ci95_mb_per_h": ([round(slope - 1.96 * slope_se, 1), round(slope + 1.96 * slope_se, 1)]
                                    if np.isfinite(slope_se) else None),
            "samples": len(points)}


def _slope(hours: np.ndarray, mb: np.ndarray) -> tuple[float, float]:
    """Least-squares slope (MB/h) and its standard error."""
    if len(mb) < 4 or np.ptp(hours) == 0:
        return 0.0, float("inf")
    coefficients, covariance = np.polyfit(hours, mb, 1, cov=True)
    return float(coefficients[0]), float(np.sqrt(covariance[0, 0]))


def is_flat(run_py: dict | None) -> bool:
    """run.py's trend meets FLAT_CRITERION; too few samples for a trend is not flat."""
    return bool(run_py and run_py["slope_mb_per_h"] < FLAT_SLOPE_MB_H and run_py["growth_mb"] < FLAT_GROWTH_MB)
