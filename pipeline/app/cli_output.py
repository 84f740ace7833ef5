"""What the operator's commands print: human lines, or with --json one JSON object at the end; times and counts
in words. Shared by enroll.py and its command groups (`pipeline/app/site_commands.py`)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

from tqdm import tqdm


class Output:
    """Human lines on stdout, or (with --json) one JSON object on stdout at the end."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def line(self, text: str = "") -> None:
        if not self.as_json:
            tqdm.write(text, file=sys.stdout)  # clears and redraws a progress bar on the terminal

    def result(self, payload: dict) -> None:
        if self.as_json:
            print(json.dumps(payload, ensure_ascii=False))


def when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def plural(count: int, noun: str) -> str:
    many = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{count} {noun if count == 1 else many}"
