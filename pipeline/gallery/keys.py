"""Where a gallery lives in Redis: every key of gallery `g` carries the hash tag `{g}`.

The hash tag puts a whole gallery in one Redis Cluster slot, so the MULTI/EXEC transactions that write
an identity together with its change-stream entry stay legal on a cluster.

    fs:{g}:head         hash  seq (last change number), epoch (random; new when the gallery is re-created)
    fs:{g}:meta         hash  dtype, dim, fingerprint, server_index, format
    fs:{g}:names        hash  name -> identity id
    fs:{g}:id:<id>      hash  one identity: field "" (never a template id: those are non-empty) holds its
                        record, JSON {name, created, metadata}; every other field is template id -> encoded
                        template (codec.py). One key per identity: it is read and written with one command,
                        which halves the per-identity cost of bulk enrolment and snapshots (measured).
    fs:{g}:neg:<id>     hash  negative templates of one identity ("this face is not <name>"): template id ->
                        encoded row (codec.py, the gallery's dtype); a face more like these than like the
                        identity's own templates is refused that name (matcher.py). Deleted with the identity.
    fs:{g}:neg-ids      set   ids of the identities that have negatives: a snapshot reads negatives for those
                        only, not one more command per identity (that doubled the cost of reading a gallery)
    fs:{g}:crops:<id>   hash  the aligned enrolment crop of each template of one identity: template id -> JPEG
                        bytes of the embedder's aligned RGB crop (kept so templates can be re-embedded when
                        the model changes, and shown by the console). Apart from `id:<id>` so a snapshot never
                        reads them; written in the same transaction as the templates, deleted with them, with
                        the identity and by `clear()`. A template may have none (self-enrolled, or older).
    fs:{g}:live:<camera>    string  the camera's latest annotated frame, JPEG, downscaled (pipeline/video/
                        snapshots.py; only with console.snapshots); PX: it vanishes when its worker stops
    fs:{g}:camera:<camera>  string  the camera's health, JSON (fps, frames read/dropped, state, errors, faces,
                        worker host/pid, time), same writer and TTL: a camera whose worker died disappears
    fs:{g}:changes      stream, entry id `<seq>-0`, fields op, ids, names, epoch; capped at ~CHANGES_MAXLEN
    fs:{g}:vset         vector set (only with server_index): element `<id>:<template id>`, attribute
                        {"identity": id}

`head` survives `clear()` so change numbers never go backwards while a mirror is watching. A mirror that
falls more than CHANGES_MAXLEN changes behind finds a gap in the numbers and re-snapshots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.core.errors import GalleryError

PREFIX = "fs"
# ~100 B per entry: the cap bounds the stream at ~10 MB. A mirror further behind than this re-snapshots.
CHANGES_MAXLEN = 100_000
# Letters, digits, `_ . -`: no braces (they would break the hash tag), no `:` (the key separator).
# The field of an identity hash that holds its record (name, created, metadata) rather than a template.
RECORD = ""
_GALLERY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CAMERA_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # a camera in a key (sources check their names with it)


def validate_gallery(gallery: str) -> str:
    """`gallery` unchanged if it is a usable gallery name, else GalleryError saying why."""
    if not isinstance(gallery, str) or not _GALLERY.fullmatch(gallery):
        raise GalleryError(f"invalid gallery name {gallery!r}: use 1-64 letters, digits, '_', '.' or '-', "
                           "starting with a letter or digit")
    return gallery


def validate_camera(camera: str) -> str:
    """`camera` unchanged if it is usable in a key (1-128 letters, digits, '_', '.' or '-'), else GalleryError."""
    if not isinstance(camera, str) or not CAMERA_NAME.fullmatch(camera):
        raise GalleryError(f"invalid camera name {camera!r}: use 1-128 letters, digits, '_', '.' or '-'")
    return camera


@dataclass(frozen=True)
class GalleryKeys:
    gallery: str

    def __post_init__(self) -> None:
        validate_gallery(self.gallery)

    @property
    def base(self) -> str:
        return f"{PREFIX}:{{{self.gallery}}}"

    @property
    def head(self) -> str:
        return f"{self.base}:head"

    @property
    def meta(self) -> str:
        return f"{self.base}:meta"

    @property
    def names(self) -> str:
        return f"{self.base}:names"

    @property
    def changes(self) -> str:
        return f"{self.base}:changes"

    @property
    def vset(self) -> str:
        return f"{self.base}:vset"

    @property
    def pattern(self) -> str:
        """SCAN pattern for every key of the gallery (braces are not glob characters)."""
        return f"{self.base}:*"

    def identity(self, identity_id: str) -> str:
        return f"{self.base}:id:{identity_id}"

    def negatives(self, identity_id: str) -> str:
        return f"{self.base}:neg:{identity_id}"

    @property
    def negative_ids(self) -> str:
        return f"{self.base}:neg-ids"

    def crops(self, identity_id: str) -> str:
        return f"{self.base}:crops:{identity_id}"

    def live(self, camera: str) -> str:
        """The camera's latest published frame (JPEG)."""
        return f"{self.base}:live:{validate_camera(camera)}"

    def camera(self, camera: str) -> str:
        """The camera's published health (JSON)."""
        return f"{self.base}:camera:{validate_camera(camera)}"

    @property
    def camera_pattern(self) -> str:
        """SCAN pattern for the health keys of every camera that published recently."""
        return f"{self.base}:camera:*"


def element(identity_id: str, template_id: str) -> str:
    """The vector-set element of one template; identity ids never contain ':', template ids may."""
    return f"{identity_id}:{template_id}"


def element_identity(element_name: bytes | str) -> str:
    """The identity id inside a vector-set element."""
    text = element_name.decode() if isinstance(element_name, bytes) else element_name
    identity_id, sep, _ = text.partition(":")
    if not sep:
        raise GalleryError(f"{text!r} is not a gallery vector-set element (<identity id>:<template id>)")
    return identity_id
