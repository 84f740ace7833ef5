"""How a benchmark ends: its result as one JSON object (`--json`) or readable, or one error line and a status."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from pipeline.core.errors import FacestreamError


def finish(produce: Callable[[], dict], as_json: bool, show: Callable[[dict], None],
           errors: tuple[type[BaseException], ...] = (FacestreamError,), error_status: int = 2) -> int:
    """Run `produce()`; print its result (JSON, or `show(result)`); exit status 0, or `error_status` on `errors`."""
    try:
        result = produce()
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return error_status
    if as_json:
        print(json.dumps(result))
    else:
        show(result)
    return 0
