"""An identity as the gallery keeps it, and what adding templates does to it, decided before any write.

An identity is one Redis hash: its JSON record (name, creation time, metadata) under `RECORD`, and one field
per template id holding the encoded template. An add first validates and encodes its rows (`encode_entries`),
then folds them into the identities as the store just read them (`fold_entry`): template ids the identity
already has are duplicates and are not written again. Nothing here talks to Redis; the store queues the result.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.core.errors import GalleryError
from pipeline.gallery import codec
from pipeline.gallery.keys import RECORD
from pipeline.gallery.names import validate_name, validate_template_id

RECORD_FIELD = RECORD.encode()
# Template ids of templates the system added by itself (self_enrol.py): they can be listed and removed as a
# group (`GalleryStore.remove_auto_templates`) without touching what a person enrolled.
AUTO_PREFIX = "auto-"


def is_auto(template_id: str) -> bool:
    return template_id.startswith(AUTO_PREFIX)


@dataclass(frozen=True)
class Identity:
    id: str
    name: str
    created: float  # Unix time
    metadata: dict
    templates: int


@dataclass(frozen=True)
class AddResult:
    identity: Identity
    added: int
    duplicates: int  # template ids the identity already had (or that repeated within the call)
    created: bool


@dataclass(frozen=True)
class Entry:
    """One identity's validated, encoded templates, ready to write."""

    name: str
    template_ids: tuple[str, ...]
    rows: np.ndarray
    blobs: list[bytes]
    metadata: dict | None = None
    created: float | None = None


@dataclass
class Pending:
    """An identity as a write will leave it: record, template ids, and what is new."""

    identity: Identity
    tids: set[str]
    new: bool = False
    record_changed: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)
    rows: list[tuple[str, np.ndarray]] = field(default_factory=list)


def new_identity_id() -> str:
    return uuid.uuid4().hex


def encode_entries(items: Sequence[tuple[str, np.ndarray, Sequence[str]]], dtype: codec.Dtype, metadata=None,
                   created=None) -> list[Entry]:
    """Validate names, template ids and embeddings of `items`; encode all their rows at once."""
    names, tids, arrays = [], [], []
    for name, embeddings, template_ids in items:
        names.append(validate_name(name))
        array = np.asarray(embeddings)
        ids = tuple(validate_template_id(t) for t in template_ids)
        if array.ndim != 2 or len(ids) != len(array):
            raise GalleryError(f"identity {names[-1]!r}: embeddings of shape {array.shape} need one template "
                               f"id per row, got {len(ids)} id(s)")
        tids.append(ids)
        arrays.append(array)
    rows = _checked_rows(names, arrays)
    blobs = codec.encode(rows, dtype)
    entries, start = [], 0
    for i, (name, ids) in enumerate(zip(names, tids)):
        stop = start + len(ids)
        meta = None if metadata is None else check_metadata(metadata[i])
        entries.append(Entry(name, ids, rows[start:stop], blobs[start:stop], meta,
                             None if created is None else float(created[i])))
        start = stop
    return entries


def _checked_rows(names: list[str], arrays: list[np.ndarray]) -> np.ndarray:
    """All rows as one checked float32 matrix; an error names the identity whose rows are wrong."""
    dims = {a.shape[1] for a in arrays}
    if len(dims) > 1:
        raise GalleryError(f"embeddings in one batch have different dims: {sorted(dims)}")
    try:
        return codec.check_embeddings(np.concatenate(arrays) if len(arrays) > 1 else arrays[0])
    except GalleryError:
        for name, array in zip(names, arrays):
            try:
                codec.check_embeddings(array)
            except GalleryError as exc:
                raise GalleryError(f"identity {name!r}: {exc}") from None
        raise


def fold_entry(entry: Entry, state: dict[str, Pending], known: dict[str, str]) -> tuple[AddResult, bool]:
    """Fold one entry into the per-identity `state` (new identities get an id in `known`);
    (its result, whether it writes anything)."""
    created = entry.name not in known
    if created:
        identity_id = known[entry.name] = new_identity_id()
        created_at = time.time() if entry.created is None else entry.created
        state[identity_id] = Pending(Identity(identity_id, entry.name, created_at, {}, 0), set(), new=True,
                                     record_changed=True)
    pending = state[known[entry.name]]
    identity = pending.identity
    if entry.metadata and {**identity.metadata, **entry.metadata} != identity.metadata:
        identity = replace(identity, metadata={**identity.metadata, **entry.metadata})
        pending.record_changed = True
    added = 0
    for tid, blob, row in zip(entry.template_ids, entry.blobs, entry.rows):
        if tid not in pending.tids:
            pending.tids.add(tid)
            pending.blobs[tid] = blob
            pending.rows.append((tid, row))
            added += 1
    pending.identity = replace(identity, templates=identity.templates + added)
    result = AddResult(pending.identity, added, len(entry.template_ids) - added, created)
    return result, bool(added or pending.record_changed)


def identity_of(identity_id: str, fields: dict, templates: int | None = None) -> Identity:
    """An Identity from an identity hash (or just its record field); `templates` counted if not given."""
    record = json.loads(fields[RECORD_FIELD])
    count = len(fields) - 1 if templates is None else templates
    return Identity(identity_id, record["name"], float(record["created"]), record["metadata"], int(count))


def record_of(identity: Identity) -> str:
    return json.dumps({"name": identity.name, "created": identity.created, "metadata": identity.metadata},
                      ensure_ascii=False, sort_keys=True)


def check_metadata(metadata: dict | None) -> dict | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise GalleryError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(metadata, ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"metadata must be JSON-serialisable: {exc}") from None
