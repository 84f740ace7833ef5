"""The runner's compute stages, each a plain object driven by one thread of `pipeline.video.runner.Runner`.

- `DetectStage`: a batch of frames (≤ 1 per camera) -> `Detected`. MTCNN runs on every `detect_every`-th
  frame of each camera, batched across the cameras due in this batch; other frames pass with `faces=None` and
  the tracker carries their faces (`IouTracker.predict`).
- `RecogniseStage`: `Detected` -> one `Annotated` per frame, emitting events on the way, in four parts by role:
  `TrackStage` (per-camera trackers) -> `MatchStage` (judge the faces the tracker wants embedded, embed all
  cameras' at once, match) -> `IdentityArbiter` (one name per face per frame) -> `EventStage` (track events,
  re-verification splits, votes, identity confirmations) -> `LabelStage` (box labels for the output stage).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.core.faces import Faces
from pipeline.core.frames import Frame
from pipeline.core.protocols import Detector, Matcher
from pipeline.events import EventBus
from pipeline.recognise.judge import FaceJudge
from pipeline.unknowns.recorder import UnknownRecorder
from pipeline.video.event_stage import IDENTITY_TAKEN, EventStage, SelfEnrol
from pipeline.video.identity_assignment import IdentityArbiter
from pipeline.video.label_stage import Annotated, LabelStage
from pipeline.video.match_stage import MatchStage
from pipeline.video.metrics import StageMetrics
from pipeline.video.scene_cut import DEFAULT_MIN_DIFFERENCE
from pipeline.video.track_stage import TrackStage, default_tracker
from pipeline.video.tracker import IouTracker
from pipeline.video.verification import Verifier
from pipeline.video.voting import IdentityVoter


@dataclass(frozen=True)
class Detected:
    frames: tuple[Frame, ...]
    faces: tuple[Faces | None, ...]  # None: not detected this frame (tracks carry the faces)
    received: tuple[float, ...]  # perf_counter when each frame left its source queue


class DetectStage:
    def __init__(self, detector: Detector, detect_every: int, metrics: StageMetrics):
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
    weak: int = 0  # of `embedded`: weak evidence (below the strict gates, above the minimums)
    verified: int = 0  # of `embedded`: re-verifying a decided track
    splits: int = 0  # tracks split because a re-verified face was someone else
    cuts: Counter = field(default_factory=Counter)  # hard scene cuts per camera
    contested: int = 0  # frames where two faces claimed one name
    appearance_jumps: int = 0  # tracks put in doubt by their appearance gate


class RecogniseStage:
    """`process(detected)` -> [`Annotated`]; `finish()` ends every track; `tally` for the run summary."""

    def __init__(self, judge: FaceJudge, matcher: Matcher, bus: EventBus, metrics: StageMetrics,
                 new_tracker: Callable[[str], IouTracker] = default_tracker, voter: IdentityVoter | None = None,
                 include_crops: bool = False, scene_cut: float = DEFAULT_MIN_DIFFERENCE,
                 verifier: Verifier | None = None, weak_every: int = 3, unknowns: UnknownRecorder | None = None,
                 self_enrol: SelfEnrol | None = None):
        self.metrics = metrics
        self.tracking = TrackStage(new_tracker, scene_cut)
        self.matching = MatchStage(judge, matcher, metrics, weak_every)
        self.events = EventStage(self.tracking, voter or IdentityVoter(), bus, include_crops, verifier, unknowns,
                                 self_enrol)
        self.arbiter = IdentityArbiter()
        self.labels = LabelStage()

    def process(self, batch: Detected) -> list[Annotated]:
        # Judging (align + gates) is timed with tracking: the "track" figure has always included it.
        with self.metrics.time("track", items=len(batch.frames)):
            tracked = self.tracking.update(batch.frames, batch.faces)
            self.events.announce(tracked)
            candidates = self.matching.select(tracked)
        recognised = self.matching.recognise(candidates) if candidates else []
        # One face <-> one name per frame, among this batch's matches and the names already shown.
        recognised, losers = self.arbiter.settle(tracked, recognised)
        if recognised:
            with self.metrics.time("vote", items=len(recognised)):
                self.events.vote(recognised)
        for track, item in losers:  # a shown name another face claims more strongly: recognised afresh
            self.events.split(track, item.frame, IDENTITY_TAKEN)
        tracked = self.tracking.refresh(tracked)  # tracks split while voting are shown as their successors
        self.events.maintain()
        return [self.labels.annotate(t, received) for t, received in zip(tracked, batch.received, strict=True)]

    def finish(self) -> None:
        """End every track (end of stream or shutdown): their track_ended events."""
        self.events.finish(self.tracking.end_all())

    @property
    def tally(self) -> Tally:
        tracking, matching, events = self.tracking, self.matching, self.events
        return Tally(frames=tracking.frames, detected_frames=tracking.detected_frames, faces=tracking.faces,
                     embedded=matching.embedded, rejected=matching.rejected, tracks=events.tracks,
                     identities=events.identities, max_faces_per_frame=tracking.max_faces_per_frame,
                     weak=matching.weak, verified=matching.verified, splits=events.splits, cuts=tracking.cuts,
                     contested=self.arbiter.contested,
                     appearance_jumps=sum(t.appearance_jumps for t in tracking.trackers.values()))
