"""Tracking, the first part of recognition: one `IouTracker` per camera, and the per-camera frame and face tallies.

A detected frame updates its camera's tracker with the frame's faces; a frame the detector skipped only moves
the tracks to their predicted boxes (`IouTracker.predict`). Each frame comes out as a `Tracked`: what the later
parts need (which faces the tracker wants embedded, which tracks ended, which boxes to draw).

A hard scene cut (`SceneCutDetector`, tested on every frame) ends every track of that camera before the
frame is tracked: after a cut the boxes hold other people, and the faces there are recognised afresh. A cut
that changes only the faces (same background) is left to each track's appearance gate: the tracker is given
every frame and puts a track whose box changed in doubt (`pipeline.video.appearance_gate`).

With `regions` (region-of-interest detection, `pipeline.video.roi`) each camera's live tracks are published
after every update, for the detect thread to look around them.

The tracks stay the tracker's: the later parts read them and hand their decisions back through
`confirm_identity`, `show_similarity`, `observe`, `resolve_doubt` and `split`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from pipeline.core.faces import Faces
from pipeline.core.frames import Frame
from pipeline.video.roi import TrackRegions
from pipeline.video.scene_cut import DEFAULT_MIN_DIFFERENCE, SceneCutDetector
from pipeline.video.tracker import IouTracker, Track, TrackAssignment, default_quality


@dataclass(frozen=True)
class Tracked:
    """One frame after tracking."""

    frame: Frame
    faces: Faces | None  # this frame's detections; None when the detector skipped it
    assignments: tuple[TrackAssignment, ...]  # one per face, in face order (none when not detected)
    ended: tuple[Track, ...]  # tracks that ended at this frame
    shown: tuple[tuple[Track, bool], ...]  # (track, predicted) to draw on the frame
    cut: bool = False  # a hard scene cut precedes this frame: every earlier track of the camera ended here

    @property
    def detected(self) -> bool:
        return self.faces is not None


def default_tracker(camera: str) -> IouTracker:
    return IouTracker(camera=camera)


class TrackStage:
    """`update(frames, faces)` -> one `Tracked` per frame; `end_all()` at the end of the stream."""

    def __init__(self, new_tracker: Callable[[str], IouTracker] = default_tracker,
                 scene_cut: float = DEFAULT_MIN_DIFFERENCE, regions: TrackRegions | None = None):
        self.new_tracker = new_tracker
        self.regions = regions  # where the live tracks are, for the detect thread's regions of interest
        self.scene_cut = float(scene_cut)  # SceneCutDetector.min_difference; 0: no cut detection
        self.trackers: dict[str, IouTracker] = {}
        self.cut_detectors: dict[str, SceneCutDetector] = {}
        self.cuts: Counter[str] = Counter()  # per camera
        self.frames: Counter[str] = Counter()  # per camera
        self.detected_frames: Counter[str] = Counter()
        self.faces = 0
        self.max_faces_per_frame: Counter[str] = Counter()
        self._last: dict[str, Frame] = {}  # each camera's latest frame: end-of-stream events carry its time
        self._replaced: dict[tuple[str, int], Track] = {}  # (camera, old id) -> the track split from it, this batch

    def update(self, frames: Sequence[Frame], faces: Sequence[Faces | None]) -> list[Tracked]:
        tracked = [self._update(frame, found) for frame, found in zip(frames, faces, strict=True)]
        if self.regions is not None:
            for frame in frames:
                self.regions.publish(frame.camera, frame.index, self.trackers[frame.camera].tracks)
        return tracked

    def end_all(self) -> list[tuple[Track, int, float]]:
        """End every track (end of stream or shutdown): (track, frame index, timestamp) of each camera's last frame."""
        ended = []
        for camera, tracker in self.trackers.items():
            frame = self._last.get(camera)
            for track in tracker.end_all():
                ended.append((track, frame.index if frame else track.last_frame, frame.timestamp if frame else 0.0))
        return ended

    def end_camera(self, camera: str) -> list[tuple[Track, int, float]]:
        """End one camera's tracks (its source was closed: a released lease); its tracker keeps counting ids."""
        tracker, frame = self.trackers.get(camera), self._last.pop(camera, None)
        self.cut_detectors.pop(camera, None)
        if self.regions is not None:
            self.regions.forget(camera)
        if tracker is None:
            return []
        return [(track, frame.index if frame else track.last_frame, frame.timestamp if frame else 0.0)
                for track in tracker.end_stream()]

    def confirm_identity(self, track: Track, identity: str | None, similarity: float) -> None:
        self.trackers[track.camera].confirm_identity(track, identity, similarity)

    def set_unknown_id(self, track: Track, unknown_id: str | None) -> None:
        self.trackers[track.camera].set_unknown_id(track, unknown_id)

    def show_similarity(self, track: Track, similarity: float) -> None:
        self.trackers[track.camera].show_similarity(track, similarity)

    def observe(self, track: Track, embedding, weight: float = 1.0) -> None:
        self.trackers[track.camera].observe(track, embedding, weight)

    def resolve_doubt(self, track: Track) -> None:
        self.trackers[track.camera].resolve_doubt(track)

    def split(self, track: Track, frame_index: int) -> Track:
        """End `track` and go on with a new one from its box (`IouTracker.split`); this batch's `Tracked`
        records show the new track once `refresh` has run."""
        new = self.trackers[track.camera].split(track, frame_index)
        self._replaced[(track.camera, track.id)] = new
        return new

    def current(self, track: Track) -> Track:
        """`track`, or the track split from it earlier in this batch."""
        while (track.camera, track.id) in self._replaced:
            track = self._replaced[(track.camera, track.id)]
        return track

    def refresh(self, tracked: Sequence[Tracked]) -> list[Tracked]:
        """The batch's records with split tracks replaced by their successors; forgets the splits."""
        if not self._replaced:
            return list(tracked)
        fresh = [replace(t, assignments=tuple(replace(a, track=self.current(a.track)) for a in t.assignments),
                         shown=tuple((self.current(track), predicted) for track, predicted in t.shown))
                 for t in tracked]
        self._replaced.clear()
        return fresh

    def _tracker(self, camera: str) -> IouTracker:
        tracker = self.trackers.get(camera)
        if tracker is None:
            tracker = self.trackers[camera] = self.new_tracker(camera)
        return tracker

    def _is_cut(self, frame: Frame) -> bool:
        if self.scene_cut <= 0:
            return False
        detector = self.cut_detectors.get(frame.camera)
        if detector is None:
            detector = self.cut_detectors[frame.camera] = SceneCutDetector(self.scene_cut)
        cut = detector.is_cut(frame.image)
        self.cuts[frame.camera] += cut
        return cut

    def _update(self, frame: Frame, faces: Faces | None) -> Tracked:
        tracker = self._tracker(frame.camera)
        self._last[frame.camera] = frame
        self.frames[frame.camera] += 1
        cut = self._is_cut(frame)
        cut_ended = tuple(tracker.end_all()) if cut else ()
        if faces is None:
            # Tentative tracks are not drawn: most are one-detection flickers (a hand, a poster).
            shown = tuple((t, True) for t in tracker.predict(frame.index, frame.image) if t.state != "tentative")
            return Tracked(frame, None, (), cut_ended, shown, cut)
        self.detected_frames[frame.camera] += 1
        self.faces += len(faces)
        self.max_faces_per_frame[frame.camera] = max(self.max_faces_per_frame[frame.camera], len(faces))
        assignments, ended = tracker.update(faces, frame.index, default_quality(faces), frame.image)
        shown = tuple((a.track, False) for a in assignments if a.track.state != "tentative")
        return Tracked(frame, faces, tuple(assignments), cut_ended + tuple(ended), shown, cut)
