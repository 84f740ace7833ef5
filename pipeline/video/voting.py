"""Identity votes per track: one frame's match is noisy, a track's majority over several frames is not.

Only faces that passed the quality gates vote (a profile or a blurred face matches badly and would only add
noise). Within the last `window` votes of a track, the most named identity is confirmed when it has at least
`min_votes` votes and at least `min_share` of the votes in the window. "Unknown" (identity None) is a
candidate like any name, so an unknown person gets exactly one confirmation too, under the track's anonymous id.

One appearance (track) gives one confirmation: the confirmed identity is never confirmed again on that track.
A different identity can replace it only with its own majority in the window and not before `debounce_frames`
frames after the previous confirmation, so a track that wavers between two people cannot flood the event
stream. A tie with the confirmed identity keeps it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pydantic import ValidationError

from pipeline.app.config import VotingConfig
from pipeline.core.errors import ConfigError
from pipeline.gallery.matcher import Match
from pipeline.video.tracker import Track


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
    """`vote(track, match, frame_index, quality_ok)` -> a `Confirmation` when the track's identity is confirmed.

    On confirmation the track's `identity`, `similarity` and `identity_confirmed` are set (the tracker reads
    `identity_confirmed` to stop re-embedding the face every frame). Call `end(track)` when a track ends.
    """

    def __init__(self, min_votes: int = 3, window: int = 10, min_share: float = 0.6, debounce_frames: int = 30):
        if min_votes > window:
            raise ConfigError(f"min_votes ({min_votes}) cannot exceed the window ({window}): nothing would confirm")
        try:  # the config section's range checks, as a ConfigError
            VotingConfig(min_votes=min_votes, window=window, min_share=min_share, debounce_frames=debounce_frames)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise ConfigError(f"invalid voting setting {error['loc'][0]}: {error['msg']}") from None
        self.min_votes = int(min_votes)
        self.window = int(window)
        self.min_share = float(min_share)
        self.debounce_frames = int(debounce_frames)
        self._ballots: dict[tuple[str, int], _Ballot] = {}

    @classmethod
    def from_config(cls, config: VotingConfig) -> IdentityVoter:
        return cls(**config.model_dump())

    def vote(self, track: Track, match: Match | None, frame_index: int, quality_ok: bool) -> Confirmation | None:
        if match is None or not quality_ok:
            return None
        ballot = self._ballots.get((track.camera, track.id))
        if ballot is None:
            ballot = self._ballots[(track.camera, track.id)] = _Ballot(deque(maxlen=self.window))
        ballot.votes.append((match.identity, float(match.similarity)))
        leader = self._leader(ballot)
        if leader is None:
            return None
        identity, count, similarity = leader
        if ballot.confirmed and (identity == ballot.identity or frame_index - ballot.frame < self.debounce_frames):
            return None
        ballot.confirmed, ballot.identity, ballot.frame = True, identity, frame_index
        track.identity, track.similarity, track.identity_confirmed = identity, similarity, True
        return Confirmation(track.id, track.camera, identity, similarity, count, frame_index)

    def end(self, track: Track) -> None:
        """Forget a track's votes (call when the tracker ends it)."""
        self._ballots.pop((track.camera, track.id), None)

    def votes(self, track: Track) -> list[tuple[str | None, float]]:
        """The votes in the track's window, oldest first (for logs and tests)."""
        ballot = self._ballots.get((track.camera, track.id))
        return list(ballot.votes) if ballot else []

    def __len__(self) -> int:
        return len(self._ballots)

    def _leader(self, ballot: _Ballot) -> tuple[str | None, int, float] | None:
        """(identity, votes, mean similarity) of the window's majority, or None when no identity qualifies."""
        tally: dict[str | None, list[float]] = {}
        for identity, similarity in ballot.votes:
            tally.setdefault(identity, []).append(similarity)
        top = max(len(sims) for sims in tally.values())
        tied = [identity for identity, sims in tally.items() if len(sims) == top]
        identity = ballot.identity if ballot.confirmed and ballot.identity in tied else tied[0]
        if top < self.min_votes or top / len(ballot.votes) < self.min_share:
            return None
        sims = tally[identity]
        return identity, top, sum(sims) / len(sims)
