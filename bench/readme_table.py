"""The README's peers table, generated from `python -m bench.peers --json` output.

    python -m bench.readme_table state/bench/peers.json [--readme README.md]

Rewrites what lies between `<!-- peers:start -->` and `<!-- peers:end -->` (markers kept); anything else in
the README is left alone. Without the markers it is an error, not an append.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

START, END = "<!-- peers:start -->", "<!-- peers:end -->"
REPO = Path(__file__).resolve().parents[1]


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "skipped"
    if unit == "fraction":
        return f"{100 * value:.2f}%"
    if value < 10:
        return f"{value:.3f}" if value < 1 else f"{value:.2f}"  # millisecond searches need their digits
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def format_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"**{value:.3f}×**" if value < 2 else f"**{value:.2f}×**"  # accuracy ratios sit near 1


def table(result: dict) -> str:
    """Machine and versions line, then one Markdown row per figure and peer."""
    machine, versions = result["machine"], result.get("versions", {})
    shown = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    lines = [
        f"Measured {machine['date_utc']} UTC on {machine['cpu']} ({machine['cores']} cores, load average "
        f"{machine.get('load_average_1m_start', machine['load_average_1m'])} at start), Python {machine['python']}; "
        f"{shown}.",
        "",
        "| figure | peer | peer value | facestream | ratio (> 1: facestream better) |",
        "|---|---|---|---|---|",
    ]
    for row in result["figures"]:
        better = "↑" if row["better"] == "higher" else "↓"
        lines.append(f"| {row['figure']} ({row['unit']} {better}) | {row['peer']} | "
                     f"{format_value(row['peer_value'], row['unit'])} | {format_value(row['facestream'], row['unit'])} "
                     f"| {format_ratio(row['ratio'])} |")
    return "\n".join(lines)


def splice(text: str, body: str) -> str:
    """`text` with everything between the markers replaced by `body`."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"README needs {START} ... {END} markers, in that order")
    return text[:start + len(START)] + "\n" + body.strip() + "\n" + text[end:]


def update_readme(readme: str | Path, result: dict) -> Path:
    readme = Path(readme)
    readme.write_text(splice(readme.read_text(encoding="utf-8"), table(result)), encoding="utf-8")
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readme_table", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="JSON from python -m bench.peers --json")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args(argv)
    try:
        update_readme(args.readme, json.loads(args.results.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
