"""enroll.py's commands for the site beyond one gallery's people: the cameras workers lease (`cameras`) and the
consumer groups of the event stream (`events`). Each is `add_parser(commands, json_too)` + `run(cfg, args, out)`.
"""

from __future__ import annotations

import argparse

from pipeline.app.cli_output import Output, plural
from pipeline.app.config import AppConfig


# -- events ---------------------------------------------------------------------------------------------------
def add_events_parser(commands, json_too) -> None:
    commands.add_parser("events", parents=[json_too],
                        help="consumer groups of the gallery's event stream: lag, pending, consumers")


def run_events(cfg: AppConfig, args: argparse.Namespace, out: Output) -> int:
    from pipeline.app.services import redis_client
    from pipeline.events import events_key, groups

    stream = events_key(args.gallery)
    client = redis_client(cfg, args.redis_url)
    found = groups(client, stream, consumers=True)
    length = client.xlen(stream)
    out.line(f"{stream}: {plural(length, 'event')} kept, {plural(len(found), 'consumer group')}")
    if found:
        out.line(f"{'GROUP':<20} {'LAG':>6} {'PENDING':>8} {'DEAD':>5}  LAST DELIVERED")
    for g in found:
        lag = "?" if g["lag"] is None else g["lag"]
        out.line(f"{g['name']:<20} {lag!s:>6} {g['pending']:>8} {g['dead_letters']:>5}  {g['last_delivered_id']}")
        for m in g["members"]:
            out.line(f"  {m['name']:<30} pending {m['pending']:>6}  idle {m['idle_ms'] / 1000:.1f} s")
    out.result({"command": "events", "gallery": args.gallery, "stream": stream, "length": length, "groups": found})
    return 0
