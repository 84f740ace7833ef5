"""The events of a run: `track_started` / `track_ended` as the tracker reports them, `identity_confirmed` when
the voter decides.

Each match is a vote for its track (`IdentityVoter`); a confirmation is applied to the track through its
tracker (`TrackStage.confirm_identity`) before the event is made, so the event and the box label name the
same identity. Only tracks the tracker confirmed are announced: a tentative one may be a one-frame flicker.

A track in doubt (its appearance gate fired) is checked with `doubt=True` (`Verifier`): it is split, or its
doubt cleared (`TrackStage.resolve_doubt`), or, on a face that cannot settle it, left in doubt with its name
hidden. A split of a doubted track says so in its track_ended event (`"appearance_jump": true`).

With an `UnknownRecorder` (pipeline/unknowns) the strict faces of each track are remembered: a track confirmed
unknown gets its stable `unknown_id` (the cluster of earlier tracks of that person, or a new one) on the
identity_confirmed event, its box and its track_ended event; a known confirmation keeps its best face for
`enroll.py reject` and search. `maintain()` (once per batch) runs the directory's due passes and announces
their merges (`unknown_merged`). `self_enrol` (gallery.auto_enrol) is offered every strict face of a track
confirmed as a known person, while the face still matches that person.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence

from pipeline.events import (
    IDENTITY_CONFIRMED,
    TRACK_ENDED,
    TRACK_STARTED,
    Event,
    EventBus,
    encode_crop,
)
from pipeline.gallery.matcher import Match
from pipeline.unknowns.recorder import UnknownRecorder
from pipeline.unknowns.sightings import Seen
from pipeline.video.match_stage import Recognised
from pipeline.video.track_stage import Tracked, TrackStage
from pipeline.video.tracker import Track
from pipeline.video.verification import Verifier
from pipeline.video.voting import IdentityVoter

SCENE_CUT = "scene cut"  # track_ended's `reason`: the camera cut to another shot
SPLIT = "split"  # a re-verified face disagreed with the track: the appearance ended, a new track goes on
IDENTITY_TAKEN = "identity claimed by another face"  # split_reason when one frame's assignment took the name
# (identity id, the face's embedding, its match, strict quality) -> the self-enrolment decision
SelfEnrol = Callable[[str, object, Match, bool], object]


class EventStage:
    """`announce(tracked)` after tracking, `vote(recognised)` after matching, `finish(ended)` at the end."""

    def __init__(self, tracking: TrackStage, voter: IdentityVoter, bus: EventBus, include_crops: bool = False,
                 verifier: Verifier | None = None, unknowns: UnknownRecorder | None = None,
                 self_enrol: SelfEnrol | None = None):
        self.tracking = tracking
        self.voter = voter
        self.verifier = verifier or Verifier()
        self.splits = 0
        self.bus = bus
        self.include_crops = include_crops
        self.tracks: Counter[str] = Counter()  # announced (confirmed, non-flicker) tracks per camera
        self.identities: Counter[str] = Counter()  # name -> identity_confirmed events
        self.unknowns = unknowns
        self.self_enrol = self_enrol

    def announce(self, tracked: Sequence[Tracked]) -> None:
        """Per frame, in order: the tracks that ended there, then the tracks confirmed there."""
        for item in tracked:
            for track in item.ended:
                reason = SCENE_CUT if item.cut else None  # after a cut the tracker holds no older track
                self._ended(track, item.frame.index, item.frame.timestamp, reason)
            for a in item.assignments:
                track = a.track
                if track.state == "confirmed" and track.confirmed_frame == item.frame.index:
                    self.tracks[track.camera] += 1
                    self.bus.emit(Event.for_track(TRACK_STARTED, track, item.frame.index, item.frame.timestamp))

    def vote(self, recognised: Sequence[Recognised]) -> None:
        for item in recognised:
            self._vote(item)

    def maintain(self, final: bool = False) -> None:
        """The unknown directory's due passes (refresh, re-clustering, purge), or with `final` the last
        re-clustering of the run; merges become events."""
        if self.unknowns is None:
            return
        for merge in self.unknowns.finish() if final else self.unknowns.maintain():
            self.bus.emit(Event.merged(merge.survivor, merge.merged, merge.similarity, time.time()))

    def finish(self, ended: Sequence[tuple[Track, int, float]]) -> None:
        """The track_ended events of the tracks ended at the end of the stream."""
        self.close(ended)
        self.maintain(final=True)

    def close(self, ended: Sequence[tuple[Track, int, float]]) -> None:
        """The track_ended events of tracks ended outside the tracker (end of stream, a camera closed)."""
        for track, frame_index, timestamp in ended:
            self._ended(track, frame_index, timestamp)

    def _vote(self, item: Recognised) -> None:
        frame, match, candidate = item.candidate.frame, item.match, item.candidate
        track = self.tracking.current(candidate.track)
        doubt = track.in_doubt
        reason = self.verifier.disagreement(track, item.embedding, match, candidate.strong, doubt)
        if reason is not None:
            track = self.split(track, frame, reason)
        elif doubt and self.verifier.clears_doubt(track, match, candidate.strong):
            self.tracking.resolve_doubt(track)
        self.tracking.observe(track, item.embedding, candidate.weight)
        self.tracking.show_similarity(track, match.similarity)
        if self.unknowns is not None and candidate.strong:
            self.unknowns.observe((track.camera, track.id), Seen(item.embedding, track.camera, track.anon_id,
                                                                 time.time(), candidate.quality, candidate.crop))
        confirmation = self.voter.vote(track.camera, track.id, match, frame.index, weight=candidate.weight,
                                       strong=candidate.strong)
        if confirmation is not None:
            self._confirm(item, track, confirmation)
        if (self.self_enrol is not None and track.identity_confirmed and not track.in_doubt
                and track.identity is not None and match.identity == track.identity and match.identity_id):
            # Every strict face of a confirmed track is offered (not only the confirming one): its best frontal
            # frames come whenever they come. The rules decide (pipeline/gallery/self_enrol.py).
            self.self_enrol(match.identity_id, item.embedding, match, candidate.strong)

    def _confirm(self, item: Recognised, track: Track, confirmation) -> None:
        frame, match = item.candidate.frame, item.match
        self.tracking.confirm_identity(track, confirmation.identity, confirmation.similarity)
        event_id = uuid.uuid4().hex
        identity_id = match.identity_id if match.identity == confirmation.identity else None
        if confirmation.identity is not None:
            self.identities[confirmation.identity] += 1
        if self.unknowns is not None:
            unknown_id = self.unknowns.confirmed((track.camera, track.id), identity_id, event_id) \
                if confirmation.identity is None or identity_id is not None else None
            self.tracking.set_unknown_id(track, unknown_id)
        crop = encode_crop(item.candidate.crop[:, :, ::-1]) if self.include_crops else None
        extra = {"votes": confirmation.votes, "runner_up": match.runner_up,
                 "runner_up_similarity": _round(match.runner_up_similarity)}
        self.bus.emit(Event.for_track(IDENTITY_CONFIRMED, track, frame.index, frame.timestamp, extra, crop,
                                      event_id))

    def split(self, track: Track, frame, reason: str) -> Track:
        """The face is someone else: the old appearance ends here, a new track starts from the face."""
        new = self.tracking.split(track, frame.index)
        self.splits += 1
        more = {"split_reason": reason, "split_into": new.id}
        if track.in_doubt:
            more["appearance_jump"] = True
        self._ended(track, frame.index, frame.timestamp, SPLIT, more)
        self.tracks[new.camera] += 1
        self.bus.emit(Event.for_track(TRACK_STARTED, new, frame.index, frame.timestamp, {"split_from": track.id}))
        return new

    def _ended(self, track: Track, frame_index: int, timestamp: float, reason: str | None = None,
               more: dict | None = None) -> None:
        self.voter.end(track.camera, track.id)
        if self.unknowns is not None:
            unknown_id = self.unknowns.ended((track.camera, track.id))
            if unknown_id is not None:  # the track's id, or the one it got only now (its first strict faces)
                self.tracking.set_unknown_id(track, unknown_id)
        if track.confirmed_frame is None:
            return
        extra = {"first_frame": track.first_frame, "last_frame": track.last_frame, "hits": track.hits}
        if reason is not None:
            extra["reason"] = reason
        extra.update(more or {})
        self.bus.emit(Event.for_track(TRACK_ENDED, track, frame_index, timestamp, extra))


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
