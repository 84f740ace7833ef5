"""A gallery as one portable file: JSON, no pickle, templates as base64 of little-endian float32.

    {"format": "facestream-gallery", "version": 1, "gallery": "default", "fingerprint": "<model>",
     "dtype": "int8", "dim": 128, "exported": "2025-01-01T00:00:00+00:00",
     "identities": [{"name": "Ada", "created": 1735689600.0, "metadata": {...},
                     "template_ids": ["a1", "a2"], "templates": "<base64, n*dim*4 bytes>",
                     "negative_ids": ["n1"], "negatives": "<base64>",
                     "crops": {"a1": "<base64 of the JPEG>"}}]}

`negative_ids`/`negatives` (store.add_negatives: "this face is not Ada") appear only for identities that have
negatives, so a file of a gallery without any is what older versions wrote and read. On import an identity's
negatives are written in a second transaction after its templates; importing again completes an interrupted one.
`crops` (the aligned enrolment crop of a template, JPEG: what re-embedding with another model needs) appears only
for identities with some, and only names template ids of `template_ids`; they are imported with the templates.

Templates are always written as float32 (an int8 gallery's are decoded; re-encoding them gives the same
codes back), so a file moves between float32 and int8 galleries. Each identity is read in one
transaction, but the export as a whole is not a point-in-time copy of a gallery being written to.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.core.errors import GalleryError
from pipeline.gallery import codec
from pipeline.gallery.identity import check_crop
from pipeline.gallery.names import validate_name, validate_template_id
from pipeline.gallery.store import GalleryStore

FORMAT = "facestream-gallery"
VERSION = 1
_FIELDS = ("name", "created", "metadata", "template_ids", "templates")
_NEGATIVE_FIELDS = ("negative_ids", "negatives")  # optional, together
_CROPS_FIELD = "crops"  # optional


@dataclass(frozen=True)
class ImportResult:
    identities: int  # identities in the file
    created: int  # of which new to the gallery
    added: int  # templates written
    duplicates: int  # templates the gallery already had (by identity and template id)
    negatives: int = 0  # negative templates written


@dataclass(frozen=True)
class _Person:
    name: str
    created: float
    metadata: dict
    template_ids: list[str]
    templates: np.ndarray
    negative_ids: list[str]
    negatives: np.ndarray
    crops: list[bytes | None] | None = None  # parallel to template_ids


def export_gallery(store: GalleryStore, path: str | Path, *, crops: bool = True) -> int:
    """Write the gallery to `path` (atomically: a reader never sees half a file); returns identities written.
    `crops`: include the enrolment crops (~11 kB of base64 per template)."""
    meta = store.meta()
    people = []
    for identity in store.identities():
        found = store.read_full(identity.id)
        if found is None:
            continue  # removed while we exported
        current, template_ids, templates = found
        person = {"name": current.name, "created": current.created, "metadata": current.metadata,
                  "template_ids": template_ids, "templates": _base64(templates)}
        negative_ids, negatives = store.read_negatives(current.id)
        if negative_ids:
            person.update(negative_ids=negative_ids, negatives=_base64(negatives))
        kept = store.read_crops(current.id) if crops else {}
        kept = {t: kept[t] for t in template_ids if t in kept}  # a crop whose template went meanwhile stays home
        if kept:
            person[_CROPS_FIELD] = {t: base64.b64encode(jpeg).decode("ascii") for t, jpeg in kept.items()}
        people.append(person)
    if store.meta().get("fingerprint") != meta.get("fingerprint"):
        raise GalleryError(f"gallery {store.gallery!r} was re-enrolled with another model during the export; "
                           "export again")
    doc = {"format": FORMAT, "version": VERSION, "gallery": store.gallery,
           "fingerprint": meta.get("fingerprint"), "dtype": meta.get("dtype", store.dtype),
           "dim": int(meta["dim"]) if meta.get("dim") else None,
           "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"), "identities": people}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return len(people)


def import_gallery(store: GalleryStore, path: str | Path) -> ImportResult:
    """Add every identity of the file at `path` to the gallery, each in one transaction.

    The whole file is validated first, and the gallery's model, dim and dtype checked against it, so a bad
    file writes nothing. Identities already present are merged by template id: importing twice adds nothing.
    """
    fingerprint, dim, people = read_gallery_file(path)
    if not people:
        return ImportResult(0, 0, 0, 0)
    store.bind(store.meta(), dim, fingerprint)  # raises on a model/dim/dtype mismatch before any write
    created = added = duplicates = negatives = 0
    for person in people:
        result = store.import_identity(person.name, person.templates, person.template_ids, fingerprint,
                                       person.metadata, person.created, crops=person.crops)
        created += result.created
        added += result.added
        duplicates += result.duplicates
        if person.negative_ids:
            negatives += store.add_negatives(person.name, person.negatives, person.negative_ids)
    return ImportResult(len(people), created, added, duplicates, negatives)


def read_gallery_file(path: str | Path) -> tuple[str | None, int | None, list[_Person]]:
    """(fingerprint, dim, identities) of a gallery file, every field checked; GalleryError naming the problem."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GalleryError(f"cannot read gallery file {path}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GalleryError(f"{path} is not a gallery file (not JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GalleryError(f"{path} is not a gallery file (no \"format\": \"{FORMAT}\" header)")
    if doc.get("version") != VERSION:
        raise GalleryError(f"{path}: gallery file version {doc.get('version')!r} is not supported (need {VERSION})")
    people = doc.get("identities")
    if not isinstance(people, list):
        raise GalleryError(f"{path}: \"identities\" must be a list")
    fingerprint, dim = doc.get("fingerprint"), doc.get("dim")
    if not people:
        return fingerprint, dim, []
    if not isinstance(fingerprint, str) or not fingerprint.strip():
        raise GalleryError(f"{path}: \"fingerprint\" must name the model, got {fingerprint!r}")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise GalleryError(f"{path}: \"dim\" must be a positive integer, got {dim!r}")
    if doc.get("dtype") not in codec.DTYPES:
        raise GalleryError(f"{path}: \"dtype\" must be one of {codec.DTYPES}, got {doc.get('dtype')!r}")
    parsed, seen = [], set()
    for index, raw in enumerate(people):
        person = _person(raw, dim, f"{path}: identity #{index}")
        if person.name in seen:
            raise GalleryError(f"{path}: identity #{index}: the name {person.name!r} appears twice")
        seen.add(person.name)
        parsed.append(person)
    return fingerprint, dim, parsed


def _person(raw: object, dim: int, where: str) -> _Person:
    fields = set(raw) - {_CROPS_FIELD} if isinstance(raw, dict) else None
    if fields not in (set(_FIELDS), set(_FIELDS + _NEGATIVE_FIELDS)):
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise GalleryError(f"{where} must be an object with exactly the fields {list(_FIELDS)} (and optionally "
                           f"{list(_NEGATIVE_FIELDS)}, {_CROPS_FIELD!r}), got {got}")
    try:
        name = validate_name(raw["name"])
        tids = _ids(raw["template_ids"], "template_ids")
        negative_ids = _ids(raw["negative_ids"], "negative_ids") if "negative_ids" in raw else []
        created = raw["created"]
        if isinstance(created, bool) or not isinstance(created, (int, float)) or not math.isfinite(created):
            raise GalleryError(f"\"created\" must be a Unix time, got {created!r}")
        if not isinstance(raw["metadata"], dict):
            raise GalleryError(f"\"metadata\" must be an object, got {type(raw['metadata']).__name__}")
        templates = _templates(raw["templates"], len(tids), dim, "templates")
        negatives = _templates(raw["negatives"], len(negative_ids), dim, "negatives") if negative_ids else None
        crops = _crops(raw[_CROPS_FIELD], tids) if _CROPS_FIELD in raw else None
    except GalleryError as exc:
        raise GalleryError(f"{where} ({raw.get('name')!r}): {exc}") from None
    return _Person(name, float(created), raw["metadata"], tids, templates, negative_ids, negatives, crops)


def _crops(raw: object, template_ids: list[str]) -> list[bytes | None]:
    """The file's crops (template id -> base64 JPEG) as one JPEG or None per template id."""
    if not isinstance(raw, dict):
        raise GalleryError(f"\"{_CROPS_FIELD}\" must be an object (template id -> base64 JPEG)")
    stray = sorted(set(raw) - set(template_ids))
    if stray:
        raise GalleryError(f"\"{_CROPS_FIELD}\" names template ids that are not in \"template_ids\": {stray[:3]}")
    found = {}
    for tid, text in raw.items():
        try:
            found[tid] = check_crop(base64.b64decode(text.encode("ascii"), validate=True))
        except (AttributeError, UnicodeEncodeError, binascii.Error) as exc:
            raise GalleryError(f"the crop of template {tid!r} is not valid base64: {exc}") from None
    return [found.get(t) for t in template_ids]


def _ids(ids: object, field: str) -> list[str]:
    if not isinstance(ids, list) or not ids:
        raise GalleryError(f"\"{field}\" must be a non-empty list, got {ids!r}")
    ids = [validate_template_id(t) for t in ids]
    if len(set(ids)) != len(ids):
        raise GalleryError(f"\"{field}\" repeats an id")
    return ids


def _base64(rows: np.ndarray) -> str:
    return base64.b64encode(rows.astype("<f4").tobytes()).decode("ascii")


def _templates(text: object, count: int, dim: int, field: str) -> np.ndarray:
    if not isinstance(text, str):
        raise GalleryError(f"\"{field}\" must be a base64 string")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise GalleryError(f"\"{field}\" is not valid base64: {exc}") from None
    if len(data) != count * dim * 4:
        raise GalleryError(f"\"{field}\" holds {len(data)} bytes; {count} float32 template(s) of dim {dim} "
                           f"need {count * dim * 4}")
    return codec.check_embeddings(np.frombuffer(data, dtype="<f4").reshape(count, dim), dim)
