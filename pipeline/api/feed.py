"""The gallery's event stream (`fs:{g}:events`, written by every worker's RedisStreamSink) as the console reads
it: pages of events, newest first, filtered by person, unknown id, camera, type and time; and a live tail for
Server-Sent Events (XREAD BLOCK: every browser sees every event, unlike a consumer group, which would share
them out).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.events import events_key

SCAN_CHUNK = 500
SCAN_MAX = 20_000  # entries examined per query at most (a filter that matches nothing ends here)
BLOCK_MS = 10_000  # an SSE keep-alive comment after this long without an event (and a closed tab noticed)


@dataclass(frozen=True)
class EventFilter:
    person: str | None = None
    unknown_id: str | None = None
    camera: str | None = None
    type: str | None = None
    since: float | None = None  # unix seconds (when the event was written)
    until: float | None = None

    def admits(self, event: dict) -> bool:
        return ((self.person is None or event.get("identity") == self.person)
                and (self.unknown_id is None or event.get("unknown_id") == self.unknown_id)
                and (self.camera is None or event.get("camera") == self.camera)
                and (self.type is None or event.get("type") == self.type))


def entry(entry_id, fields: dict, crop: bool = False) -> dict:
    """One stream entry as the API shows it; the face crop only when asked (`crop`)."""
    text = {_s(k): _s(v) for k, v in fields.items()}
    try:
        data = json.loads(text.get("data") or "{}")
    except json.JSONDecodeError:
        data = {}
    image = data.pop("crop_jpeg_b64", None)
    out = {**data, "entry_id": _s(entry_id), "event_id": data.get("event_id", text.get("event_id", "")),
           "type": data.get("type", text.get("type", "")), "camera": data.get("camera", text.get("camera", "")),
           "has_crop": image is not None}
    if crop:
        out["crop_jpeg_b64"] = image
    return out


def query(client, gallery: str, where: EventFilter, limit: int = 50, before: str | None = None
          ) -> tuple[list[dict], str | None]:
    """(events newest first, the `before` of the next page or None)."""
    key = events_key(gallery)
    top = f"({before}" if before else ("+" if where.until is None else str(int(where.until * 1000)))
    bottom = "-" if where.since is None else str(int(where.since * 1000))
    found, scanned, last = [], 0, None
    while len(found) < limit and scanned < SCAN_MAX:
        chunk = client.xrevrange(key, max=top, min=bottom, count=SCAN_CHUNK)
        if not chunk:
            return found, None
        for entry_id, fields in chunk:
            scanned += 1
            last = _s(entry_id)
            event = entry(entry_id, fields)
            if where.admits(event):
                found.append(event)
                if len(found) == limit:
                    return found, last
        top = f"({last}"
    return found, last


def one(client, gallery: str, entry_id: str) -> dict | None:
    found = client.xrange(events_key(gallery), min=entry_id, max=entry_id, count=1)
    return entry(*found[0], crop=True) if found else None


def tail(client, gallery: str, after: str, where: EventFilter, max_events: int | None = None) -> Iterator[str]:
    """SSE messages: each new event (`id:` its entry id, so a reconnect resumes), keep-alives between."""
    key, sent = events_key(gallery), 0
    yield "retry: 3000\n\n"
    while max_events is None or sent < max_events:
        reply = client.xread({key: after}, block=BLOCK_MS, count=100)
        if not reply:
            yield ": keep-alive\n\n"
            continue
        for entry_id, fields in reply[0][1]:
            after = _s(entry_id)
            event = entry(entry_id, fields)
            if where.admits(event):
                sent += 1
                yield f"id: {after}\nevent: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
                if max_events is not None and sent >= max_events:
                    return


def last_id(client, gallery: str) -> str:
    found = client.xrevrange(events_key(gallery), count=1)
    return _s(found[0][0]) if found else "0-0"


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
