"""The soak as one PNG: RSS of run.py, redis-server and the churn process over time."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot(result: dict, path: Path) -> None:
    """RSS of run.py, redis-server and the churn process over the soak; warm-up shaded, run.py's fit dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = np.array([[np.nan if v is None else v for v in s] for s in result["samples"]], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    minutes = samples[:, 0] / 60.0
    for column, label in ((1, "run.py"), (2, "redis-server"), (3, "churn (enrol/remove)")):
        ax.plot(minutes, samples[:, column], label=label)
    ax.axvspan(0, result["warmup_s"] / 60.0, color="0.9", label="warm-up")
    trend_ = result["rss"]["run_py"]
    if trend_:
        after = minutes >= result["warmup_s"] / 60.0
        fit = np.polyfit(samples[after, 0] / 3600.0, samples[after, 1], 1)
        ax.plot(minutes[after], np.polyval(fit, samples[after, 0] / 3600.0), "k--", lw=1,
                label=f"run.py fit: {trend_['slope_mb_per_h']:+.1f} MB/h")
    ax.set_xlabel("minutes of streaming")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"facestream soak: {result['frames']} frames at {result['fps']} fps, "
                 f"{sum(result['events'].values())} events, {result['errors']} errors, flat={result['flat']}")
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
