"""Tracking, the first part of recognition: one `IouTracker` per camera, and the per-camera frame and face tallies.

A detected frame updates its camera's tracker with the frame's faces; a frame the detector skipped only moves
the tracks to their predicted boxes (`IouTracker.predict`). Each frame comes out as a `Tracked`: what the later
parts need (which faces the tracker wants embedded, which tracks ended, which boxes to draw).

The tracks stay the tracker's: the later parts read them and hand their decisions back through
`confirm_identity` and `show_similarity`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.core.faces import Faces
from pipeline.core.frames import Frame
from pipeline.video.tracker import IouTracker, Track, TrackAssignment, default_quality


@dataclass(frozen=True)
class Tracked:
    """One frame after tracking."""

    frame: Frame
    faces: Faces | None  # this frame's detections; None when the detector skipped it
    assignments: tuple[TrackAssignment, ...]  # one per face, in face order (none when not detected)
    ended: tuple[Track, ...]  # tracks that ended at this frame
    shown: tuple[tuple[Track, bool], ...]  # (track, predicted) to draw on the frame

    @property
    def detected(self) -> bool:
        return self.faces is not None


def default_tracker(camera: str) -> IouTracker:
    return IouTracker(camera=camera)


class TrackStage:
    """`update(frames, faces)` -> one `Tracked` per frame; `end_all()` at the end of the stream."""

    def __init__(self, new_tracker: Callable[[str], IouTracker] = default_tracker):
        self.new_tracker = new_tracker
        self.trackers: dict[str, IouTracker] = {}
        self.frames: Counter[str] = Counter()  # per camera
        self.detected_frames: Counter[str] = Counter()
        self.faces = 0
        self.max_faces_per_frame: Counter[str] = Counter()
        self._last: dict[str, Frame] = {}  # each camera's latest frame: end-of-stream events carry its time

    def update(self, frames: Sequence[Frame], faces: Sequence[Faces | None]) -> list[Tracked]:
        return [self._update(frame, found) for frame, found in zip(frames, faces, strict=True)]

    def end_all(self) -> list[tuple[Track, int, float]]:
        """End every track (end of stream or shutdown): (track, frame index, timestamp) of each camera's last frame."""
        ended = []
        for camera, tracker in self.trackers.items():
            frame = self._last.get(camera)
            for track in tracker.end_all():
                ended.append((track, frame.index if frame else track.last_frame, frame.timestamp if frame else 0.0))
        return ended

    def confirm_identity(self, track: Track, identity: str | None, similarity: float) -> None:
        self.trackers[track.camera].confirm_identity(track, identity, similarity)

    def show_similarity(self, track: Track, similarity: float) -> None:
        self.trackers[track.camera].show_similarity(track, similarity)

    def _tracker(self, camera: str) -> IouTracker:
        tracker = self.trackers.get(camera)
        if tracker is None:
            tracker = self.trackers[camera] = self.new_tracker(camera)
        return tracker

    def _update(self, frame: Frame, faces: Faces | None) -> Tracked:
        tracker = self._tracker(frame.camera)
        self._last[frame.camera] = frame
        self.frames[frame.camera] += 1
        if faces is None:
            # Tentative tracks are not drawn: most are one-detection flickers (a hand, a poster).
            shown = tuple((t, True) for t in tracker.predict(frame.index) if t.state != "tentative")
            return Tracked(frame, None, (), (), shown)
        self.detected_frames[frame.camera] += 1
        self.faces += len(faces)
        self.max_faces_per_frame[frame.camera] = max(self.max_faces_per_frame[frame.camera], len(faces))
        assignments, ended = tracker.update(faces, frame.index, default_quality(faces))
        shown = tuple((a.track, False) for a in assignments if a.track.state != "tentative")
        return Tracked(frame, faces, tuple(assignments), tuple(ended), shown)
