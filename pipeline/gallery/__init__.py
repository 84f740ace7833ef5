"""The gallery of enrolled people: kept in Redis (store), mirrored in every worker (mirror), searched
in memory or on the server (search, matcher), moved between servers as a portable file (portable), corrected
by negative templates and grown by safe self-enrolment (template_edits, self_enrol)."""

from pipeline.gallery.changes import Change
from pipeline.gallery.identity import AddResult, Identity
from pipeline.gallery.mirror import GalleryMirror
from pipeline.gallery.names import validate_name
from pipeline.gallery.snapshot import Snapshot
from pipeline.gallery.store import GalleryStore

__all__ = ["AddResult", "Change", "GalleryMirror", "GalleryStore", "Identity", "Snapshot", "validate_name"]
