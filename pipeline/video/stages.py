"""The runner's compute stages, each a plain object driven by one thread of `pipeline.runner.Runner`.

- `DetectStage`: a batch of frames (≤ 1 per camera) -> `Detected`. MTCNN runs on every `detect_every`-th
  frame of each camera, batched across the cameras due in this batch; other frames pass with `faces=None` and
  the tracker carries their faces (`IouTracker.predict`).
- `RecogniseStage`: `Detected` -> one `Annotated` per frame, emitting events on the way. Per camera: track the
  detections; for each assignment the tracker marks `needs_embedding`, align the face and judge its quality;
  embed every face that passed, of every camera, in one batch; match against the gallery mirror; vote. Faces
  that fail the quality gates are not embedded at all: the voter would discard their match anyway, and on
  crowd video the small background faces are most of the faces.
- `Annotated` goes to the output stage (video writer) as plain labels, so the tracker's mutable tracks never
  cross a thread boundary.

`recognise_still` is the same per face without tracks, for image files.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.faces import Faces
from pipeline.core.frames import Frame
from pipeline.events import IDENTITY_CONFIRMED, TRACK_ENDED, TRACK_STARTED, Event, EventBus, encode_crop
from pipeline.gallery.matcher import Match
from pipeline.video.metrics import StageMetrics
from pipeline.video.output import BoxLabel
from pipeline.video.tracker import IouTracker, Track, TrackerConfig, default_quality
from pipeline.video.voting import IdentityVoter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detected:
    frames: tuple[Frame, ...]
    faces: tuple[Faces | None, ...]  # None: not detected this frame (tracks carry the faces)
    received: tuple[float, ...]  # perf_counter when each frame left its source queue


@dataclass(frozen=True)
class Annotated:
    frame: Frame
    labels: tuple[BoxLabel, ...]
    received: float
    detected: bool


class DetectStage:
    def __init__(self, detector, detect_every: int, metrics: StageMetrics):
        self.detector = detector
        self.detect_every = int(detect_every)
        self.metrics = metrics
        self._seen: Counter[str] = Counter()  # frames processed per camera (not frame.index: drops leave gaps)

    def process(self, frames: list[Frame], received: list[float]) -> Detected:
        due = []
        for k, frame in enumerate(frames):
            if self._seen[frame.camera] % self.detect_every == 0:
                due.append(k)
            self._seen[frame.camera] += 1
        faces: list[Faces | None] = [None] * len(frames)
        if due:
            with self.metrics.time("detect", items=len(due)):
                found = self.detector.detect([frames[k].image for k in due])
            for k, f in zip(due, found, strict=True):
                faces[k] = f
        return Detected(tuple(frames), tuple(faces), tuple(received))


@dataclass
class _Pending:
    """One face handed to the embedder: where it came from and what will vote with it."""

    frame: Frame
    track: Track
    crop: np.ndarray


@dataclass
class Tally:
    """What the run summary reports about recognition."""

    frames: Counter = field(default_factory=Counter)  # per camera
    detected_frames: Counter = field(default_factory=Counter)
    faces: int = 0
    embedded: int = 0
    rejected: Counter = field(default_factory=Counter)  # quality gate reason -> faces not embedded
    tracks: Counter = field(default_factory=Counter)  # confirmed (non-flicker) tracks per camera
    identities: Counter = field(default_factory=Counter)  # name -> identity_confirmed events
    max_faces_per_frame: Counter = field(default_factory=Counter)  # per camera


class RecogniseStage:
    def __init__(self, embedder, matcher, gates, bus: EventBus, metrics: StageMetrics,
                 tracker_config: TrackerConfig = TrackerConfig(), voter: IdentityVoter | None = None,
                 include_crops: bool = False):
        self.embedder = embedder
        self.matcher = matcher
        self.gates = gates
        self.bus = bus
        self.metrics = metrics
        self.tracker_config = tracker_config
        self.voter = voter or IdentityVoter()
        self.include_crops = include_crops
        self.trackers: dict[str, IouTracker] = {}
        self.tally = Tally()
        self._last: dict[str, Frame] = {}  # each camera's latest frame: end-of-stream events carry its time

    def process(self, batch: Detected) -> list[Annotated]:
        with self.metrics.time("track", items=len(batch.frames)):
            pending, boxes = self._track(batch)
        self._recognise(pending)
        out = []
        for frame, received, faces in zip(batch.frames, batch.received, batch.faces, strict=True):
            out.append(Annotated(frame, tuple(_label(t, predicted) for t, predicted in boxes[id(frame)]),
                                 received, faces is not None))
        return out

    def finish(self) -> None:
        """End every track (end of stream or shutdown): their track_ended events."""
        for camera, tracker in self.trackers.items():
            frame = self._last.get(camera)
            for track in tracker.end_all():
                self._ended(track, frame.index if frame else track.last_frame, frame.timestamp if frame else 0.0)

    # -- internals ---------------------------------------------------------------------------------
    def _tracker(self, camera: str) -> IouTracker:
        tracker = self.trackers.get(camera)
        if tracker is None:
            tracker = self.trackers[camera] = IouTracker.from_config(self.tracker_config, camera)
        return tracker

    def _track(self, batch: Detected) -> tuple[list[_Pending], dict[int, list[tuple[Track, bool]]]]:
        pending: list[_Pending] = []
        boxes: dict[int, list[tuple[Track, bool]]] = {}
        for frame, faces in zip(batch.frames, batch.faces, strict=True):
            tracker = self._tracker(frame.camera)
            self._last[frame.camera] = frame
            self.tally.frames[frame.camera] += 1
            if faces is None:
                boxes[id(frame)] = [(t, True) for t in tracker.predict(frame.index) if t.state != "tentative"]
                continue
            self.tally.detected_frames[frame.camera] += 1
            self.tally.faces += len(faces)
            cam_max = self.tally.max_faces_per_frame
            cam_max[frame.camera] = max(cam_max[frame.camera], len(faces))
            assignments, ended = tracker.update(faces, frame.index, default_quality(faces))
            for track in ended:
                self._ended(track, frame.index, frame.timestamp)
            # Tentative tracks are not drawn: most are one-detection flickers (a hand, a poster).
            boxes[id(frame)] = [(a.track, False) for a in assignments if a.track.state != "tentative"]
            for a in assignments:
                self._started(a.track, frame)
                if a.needs_embedding:
                    item = self._judge(frame, faces, a)
                    if item is not None:
                        pending.append(item)
        return pending, boxes

    def _judge(self, frame: Frame, faces: Faces, assignment) -> _Pending | None:
        """The aligned crop of a face worth embedding, or None (quality gate failed: counted by reason)."""
        i = assignment.face_index
        side = float(min(faces.width[i], faces.height[i]))
        if side < self.gates.min_face_px:  # the cheapest gate first: no crop needed to know
            self.tally.rejected["face too small"] += 1
            return None
        crop = self.embedder.crops(frame.image, faces[i])[0]
        verdict = self.gates.check(frame.image, i, faces, crop)
        if not verdict.ok:
            self.tally.rejected[verdict.reason] += 1
            return None
        return _Pending(frame, assignment.track, crop)

    def _recognise(self, pending: list[_Pending]) -> None:
        if not pending:
            return
        with self.metrics.time("embed", items=len(pending)):
            embeddings = self.embedder.embed(np.stack([p.crop for p in pending]))
        self.tally.embedded += len(pending)
        with self.metrics.time("match", items=len(pending)):
            matches = self.matcher.match(embeddings)
        with self.metrics.time("vote", items=len(pending)):
            for item, match in zip(pending, matches, strict=True):
                self._vote(item, match)

    def _vote(self, item: _Pending, match: Match) -> None:
        track = item.track
        if not track.identity_confirmed:
            track.similarity = match.similarity  # shown on the box until a confirmation fixes it
        confirmation = self.voter.vote(track, match, item.frame.index, quality_ok=True)
        if confirmation is None:
            return
        if confirmation.identity is not None:
            self.tally.identities[confirmation.identity] += 1
        crop = encode_crop(item.crop[:, :, ::-1]) if self.include_crops else None
        extra = {"votes": confirmation.votes, "runner_up": match.runner_up,
                 "runner_up_similarity": _round(match.runner_up_similarity)}
        self.bus.emit(Event.for_track(IDENTITY_CONFIRMED, track, item.frame.index, item.frame.timestamp,
                                      extra, crop))

    def _started(self, track: Track, frame: Frame) -> None:
        # Only tracks the tracker confirmed are announced: a tentative one may be a one-frame flicker.
        if track.state == "confirmed" and track.confirmed_frame == frame.index:
            self.tally.tracks[track.camera] += 1
            self.bus.emit(Event.for_track(TRACK_STARTED, track, frame.index, frame.timestamp))

    def _ended(self, track: Track, frame_index: int, timestamp: float) -> None:
        self.voter.end(track)
        if track.confirmed_frame is None:
            return
        extra = {"first_frame": track.first_frame, "last_frame": track.last_frame,
                 "hits": track.hits}
        self.bus.emit(Event.for_track(TRACK_ENDED, track, frame_index, timestamp, extra))


def _label(track: Track, predicted: bool) -> BoxLabel:
    name = track.identity if track.identity_confirmed and track.identity else track.anon_id
    text = f"#{track.id} {name}"
    if track.similarity is not None:
        text += f" {track.similarity:.2f}"
    return BoxLabel(tuple(float(v) for v in track.box), text, known=bool(track.identity_confirmed and track.identity),
                    predicted=predicted)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
