"""Per-camera face tracks: IoU association of each frame's detections with the tracks of earlier frames.

Association is greedy by descending IoU: with the handful of faces in a frame it picks the same pairs as an
optimal assignment except in contrived ties, and a wrong pairing is caught by re-verification (appearance), not
by IoU. The optimal solver (scipy) is where a tie matters: one name per face (identity_assignment.py). Each
track's box is predicted with a constant velocity from its last two observations, so a track survives frames
skipped between detections (the runner may detect every Nth frame) and two faces that cross keep their ids. A
track that was missed is also matched against its last observed box (the better of the two IoUs), for a person
who stopped moving while hidden.

Life cycle: `tentative` (new) -> `confirmed` after `confirm_hits` hits -> `lost` when missed -> ended once it
has been missed for more than `max_misses` frames (counted in frames, not detector calls). A tentative track
ends at its first miss: it was a detector flicker or a face passing through, not worth remembering. Ids are
per tracker (= per camera), increasing, never reused.

`needs_embedding` keeps embedding cost low (design decision 7): a face is embedded when its track is new, its
identity is not yet confirmed (`confirm_identity`, once `IdentityVoter` decides), or its quality beats the
best quality embedded so far by more than `reembed_quality_gain` (and, if set, every `reembed_every` frames).
A decided track is still re-verified (`TrackAssignment.verify`): every `reverify_every` detections, and at
once when the association is doubtful: the box jumped (its centre landed more than `jump_fraction` of the
box's size from the prediction), its scale changed by more than `scale_jump` times, or another track's
predicted box overlaps it (two people crossing). When the re-verified face disagrees with the track
(`pipeline.video.verification`), the stage asks for a `split`: the old appearance ends and a new track goes
on from this face, recognised afresh. Each track keeps its appearance (`observe`: the quality-weighted mean
of its embeddings) for that check.

The appearance gate (`pipeline.video.appearance_gate`, when `update`/`predict` are given the frame) compares
every live track's box with the same place in the previous frame, detected frame or not. A change above
`appearance_jump` puts the track `in_doubt`: another face may be under the box (a cut that kept the
background). Its name is not shown while in doubt, and its next detection is re-verified at once (on a
detected frame, that very detection); the stage ends the doubt (`resolve_doubt`) when the face agrees, or
splits the track.

Only the tracker writes into a `Track`: the stages read tracks and hand decisions back through
`confirm_identity`, `set_unknown_id`, `show_similarity`, `observe`, `resolve_doubt` and `split`. Settings are plain
values, validated where config is read
(`pipeline.app.config.TrackerConfig`, whose defaults these equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pipeline.core.faces import Faces
from pipeline.video.appearance_gate import DEFAULT_APPEARANCE_JUMP, appearance_change

TrackState = Literal["tentative", "confirmed", "lost"]
# Face side (px) at which the default quality saturates: templates of 60+ px faces are within cosine 0.95 of
# full size (quality.py calibration), so beyond ~100 px size no longer limits the embedding.
QUALITY_FULL_SIDE = 100.0
# Predicted boxes overlapping by more than this IoU count as crossing paths (re-verified); below it, neighbours in
# a crowd whose boxes merely touch would be re-embedded at every detection.
CROSSING_IOU = 0.1
VELOCITY_SMOOTHING = 0.5  # weight of the newest velocity: follows turns within two hits, damps jitter


@dataclass
class Track:
    id: int  # per camera, increasing, never reused
    camera: str
    box: np.ndarray  # (4,) xyxy: last observed, or predicted by `predict()`
    state: TrackState = "tentative"
    hits: int = 1
    misses: int = 0  # frames since the last matching detection
    age: int = 0  # frames since the first detection
    best_quality: float = 0.0  # best quality among the faces handed out for embedding
    anon_id: str = ""  # stable anonymous id ("cam0-t7") for people nobody enrolled
    unknown_id: str | None = None  # the unknown person's cluster ("unknown-3fa2b9c1"), across tracks and days
    identity: str | None = None  # the confirmed identity (`IouTracker.confirm_identity`)
    similarity: float | None = None  # shown on the box: the latest match's, then the confirmation's
    identity_confirmed: bool = False  # a known identity or "unknown" was confirmed
    first_frame: int = 0
    last_frame: int = 0  # frame of the last matching detection
    confirmed_frame: int | None = None  # None: never confirmed (ended tentative tracks are flickers)
    appearance: np.ndarray | None = None  # unit mean of the embeddings seen (`observe`), quality-weighted
    appearance_weight: float = 0.0
    split_from: int | None = None  # the track this one was split from (`IouTracker.split`)
    in_doubt: bool = False  # the face under the box changed (appearance gate): name hidden until re-verified
    appearance_change: float = 0.0  # the gate's latest measure (1 - correlation with the previous frame)


@dataclass(frozen=True)
class TrackAssignment:
    face_index: int  # row in this frame's `Faces`
    track: Track
    is_new: bool
    needs_embedding: bool
    verify: bool = False  # a decided track's face embedded to check it is still the same person


@dataclass
class _Motion:
    box: np.ndarray  # last observed box
    frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float64))  # px per frame
    embed_frame: int | None = None  # last frame a face of this track was handed out for embedding
    hits_since_embed: int = 0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, N) intersection over union of xyxy boxes `a` (M, 4) and `b` (N, 4); 0 for empty boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def greedy_match(scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, col) pairs by descending score, each row and column used once, scores >= threshold (> 0)."""
    if scores.size == 0:
        return []
    rows_used, cols_used, pairs = set(), set(), []
    for flat in np.argsort(-scores, axis=None, kind="stable"):
        row, col = divmod(int(flat), scores.shape[1])
        if scores[row, col] < threshold or scores[row, col] <= 0:
            break
        if row not in rows_used and col not in cols_used:
            rows_used.add(row)
            cols_used.add(col)
            pairs.append((row, col))
    return pairs


def default_quality(faces: Faces) -> np.ndarray:
    """A [0, 1] proxy when the caller has no quality score: detector confidence x size (saturating at 100 px)."""
    side = np.minimum(faces.width, faces.height)
    return faces.score * np.clip(side / QUALITY_FULL_SIDE, 0.0, 1.0)


class IouTracker:
    """`update(faces, frame_index)` once per detected frame of one camera -> (assignments, ended tracks)."""

    def __init__(self, iou_threshold: float = 0.3, confirm_hits: int = 3, max_misses: int = 15,
                 reembed_quality_gain: float = 0.15, reembed_every: int = 0, reverify_every: int = 4,
                 jump_fraction: float = 0.5, scale_jump: float = 1.5,
                 appearance_jump: float = DEFAULT_APPEARANCE_JUMP, *, camera: str = "cam"):
        self.iou_threshold = float(iou_threshold)
        self.confirm_hits = int(confirm_hits)
        self.max_misses = int(max_misses)
        self.reembed_quality_gain = float(reembed_quality_gain)
        self.reembed_every = int(reembed_every)
        self.reverify_every = int(reverify_every)
        self.jump_fraction = float(jump_fraction)
        self.scale_jump = float(scale_jump)
        self.appearance_jump = float(appearance_jump)  # 0: no appearance gate
        self.camera = camera
        self.appearance_jumps = 0  # times a track was put in doubt
        self._tracks: dict[int, Track] = {}  # live tracks by id, in creation order
        self._motion: dict[int, _Motion] = {}
        self._next_id = 1
        self._last_frame: int | None = None
        self._previous_image: np.ndarray | None = None  # the last frame given to `update`/`predict`

    @property
    def tracks(self) -> list[Track]:
        """Every live track (tentative, confirmed, lost), oldest first."""
        return list(self._tracks.values())

    def update(self, faces: Faces, frame_index: int, quality: np.ndarray | None = None,
               image: np.ndarray | None = None) -> tuple[list[TrackAssignment], list[Track]]:
        """Assign this frame's faces to tracks: one assignment per face (in face order), and the tracks that
        ended this frame (missed for more than `max_misses` frames, or tentative and missed). `image`: the
        frame (BGR), for the appearance gate; None: no gate on this frame."""
        self._check_frame(frame_index)
        quality = self._quality(faces, quality)
        live = list(self._tracks.values())
        predicted = self._predicted_boxes(live, frame_index)
        pairs = greedy_match(self._scores(live, faces.xyxy, frame_index, predicted), self.iou_threshold)
        crowded = self._crowded(predicted)
        assignments: dict[int, TrackAssignment] = {}
        for row, col in pairs:
            track = live[row]
            self._gate(track, faces.xyxy[col], image)
            doubt = track.in_doubt or row in crowded or self._jumped(predicted[row], faces.xyxy[col])
            needs, verify = self._hit(track, faces.xyxy[col], frame_index, float(quality[col]), doubt)
            assignments[col] = TrackAssignment(col, track, False, needs, verify)
        for col in range(len(faces)):
            if col not in assignments:
                track = self._new_track(faces.xyxy[col], frame_index, float(quality[col]))
                assignments[col] = TrackAssignment(col, track, True, True)
        matched = {row for row, _ in pairs}
        ended = [t for row, t in enumerate(live) if row not in matched and self._miss(t, frame_index)]
        for track in ended:
            self._remove(track)
        self._previous_image = image
        return [assignments[col] for col in range(len(faces))], ended

    def predict(self, frame_index: int, image: np.ndarray | None = None) -> list[Track]:
        """Tracks seen at their last detection (tentative, confirmed), boxes moved to `frame_index`.

        For frames the runner does not run the detector on; nothing is aged or ended here, but the
        appearance gate (given `image`, the frame) may put a track in doubt.
        """
        active = [t for t in self._tracks.values() if t.state != "lost"]
        for track in active:
            track.box = self._predicted(track.id, frame_index).astype(np.float32)
            self._gate(track, track.box, image)
        self._previous_image = image
        return active

    def confirm_identity(self, track: Track, identity: str | None, similarity: float) -> None:
        """The voter confirmed `identity` (None: unknown) for `track`: shown from now on, and the face is no
        longer embedded every frame (only on a quality gain or `reembed_every`)."""
        track.identity, track.similarity, track.identity_confirmed = identity, float(similarity), True

    def set_unknown_id(self, track: Track, unknown_id: str | None) -> None:
        """The unknown-people directory placed the track's person in cluster `unknown_id` (None: a name now)."""
        track.unknown_id = unknown_id

    def observe(self, track: Track, embedding: np.ndarray, weight: float = 1.0) -> None:
        """A face of `track` was embedded and agrees with it: fold it into the track's appearance."""
        embedding = np.asarray(embedding, np.float64).reshape(-1)
        total = track.appearance_weight + float(weight)
        if track.appearance is None or total <= 0:
            mean = embedding
        else:
            mean = (track.appearance * track.appearance_weight + embedding * weight) / total
        track.appearance = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        track.appearance_weight = max(total, float(weight))

    def split(self, track: Track, frame_index: int) -> Track:
        """End `track` here (its face turned out to be someone else) and go on with a new track from its last
        box, confirmed at once (the face is established, only its identity is new) and recognised afresh."""
        motion = self._motion[track.id]
        self._remove(track)
        new = self._new_track(motion.box, frame_index, track.best_quality)
        new.state, new.confirmed_frame, new.split_from = "confirmed", frame_index, track.id
        self._motion[new.id].velocity = motion.velocity.copy()
        return new

    def resolve_doubt(self, track: Track) -> None:
        """A face embedded since the appearance gate fired agrees with `track`: its name is shown again."""
        track.in_doubt = False

    def show_similarity(self, track: Track, similarity: float) -> None:
        """The latest match's similarity, shown on the box until a confirmation fixes it."""
        if not track.identity_confirmed:
            track.similarity = float(similarity)

    def end_all(self) -> list[Track]:
        """End every live track (end of stream); returns them."""
        ended = list(self._tracks.values())
        self._tracks.clear()
        self._motion.clear()
        return ended

    def end_stream(self) -> list[Track]:
        """The camera's source was closed: end every track and forget the frame clock (a source opened again
        counts its frames from 0); track ids go on, never reused."""
        self._last_frame = None
        return self.end_all()

    # -- internals ---------------------------------------------------------------------------------
    def _check_frame(self, frame_index: int) -> None:
        if self._last_frame is not None and frame_index < self._last_frame:
            raise ValueError(f"frame_index went backwards: {frame_index} after {self._last_frame}")
        self._last_frame = frame_index

    @staticmethod
    def _quality(faces: Faces, quality: np.ndarray | None) -> np.ndarray:
        if quality is None:
            return default_quality(faces)
        quality = np.asarray(quality, np.float64).reshape(-1)
        if quality.shape != (len(faces),):
            raise ValueError(f"quality must have shape ({len(faces)},), got {quality.shape}")
        return quality

    def _gate(self, track: Track, box: np.ndarray, image: np.ndarray | None) -> None:
        """The appearance gate at `box` in this frame: a jump puts the track in doubt (only a re-verified face
        takes it out: `resolve_doubt`, or a split). Not for tentative tracks: unnamed, embedded at every
        detection anyway, and mostly flickers whose boxes hold no face."""
        if image is None or self.appearance_jump <= 0 or track.state == "tentative":
            return
        track.appearance_change = appearance_change(self._previous_image, image, box)
        if track.appearance_change > self.appearance_jump and not track.in_doubt:
            track.in_doubt = True
            self.appearance_jumps += 1

    def _predicted_boxes(self, live: list[Track], frame_index: int) -> np.ndarray:
        if not live:
            return np.zeros((0, 4))
        return np.stack([self._predicted(t.id, frame_index) for t in live])

    def _crowded(self, predicted: np.ndarray) -> set[int]:
        """Rows whose predicted box overlaps another track's: faces crossing paths, worth re-verifying."""
        if len(predicted) < 2:
            return set()
        overlap = iou_matrix(predicted, predicted)
        np.fill_diagonal(overlap, 0.0)
        return set(np.flatnonzero(overlap.max(axis=1) > CROSSING_IOU).tolist())

    def _jumped(self, predicted: np.ndarray, box: np.ndarray) -> bool:
        """The observed box is far from the predicted one (centre or scale): maybe another face took it."""
        size_p = np.sqrt(max((predicted[2] - predicted[0]) * (predicted[3] - predicted[1]), 1e-6))
        size_b = np.sqrt(max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6))
        centre_p = (predicted[:2] + predicted[2:]) / 2.0
        centre_b = (np.asarray(box[:2], np.float64) + np.asarray(box[2:], np.float64)) / 2.0
        moved = float(np.linalg.norm(centre_b - centre_p)) > self.jump_fraction * size_p
        return moved or max(size_b / size_p, size_p / size_b) > self.scale_jump

    def _scores(self, live: list[Track], boxes: np.ndarray, frame_index: int,
                predicted: np.ndarray | None = None) -> np.ndarray:
        if not live or len(boxes) == 0:
            return np.zeros((len(live), len(boxes)))
        predicted = self._predicted_boxes(live, frame_index) if predicted is None else predicted
        scores = iou_matrix(predicted, boxes)
        lost = np.array([t.state == "lost" for t in live])
        if lost.any():
            last = np.stack([self._motion[t.id].box for t in live])
            scores[lost] = np.maximum(scores[lost], iou_matrix(last[lost], boxes))
        return scores

    def _predicted(self, track_id: int, frame_index: int) -> np.ndarray:
        motion = self._motion[track_id]
        return motion.box + motion.velocity * (frame_index - motion.frame)

    def _new_track(self, box: np.ndarray, frame_index: int, quality: float) -> Track:
        track_id, self._next_id = self._next_id, self._next_id + 1
        track = Track(id=track_id, camera=self.camera, box=np.array(box, np.float32), best_quality=quality,
                      anon_id=f"{self.camera}-t{track_id}", first_frame=frame_index, last_frame=frame_index)
        if self.confirm_hits <= 1:
            track.state, track.confirmed_frame = "confirmed", frame_index
        self._tracks[track_id] = track
        self._motion[track_id] = _Motion(np.array(box, np.float64), frame_index, embed_frame=frame_index)
        return track

    def _hit(self, track: Track, box: np.ndarray, frame_index: int, quality: float,
             doubt: bool = False) -> tuple[bool, bool]:
        """Record a matching detection; returns (needs_embedding, verify)."""
        motion = self._motion[track.id]
        box = np.asarray(box, np.float64)
        if frame_index > motion.frame:
            velocity = (box - motion.box) / (frame_index - motion.frame)
            first = track.hits == 1
            motion.velocity = velocity if first else (
                VELOCITY_SMOOTHING * velocity + (1 - VELOCITY_SMOOTHING) * motion.velocity)
        motion.box, motion.frame = box, frame_index
        track.box = box.astype(np.float32)
        track.hits += 1
        track.misses = 0
        track.last_frame = frame_index
        track.age = frame_index - track.first_frame
        if track.state == "lost":
            track.state = "confirmed"  # only confirmed tracks are kept while lost
        if track.state == "tentative" and track.hits >= self.confirm_hits:
            track.state, track.confirmed_frame = "confirmed", frame_index
        return self._needs_embedding(track, motion, quality, frame_index, doubt)

    def _needs_embedding(self, track: Track, motion: _Motion, quality: float, frame_index: int,
                         doubt: bool) -> tuple[bool, bool]:
        motion.hits_since_embed += 1
        verify = track.identity_confirmed and (
            doubt or (self.reverify_every > 0 and motion.hits_since_embed >= self.reverify_every))
        due = (verify or not track.identity_confirmed
               or quality > track.best_quality + self.reembed_quality_gain
               or (self.reembed_every > 0 and motion.embed_frame is not None
                   and frame_index - motion.embed_frame >= self.reembed_every))
        if due:
            # Compared with the best face *embedded*, so a slow creep of quality still triggers eventually.
            track.best_quality = max(track.best_quality, quality)
            motion.embed_frame, motion.hits_since_embed = frame_index, 0
        return due, bool(verify)

    def _miss(self, track: Track, frame_index: int) -> bool:
        """Record a frame without a matching detection; True when the track ends."""
        track.misses = frame_index - track.last_frame
        track.age = frame_index - track.first_frame
        if track.state == "tentative":
            return True
        track.state = "lost"
        return track.misses > self.max_misses

    def _remove(self, track: Track) -> None:
        self._tracks.pop(track.id, None)
        self._motion.pop(track.id, None)
