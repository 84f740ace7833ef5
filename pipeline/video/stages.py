"""The runner's compute stages, each a plain object driven by one thread of `pipeline.video.runner.Runner`.

- `DetectStage`: a batch of frames (≤ 1 per camera) -> `Detected`. MTCNN runs on every `detect_every`-th
  frame of each camera, batched across the cameras due in this batch; other frames pass with `faces=None` and
  the tracker carries their faces (`IouTracker.predict`). With `full_scan_every` > 0 every frame is detected:
  whole on a schedule and on scene cuts, otherwise only in regions around the live tracks and motion
  (`pipeline.video.roi`).
- `RecogniseStage`: `Detected` -> one `Annotated` per frame, emitting events on the way, in four parts by role:
  `TrackStage` (per-camera trackers) -> `MatchStage` (judge the faces the tracker wants embedded, embed all
  cameras' at once, match) -> `IdentityArbiter` (one name per face per frame) -> `EventStage` (track events,
  re-verification splits, votes, identity confirmations) -> `LabelStage` (box labels for the output stage).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

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
from pipeline.video.motion import boxes_outside_masks
from pipeline.video.roi import (
    MIN_REGION_SIDE,
    TrackRegions,
    grow_boxes,
    grow_regions,
    region_pixels,
    region_scales,
    roi_detect,
)
from pipeline.video.scene_cut import DEFAULT_MIN_DIFFERENCE, SceneCutDetector
from pipeline.video.track_stage import TrackStage, default_tracker
from pipeline.video.tracker import IouTracker
from pipeline.video.verification import Verifier
from pipeline.video.voting import IdentityVoter

# Regions covering this share of a frame: scanned whole instead (one frame costs no more than its crops).
FULL_SCAN_SHARE = 0.6


@dataclass(frozen=True)
class Detected:
    frames: tuple[Frame, ...]
    faces: tuple[Faces | None, ...]  # None: not detected this frame (tracks carry the faces)
    received: tuple[float, ...]  # perf_counter when each frame left its source queue
    closed: tuple[str, ...] = ()  # cameras whose source was closed before these frames: their tracks end


@dataclass(frozen=True)
class CameraDetector:
    """A camera's own detection settings (`cameras.<name>`): its detector (the shared nets at its minimum face
    size and detect resolution) and those sizes, which region-of-interest detection needs to size its crops."""

    detector: Detector
    min_face: float  # px, in detected pixels
    max_side: int | None = None  # the detector sees frames downscaled to this longer side; None: as they are


@dataclass
class RoiCounts:
    """What region-of-interest detection did (`DetectStage` with full_scan_every > 0), for the run summary."""

    full_scans: int = 0  # frames detected whole: first frame, schedule, cut, motion with no tracks, big regions
    cut_scans: int = 0  # of full_scans: because of a scene cut
    roi_frames: int = 0  # frames detected in regions only
    empty_frames: int = 0  # of roi_frames: no region at all (no tracks, no motion): no detector work
    regions: int = 0
    pixels_detected: int = 0  # pixels the detector saw (full scans + regions, at each camera's detect resolution)
    pixels_total: int = 0  # what full-frame detection of the same frames would have seen

    def summary(self) -> dict:
        saved = 1.0 - self.pixels_detected / self.pixels_total if self.pixels_total else 0.0
        return {"full_scans": self.full_scans, "cut_scans": self.cut_scans, "roi_frames": self.roi_frames,
                "empty_frames": self.empty_frames, "regions": self.regions,
                "pixels_detected": self.pixels_detected, "pixels_full_frame": self.pixels_total,
                "pixels_saved": round(saved, 3)}


class DetectStage:
    """`process(frames, received)` -> `Detected`.

    full_scan_every == 0: MTCNN on every `detect_every`-th frame of each camera (the others pass undetected).
    full_scan_every > 0 (region-of-interest detection, `pipeline.video.roi`): every frame is detected. A camera's
    frame is scanned whole on its first frame, every `full_scan_every` frames, after a hard scene cut (tested
    here, on the frame itself: the tracker, a few batches behind, cannot say), when motion appears while the
    camera has no live tracks, and when its regions would cover most of the frame anyway; otherwise only its
    regions are: live tracks (published by the tracker into `regions`) and this stage's own latest detections
    (the tracker lags a few frames), grown by `roi_margin` box sides, plus motion regions (`motion_gates`).
    Full frames and crops of all cameras go through one `detect()` call per detector: `cameras` gives a camera
    its own (`CameraDetector`: minimum face size, detect resolution); the others share `detector`.
    """

    def __init__(self, detector: Detector, detect_every: int, metrics: StageMetrics, *, full_scan_every: int = 0,
                 roi_margin: float = 1.0, regions: TrackRegions | None = None,
                 motion_gates: Callable[[str], object | None] | None = None,
                 scene_cut: float = DEFAULT_MIN_DIFFERENCE, min_region: int = MIN_REGION_SIDE,
                 face_px: float = 0.0, masks: dict[str, list] | None = None,
                 cameras: dict[str, CameraDetector] | None = None):
        self.detector = detector
        self.cameras = dict(cameras or {})
        self.detect_every = int(detect_every)
        self.metrics = metrics
        self.full_scan_every = int(full_scan_every)
        self.roi_margin = float(roi_margin)
        self.regions = regions if regions is not None else TrackRegions()
        self.motion_gates = motion_gates  # camera -> its MotionGate (update(image) -> Motion), or None
        self.scene_cut = float(scene_cut)
        self.min_region = int(min_region)
        self.face_px = float(face_px)  # a region's crop is shrunk until its smallest face is this wide; 0: never
        self.roi = RoiCounts()
        # camera -> polygons to ignore (`cameras.<name>.masks`): faces centred there are dropped after detection.
        self.masks = {camera: polygons for camera, polygons in (masks or {}).items() if polygons}
        self.masked = 0  # faces dropped by a mask
        self._seen: Counter[str] = Counter()  # frames processed per camera (not frame.index: drops leave gaps)
        self._since_full: Counter[str] = Counter()
        self._cuts: dict[str, SceneCutDetector] = {}
        self._gates: dict[str, object | None] = {}
        self._last_boxes: dict[str, np.ndarray] = {}  # camera -> its latest detections (xyxy)

    def forget(self, camera: str) -> None:
        """A camera's source was closed: its schedule, cut test, motion gate and latest boxes go."""
        for state in (self._seen, self._since_full, self._cuts, self._gates, self._last_boxes):
            state.pop(camera, None)

    def process(self, frames: list[Frame], received: list[float]) -> Detected:
        if self.full_scan_every > 0:
            return self._process_roi(frames, received)
        due = []
        for k, frame in enumerate(frames):
            if self._seen[frame.camera] % self.detect_every == 0:
                due.append(k)
            self._seen[frame.camera] += 1
        faces: list[Faces | None] = [None] * len(frames)
        if due:
            with self.metrics.time("detect", items=len(due)):
                for detector, ks in self._by_detector(frames, due):
                    for k, f in zip(ks, detector.detect([frames[k].image for k in ks]), strict=True):
                        faces[k] = self._unmasked(frames[k].camera, f)
        return Detected(tuple(frames), tuple(faces), tuple(received))

    def _by_detector(self, frames: list[Frame], ks: list[int]) -> list[tuple[Detector, list[int]]]:
        """Frame positions `ks` grouped by their camera's detector (most runs: one group, one batch)."""
        groups: dict[int, tuple[Detector, list[int]]] = {}
        for k in ks:
            own = self.cameras.get(frames[k].camera)
            detector = self.detector if own is None else own.detector
            groups.setdefault(id(detector), (detector, []))[1].append(k)
        return list(groups.values())

    def _unmasked(self, camera: str, faces: Faces) -> Faces:
        """`faces` without those centred in one of the camera's masks (a TV, a poster, a street)."""
        polygons = self.masks.get(camera)
        if not polygons or len(faces) == 0:
            return faces
        keep = boxes_outside_masks(faces.xyxy, polygons)
        self.masked += int((~keep).sum())
        return faces if keep.all() else faces[keep]

    def _process_roi(self, frames: list[Frame], received: list[float]) -> Detected:
        plans = [self._plan(frame) for frame in frames]  # None: full scan; else regions (maybe none)
        busy = [k for k, plan in enumerate(plans) if plan is None or plan]
        faces: list[Faces] = [Faces.empty()] * len(frames)
        if busy:
            with self.metrics.time("detect", items=len(busy)):
                for detector, ks in self._by_detector(frames, busy):
                    whole = [k for k in ks if plans[k] is None]
                    cropped = [k for k in ks if plans[k] is not None]
                    found = roi_detect_with_frames(detector, [frames[k].image for k in whole],
                                                   [(frames[k].image, *plans[k]) for k in cropped])
                    for k, f in zip(whole + cropped, found, strict=True):
                        faces[k] = self._unmasked(frames[k].camera, f)
        for frame, f in zip(frames, faces, strict=True):
            self._last_boxes[frame.camera] = f.xyxy.astype(np.float64)
        return Detected(tuple(frames), tuple(faces), tuple(received))

    def _plan(self, frame: Frame) -> tuple[list, list[float]] | None:
        """This frame's (regions, their scales), or None for a full scan; counts what it decided."""
        camera, shape = frame.camera, frame.image.shape
        first = self._seen[camera] == 0
        self._seen[camera] += 1
        cut = self._is_cut(frame)
        motion = self._motion(frame)
        face_px, min_region, fit = self._sizes(camera, shape)
        pixels = round(shape[0] * shape[1] * fit * fit)  # what a full scan of this frame costs the detector
        self.roi.pixels_total += pixels
        if cut:
            self.regions.mark_cut(camera, frame.index)
            self._last_boxes.pop(camera, None)
        boxes = np.concatenate([self.regions.predicted(camera, frame.index),
                                self._last_boxes.get(camera, np.zeros((0, 4)))])
        moving = motion is not None and motion.moving
        full = first or cut or self._since_full[camera] + 1 >= self.full_scan_every or (moving and not len(boxes))
        if not full:
            grown = grow_boxes(boxes, self.roi_margin)
            if moving and motion.regions:
                spots = np.asarray(motion.regions, np.float64).reshape(-1, 4)
                grown = np.concatenate([grown, grow_boxes(spots, self.roi_margin, True)])
                centres = (spots[:, :2] + spots[:, 2:]) / 2  # a face of unknown size: its region is not shrunk
                boxes = np.concatenate([boxes, np.concatenate([centres, centres], axis=1)])
            plan = grow_regions(grown, shape, min_region)
            scales = [min(fit, scale) for scale in region_scales(plan, boxes, face_px)]
            seen = round(sum(region_pixels([r]) * f * f for r, f in zip(plan, scales)))  # what the detector sees
            full = seen >= FULL_SCAN_SHARE * pixels  # one whole frame costs no more
        if full:
            self._since_full[camera] = 0
            self.roi.full_scans += 1
            self.roi.cut_scans += cut
            self.roi.pixels_detected += pixels
            self.metrics.count("detect_full_scans")
            return None
        self._since_full[camera] += 1
        self.roi.roi_frames += 1
        self.roi.empty_frames += not plan
        self.roi.regions += len(plan)
        self.roi.pixels_detected += seen
        self.metrics.count("detect_roi_frames")
        self.metrics.count("detect_regions", len(plan))
        return (plan, scales) if plan else ()

    def _sizes(self, camera: str, shape: tuple[int, ...]) -> tuple[float, int, float]:
        """(face_px, min_region, fit) for a camera's frame: a region's crop is shrunk until its smallest face is
        face_px wide, a region is at least min_region frame px, and `fit` is the camera's detect resolution
        (crops are shrunk like its full frames: never detected finer than a full scan)."""
        own = self.cameras.get(camera)
        if own is None:
            return self.face_px, self.min_region, 1.0
        fit = 1.0 if own.max_side is None else min(1.0, own.max_side / max(shape[:2]))
        return 2 * own.min_face, round(2 * own.min_face / fit), fit

    def _is_cut(self, frame: Frame) -> bool:
        if self.scene_cut <= 0:
            return False
        detector = self._cuts.get(frame.camera)
        if detector is None:
            detector = self._cuts[frame.camera] = SceneCutDetector(self.scene_cut)
        return detector.is_cut(frame.image)

    def _motion(self, frame: Frame):
        if self.motion_gates is None:
            return None
        if frame.camera not in self._gates:
            self._gates[frame.camera] = self.motion_gates(frame.camera)
        gate = self._gates[frame.camera]
        return gate.update(frame.image) if gate is not None else None


def roi_detect_with_frames(detector: Detector, images: list[np.ndarray],
                           crops: list[tuple[np.ndarray, list, list[float]]]) -> list[Faces]:
    """Whole `images` and the (regions, scales) of each `crops` frame in one `detect()` call: whole frames'
    faces first, then each cropped frame's, in order."""
    regions = [[(0, 0, image.shape[1], image.shape[0])] for image in images] + [plan for _, plan, _ in crops]
    scales = [[1.0] for _ in images] + [plan_scales for _, _, plan_scales in crops]
    return roi_detect(detector, images + [image for image, _, _ in crops], regions, scales)


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
                 verifier: Verifier | None = None, weak_every: int = 3, weak_eager_frames: int = 25,
                 unknowns: UnknownRecorder | None = None,
                 self_enrol: SelfEnrol | None = None, regions: TrackRegions | None = None):
        self.metrics = metrics
        self.tracking = TrackStage(new_tracker, scene_cut, regions)
        self.matching = MatchStage(judge, matcher, metrics, weak_every, weak_eager_frames)
        self.events = EventStage(self.tracking, voter or IdentityVoter(), bus, include_crops, verifier, unknowns,
                                 self_enrol)
        self.arbiter = IdentityArbiter()
        self.labels = LabelStage()
        self.on_closed: Callable[[str], None] | None = None  # told each closed camera once its tracks ended

    def process(self, batch: Detected) -> list[Annotated]:
        for camera in batch.closed:
            self.events.close(self.tracking.end_camera(camera))
            if self.on_closed is not None:
                self.on_closed(camera)
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
