"""The gallery's change stream: one entry per write, numbered `<seq>-0`, naming the identities it touched.

A mirror follows the stream and re-fetches the identities each entry names (it never applies deltas), so an
entry carries only the operation, the ids, their names (for logs) and the gallery's epoch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Change:
    """One change-stream entry: `op` touched `identity_ids` (all of them for `clear`)."""

    stream_id: str  # `<seq>-0`
    seq: int
    op: str  # add | import | remove | rename | clear | negative | remove_templates
    identity_ids: tuple[str, ...]
    names: tuple[str, ...]
    epoch: str


def change_fields(op: str, identity_ids: list[str], names: list[str], epoch: str) -> dict[str, str]:
    """The stream entry's fields for one write."""
    return {"op": op, "ids": " ".join(identity_ids), "names": json.dumps(names, ensure_ascii=False), "epoch": epoch}


def parse_change(entry_id: bytes, fields: dict) -> Change:
    fields = text(fields)
    stream_id = entry_id.decode()
    ids = tuple(fields.get("ids", "").split())
    return Change(stream_id, int(stream_id.split("-")[0]), fields.get("op", ""), ids,
                  tuple(json.loads(fields.get("names", "[]"))), fields.get("epoch", ""))


def text(mapping: dict) -> dict[str, str]:
    """A Redis hash (or stream entry) of bytes as str -> str."""
    return {k.decode(): v.decode() for k, v in mapping.items()}
