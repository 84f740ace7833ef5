"""The gallery of enrolled people: kept in Redis (store), mirrored in every worker (mirror), searched
in memory or on the server (search, matcher), moved between servers as a portable file (portable)."""

from pipeline.gallery.mirror import GalleryMirror, Snapshot
from pipeline.gallery.names import validate_name
from pipeline.gallery.store import AddResult, Change, GalleryStore, Identity

__all__ = ["AddResult", "Change", "GalleryMirror", "GalleryStore", "Identity", "Snapshot", "validate_name"]
