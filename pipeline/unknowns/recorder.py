"""The video path's memory of faces: each track's strict-quality faces, kept as sightings when it matters.

- A track confirmed **unknown** joins a cluster (`UnknownDirectory.assign`) with the faces it has shown so far,
  and the cluster's id is its `unknown_id` from then on; the faces it shows later are added when it ends.
  A track confirmed unknown from weak evidence alone has no face good enough to cluster yet: it gets its
  id when it ends, if a strict face came by then (the track_ended event carries it).
- A track confirmed as a **known** person keeps one sighting, its best face, owned by that identity and tied to
  the event id: what `enroll.py reject EVENT_ID` turns into a negative template, and what "where was Alice
  seen?" (`enroll.py search`) lists. Its unknown faces are dropped.
- Flickers (never confirmed) keep nothing.

At most `max_per_track` faces per track, the best by quality. A failing Redis costs the ids of the tracks seen
meanwhile, never the stream: each failure is logged and counted (`errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass, field, replace

from pipeline.core.errors import GalleryError
from pipeline.unknowns.directory import Merged, UnknownDirectory
from pipeline.unknowns.sightings import Seen

log = logging.getLogger(__name__)


@dataclass
class _Track:
    pending: list[Seen] = field(default_factory=list)  # faces not written yet, best first
    kept: int = 0  # faces written so far
    state: str = "open"  # open | unknown | known
    cluster_id: str | None = None


class UnknownRecorder:
    """`observe(key, seen)` for each strict face of a track, `confirmed(...)` at each confirmation, `ended(key)`."""

    def __init__(self, directory: UnknownDirectory, max_per_track: int = 10):
        if max_per_track < 1:
            raise GalleryError(f"max_per_track must be at least 1, got {max_per_track}")
        self.directory = directory
        self.max_per_track = int(max_per_track)
        self.errors = 0
        self.clusters_joined = 0
        self.clusters_started = 0
        self._tracks: dict[Hashable, _Track] = {}

    def observe(self, key: Hashable, seen: Seen) -> None:
        track = self._tracks.setdefault(key, _Track())
        room = self.max_per_track - track.kept
        if room <= 0:
            return
        track.pending.append(seen)
        track.pending.sort(key=lambda s: -s.quality)
        del track.pending[room:]

    def confirmed(self, key: Hashable, identity_id: str | None, event_id: str) -> str | None:
        """The track was confirmed as `identity_id` (None: unknown); returns its unknown id (None if it has none)."""
        track = self._tracks.setdefault(key, _Track())
        if identity_id is not None:
            track.state, track.cluster_id = "known", None
            best, track.pending = track.pending[:1], []
            if best:
                self._write(lambda: self.directory.store.add(identity_id, [_with_event(best[0], event_id)]))
            return None
        track.state = "unknown"
        if track.cluster_id is None:
            self._join(track, event_id)
        return track.cluster_id

    def ended(self, key: Hashable) -> str | None:
        """The track ended: an unknown track's remaining faces are kept; returns its unknown id."""
        track = self._tracks.pop(key, None)
        if track is None or track.state != "unknown":
            return None
        if track.cluster_id is None:
            self._join(track, None)
        elif track.pending:
            pending, track.pending = track.pending, []
            target = self._write(lambda: self.directory.extend(track.cluster_id, pending))
            track.cluster_id = target or track.cluster_id
        return track.cluster_id

    def unknown_id(self, key: Hashable) -> str | None:
        track = self._tracks.get(key)
        return None if track is None else track.cluster_id

    def maintain(self) -> list[Merged]:
        """The directory's periodic passes; their merges (for `unknown_merged` events)."""
        result = self._write(self.directory.maintain)
        return result[0] if result else []

    def finish(self) -> list[Merged]:
        """A last re-clustering pass when the stream ends: what this run's tracks split is merged now."""
        return self._write(self.directory.recluster) or []

    def _join(self, track: _Track, event_id: str | None) -> None:
        if not track.pending:
            return
        seen = [_with_event(track.pending[0], event_id), *track.pending[1:]]
        assigned = self._write(lambda: self.directory.assign(seen))
        if assigned is None:
            return
        track.cluster_id, track.kept, track.pending = assigned.cluster_id, track.kept + len(seen), []
        if assigned.new:
            self.clusters_started += 1
        else:
            self.clusters_joined += 1

    def _write(self, action):
        try:
            return action()
        except GalleryError as exc:
            self.errors += 1
            log.warning("unknowns: %s (%d failure(s) so far; the stream goes on without these sightings)",
                        exc, self.errors)
            return None


def _with_event(seen: Seen, event_id: str | None) -> Seen:
    return seen if event_id is None else replace(seen, event_id=event_id)
