"""The peers benchmark as one PNG: a panel per figure row, facestream beside the peer, the ratio in the title."""

from __future__ import annotations

import math
from pathlib import Path

COLOURS = ("#2b6cb0", "#a0aec0")


def plot(result: dict, path: str | Path, columns: int = 4) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["figures"]
    grid = math.ceil((len(rows) + 1) / columns)
    fig, axes = plt.subplots(grid, columns, figsize=(3.4 * columns, 2.9 * grid))
    axes = list(axes.flat)
    for ax, row in zip(axes, rows):
        _panel(ax, row)
    _machine_panel(axes[len(rows)], result)
    for ax in axes[len(rows) + 1:]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    _shrink(path)
    return path


def _panel(ax, row: dict) -> None:
    values = [row["facestream"], row["peer_value"]]
    labels = ["facestream", _wrap(row["peer"])]
    heights = [v if v is not None else 0 for v in values]
    bars = ax.bar(labels, heights, color=COLOURS)
    for bar, value in zip(bars, values):
        text = "skipped" if value is None else _short(value)
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize=8)
    if row["unit"] == "fraction":
        low = min(v for v in values if v is not None)
        ax.set_ylim(max(0.0, low - 0.05), 1.0 + 0.01)
    else:
        ax.set_ylim(0, max(heights) * 1.2 or 1)
    ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.3f}x" if row["ratio"] < 2 else f"{row['ratio']:.2f}x"
    better = "higher" if row["better"] == "higher" else "lower"
    ax.set_title(f"{_wrap(row['figure'], 38)}\n{row['unit']} ({better} is better); ratio {ratio}", fontsize=8)
    ax.tick_params(labelsize=7)


def _machine_panel(ax, result: dict) -> None:
    machine, versions = result["machine"], result.get("versions", {})
    lines = [machine["cpu"], f"{machine['cores']} cores, Python {machine['python']}", machine["date_utc"] + " UTC",
             *(f"{k} {v}" for k, v in versions.items() if v)]
    ax.axis("off")
    ax.text(0, 1, "\n".join(_wrap(line, 44) for line in lines), va="top", fontsize=7, family="monospace")


def _shrink(path: Path) -> None:
    """A 64-colour palette PNG: a few flat colours and text, a third of the RGB size (it is committed)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)


def _short(value: float) -> str:
    if abs(value) < 1.5:
        return f"{value:.4f}"
    return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"


def _wrap(text: str, width: int = 16) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
