"""An identity as the gallery keeps it, and what adding templates does to it, decided before any write.

An identity is one Redis hash: its JSON record (name, creation time, metadata) under `RECORD`, and one field
per template id holding the encoded template. An add first validates and encodes its rows (`encode_entries`),
then folds them into the identities as the store just read them (`fold_entry`): template ids the identity
already has are duplicates and are not written again. A template may come with its aligned enrolment crop
(already-encoded JPEG bytes, `check_crop`): it is written beside the template, and a duplicate template that has
no crop yet gets the one offered, so enrolling the same photos again fills in the crops of an older gallery.
Nothing here talks to Redis; the store queues the result.
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
MAX_CROP_BYTES = 256 * 1024  # a 150 px JPEG at quality 90 is ~8 kB; anything this big is not an enrolment crop
_JPEG_MAGIC = b"\xff\xd8\xff"


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
    crops: tuple[bytes | None, ...] = ()  # parallel to template_ids when given


@dataclass
class Pending:
    """An identity as a write will leave it: record, template ids, and what is new."""

    identity: Identity
    tids: set[str]
    new: bool = False
    record_changed: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)
    rows: list[tuple[str, np.ndarray]] = field(default_factory=list)
    cropped: set[str] = field(default_factory=set)  # template ids that have a crop (stored or in `crops`)
    crops: dict[str, bytes] = field(default_factory=dict)  # crops to write


def new_identity_id() -> str:
    return uuid.uuid4().hex


def encode_entries(items: Sequence[tuple[str, np.ndarray, Sequence[str]]], dtype: codec.Dtype, metadata=None,
                   created=None, crops=None) -> list[Entry]:
    """Validate names, template ids, embeddings (and `crops`: per item None or one JPEG/None per template id)
    of `items`; encode all their rows at once."""
    names, tids, arrays = [], [], []
    checked_crops = []
    for i, (name, embeddings, template_ids) in enumerate(items):
        names.append(validate_name(name))
        array = np.asarray(embeddings)
        ids = tuple(validate_template_id(t) for t in template_ids)
        if array.ndim != 2 or len(ids) != len(array):
            raise GalleryError(f"identity {names[-1]!r}: embeddings of shape {array.shape} need one template "
                               f"id per row, got {len(ids)} id(s)")
        tids.append(ids)
        arrays.append(array)
        checked_crops.append(check_crops(names[-1], None if crops is None else crops[i], len(ids)))
    rows = _checked_rows(names, arrays)
    blobs = codec.encode(rows, dtype)
    entries, start = [], 0
    for i, (name, ids) in enumerate(zip(names, tids)):
        stop = start + len(ids)
        meta = None if metadata is None else check_metadata(metadata[i])
        entries.append(Entry(name, ids, rows[start:stop], blobs[start:stop], meta,
                             None if created is None else float(created[i]), checked_crops[i]))
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
    added = cropped = 0
    crops = entry.crops or (None,) * len(entry.template_ids)
    for tid, blob, row, crop in zip(entry.template_ids, entry.blobs, entry.rows, crops, strict=True):
        if tid not in pending.tids:
            pending.tids.add(tid)
            pending.blobs[tid] = blob
            pending.rows.append((tid, row))
            added += 1
        if crop is not None and tid not in pending.cropped:
            pending.cropped.add(tid)
            pending.crops[tid] = crop
            cropped += 1
    pending.identity = replace(identity, templates=identity.templates + added)
    result = AddResult(pending.identity, added, len(entry.template_ids) - added, created)
    return result, bool(added or cropped or pending.record_changed)


def check_crops(name: str, crops: Sequence[bytes | None] | None, count: int) -> tuple[bytes | None, ...]:
    """`crops` as a tuple of one checked JPEG (or None) per template; () for None."""
    if crops is None:
        return ()
    if isinstance(crops, (bytes, bytearray, str)) or len(crops) != count:
        got = type(crops).__name__ if isinstance(crops, (bytes, bytearray, str)) else f"{len(crops)} crop(s)"
        raise GalleryError(f"identity {name!r}: crops must be a sequence of one JPEG (or None) per template id: "
                           f"{count} template id(s), got {got}")
    return tuple(None if c is None else check_crop(c, name) for c in crops)


def check_crop(crop: bytes, name: str = "") -> bytes:
    """`crop` as bytes if it looks like a JPEG of sane size, else GalleryError (the store never decodes it)."""
    if not isinstance(crop, (bytes, bytearray, memoryview)):
        raise GalleryError(f"identity {name!r}: a crop must be JPEG bytes, got {type(crop).__name__}")
    data = bytes(crop)
    if not data.startswith(_JPEG_MAGIC):
        raise GalleryError(f"identity {name!r}: a crop must be JPEG bytes (FF D8 FF ...), got {data[:8]!r}")
    if len(data) > MAX_CROP_BYTES:
        raise GalleryError(f"identity {name!r}: a crop of {len(data)} bytes is over the {MAX_CROP_BYTES} allowed")
    return data


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
