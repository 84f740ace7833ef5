"""Identity votes per track: one frame's match is noisy, a track's majority over several frames is not.

Votes are weighted: a face that passed the strict quality gates weighs 1, weak evidence (a small, turned or
soft face that passed only the hard minimums, `EvidenceGates`) weighs less. Within the last `window` votes of
a track, the identity with the most weight is confirmed when its weight reaches `min_votes` and at least
`min_share` of the window's weight, and, for a known name, when at least `min_strong_votes` of its votes are
strong: weak evidence alone never confirms a name, though it may confirm "unknown" (which names nobody and
stops the face being embedded at every detection). Strong faces alone confirm as fast as before (3 of them). "Unknown" (identity None) is a
candidate like any name, so an unknown person gets exactly one confirmation too, under the track's anonymous id.

One appearance (track) gives one confirmation: the confirmed identity is never confirmed again on that track.
A different identity can replace it only with its own majority in the window and not before `debounce_frames`
frames after the previous confirmation, so a track that wavers between two people cannot flood the event
stream. A tie with the confirmed identity keeps it.

The voter decides and returns its `Confirmation`; applying it to the track is the tracker's job
(`IouTracker.confirm_identity`). Ballots are keyed by (camera, track id), plain values.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pipeline.gallery.matcher import Match


@dataclass(frozen=True)
class Confirmation:
    track_id: int
    camera: str
    identity: str | None  # None: confirmed unknown
    similarity: float  # mean similarity of the winning votes in the window
    votes: int  # winning votes in the window
    frame: int


@dataclass
class _Ballot:
    votes: deque  # (identity, similarity), newest last
    confirmed: bool = False
    identity: str | None = None
    frame: int = 0  # frame of the last confirmation


class IdentityVoter:
    """`vote(camera, track_id, match, frame_index)` -> a `Confirmation` when that track's identity is confirmed.

    Plain values, checked where config is read (`pipeline.app.config.VotingConfig`, whose defaults these
    equal). Call `end(camera, track_id)` when a track ends.
    """

    def __init__(self, min_votes: int = 3, window: int = 10, min_share: float = 0.6, debounce_frames: int = 30,
                 min_strong_votes: int = 2):
        self.min_votes = int(min_votes)
        self.min_strong_votes = int(min_strong_votes)
        self.window = int(window)
        self.min_share = float(min_share)
        self.debounce_frames = int(debounce_frames)
        self._ballots: dict[tuple[str, int], _Ballot] = {}

    def vote(self, camera: str, track_id: int, match: Match | None, frame_index: int,
             quality_ok: bool = True, weight: float = 1.0, strong: bool = True) -> Confirmation | None:
        """`weight`: the face's evidence (1: passed the strict gates); `strong`: it did pass them."""
        if match is None or not quality_ok or weight <= 0:
            return None
        ballot = self._ballots.get((camera, track_id))
        if ballot is None:
            ballot = self._ballots[(camera, track_id)] = _Ballot(deque(maxlen=self.window))
        ballot.votes.append((match.identity, float(match.similarity), float(weight), bool(strong)))
        leader = self._leader(ballot)
        if leader is None:
            return None
        identity, count, similarity = leader
        if ballot.confirmed and (identity == ballot.identity or frame_index - ballot.frame < self.debounce_frames):
            return None
        ballot.confirmed, ballot.identity, ballot.frame = True, identity, frame_index
        return Confirmation(track_id, camera, identity, similarity, count, frame_index)

    def end(self, camera: str, track_id: int) -> None:
        """Forget a track's votes (call when the tracker ends it)."""
        self._ballots.pop((camera, track_id), None)

    def votes(self, camera: str, track_id: int) -> list[tuple[str | None, float]]:
        """The votes in the track's window, oldest first (for logs and tests)."""
        ballot = self._ballots.get((camera, track_id))
        return [(identity, similarity) for identity, similarity, _, _ in ballot.votes] if ballot else []

    def __len__(self) -> int:
        return len(self._ballots)

    def _leader(self, ballot: _Ballot) -> tuple[str | None, int, float] | None:
        """(identity, votes, mean similarity) of the window's weighted majority, or None when none qualifies."""
        tally: dict[str | None, list[tuple[float, float, bool]]] = {}
        for identity, similarity, weight, strong in ballot.votes:
            tally.setdefault(identity, []).append((similarity, weight, strong))
        weights = {identity: sum(w for _, w, _ in votes) for identity, votes in tally.items()}
        top = max(weights.values())
        tied = [identity for identity, w in weights.items() if abs(w - top) < 1e-9]
        identity = ballot.identity if ballot.confirmed and ballot.identity in tied else tied[0]
        total = sum(weights.values())
        if top < self.min_votes - 1e-9 or top / total < self.min_share - 1e-9:
            return None
        votes = tally[identity]
        if identity is not None and sum(strong for _, _, strong in votes) < self.min_strong_votes:
            return None  # weak evidence alone never names anybody
        similarity = sum(s * w for s, w, _ in votes) / sum(w for _, w, _ in votes)
        return identity, len(votes), similarity
