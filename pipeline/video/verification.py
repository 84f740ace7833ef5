"""Re-verification of a decided track: does the face just embedded still belong to it?

`disagreement(track, embedding, match, strong)` -> the reason the face is someone else, or None. Called for
faces of tracks whose identity is already confirmed (known or unknown); the stage then splits the track
(`IouTracker.split`): the old appearance ends, a new track goes on from this face and is recognised afresh.
A track is never relabelled silently.

Three tests, in order:

- `OTHER_IDENTITY`: the face confidently matches (above the matcher's threshold) a known identity other than
  the track's known identity. Any face, weak ones too: a confident match to somebody else is rare by design
  (threshold at FAR 1e-3 for the demo gallery).
- `IDENTITY_DROP`: (strong faces only) the face's similarity to the track's identity is at most
  `identity_drop` below the similarity it was confirmed with. The matcher names the best identity and the
  runner-up; when neither is the track's, the best similarity bounds the track's from above.
- `APPEARANCE_DROP`: (strong faces only) cosine of the face to the track's own appearance (mean of its
  embeddings) below `min_appearance`.

Calibration (default embedder, every face >= 30 px of the three shared clips embedded at detect_every 3,
cosine to the running mean of its own track): 1st percentile 0.88 (Hamilton), 0.73 (crowd), 0.75 (meeting);
faces passing the strict gates: minimum 0.88, 0.76, 0.82. `min_appearance` 0.70 is below every strict face
of a real track; the card puts impostors at 0.82 (FAR 1e-2), so it catches only gross changes, which is
what a cut missed or a swap gives. `identity_drop` 0.12: Lin-Manuel Miranda's track confirms at 0.88, so
its strict faces split below 0.76, under every impostor threshold of the card (0.82 at FAR 1e-2).
Weak faces (profiles, small, blurred) spread far wider and only take part in the first test.

A track in doubt (`doubt=True`: its appearance gate saw the face under the box change, a cut that kept the
background) is held to more: its strong faces must reach `doubt_min_appearance` (0.82, the card's impostor
threshold at FAR 1e-2) to its appearance, not only 0.70, because two strangers' faces commonly score between
the two (with nobody enrolled only this test can tell them apart); `OTHER_IDENTITY` splits a confirmed-unknown
track too (a stranger's box now showing an enrolled face), and a track not yet decided is split on `APPEARANCE_DROP` (its votes so far are
about someone else). The stage takes a doubted track's name off the box until a face clears it: a strong face
that passes every test, or a weak one whose match names the track's own identity (nobody, for an unknown
track). A weak face naming nobody cannot clear a known name, and a face too poor to embed decides nothing:
the name stays hidden (never shown on evidence that cannot tell two people apart) until such a face comes,
or the track is split.
"""

from __future__ import annotations

import numpy as np

from pipeline.gallery.matcher import Match
from pipeline.video.tracker import Track

OTHER_IDENTITY = "other identity"
IDENTITY_DROP = "identity similarity dropped"
APPEARANCE_DROP = "appearance changed"
DEFAULT_MIN_APPEARANCE = 0.70
DEFAULT_DOUBT_MIN_APPEARANCE = 0.82
DEFAULT_IDENTITY_DROP = 0.12


def similarity_bound(match: Match, identity: str) -> float:
    """The face's similarity to `identity`, or an upper bound of it when the match names neither as best nor
    runner-up (the best identity's similarity bounds every other)."""
    if match.identity == identity:
        return float(match.similarity)
    if match.runner_up == identity and match.runner_up_similarity is not None:
        return float(match.runner_up_similarity)
    return float(match.similarity)


class Verifier:
    """Plain values, checked where config is read (`pipeline.app.config.VerificationConfig`)."""

    def __init__(self, min_appearance: float = DEFAULT_MIN_APPEARANCE, identity_drop: float = DEFAULT_IDENTITY_DROP,
                 doubt_min_appearance: float = DEFAULT_DOUBT_MIN_APPEARANCE):
        self.min_appearance = float(min_appearance)
        self.doubt_min_appearance = float(doubt_min_appearance)
        self.identity_drop = float(identity_drop)

    def disagreement(self, track: Track, embedding: np.ndarray, match: Match, strong: bool,
                     doubt: bool = False) -> str | None:
        if not track.identity_confirmed:
            return APPEARANCE_DROP if doubt and strong and self._appearance_dropped(track, embedding, doubt) else None
        known = track.identity
        if match.identity is not None and match.identity != known and (known is not None or doubt):
            return OTHER_IDENTITY
        if not strong:
            return None
        if (known is not None and track.similarity is not None
                and similarity_bound(match, known) < track.similarity - self.identity_drop):
            return IDENTITY_DROP
        if self._appearance_dropped(track, embedding, doubt):
            return APPEARANCE_DROP
        return None

    def clears_doubt(self, track: Track, match: Match, strong: bool) -> bool:
        """Whether a face that showed no disagreement takes a doubted track out of doubt."""
        return strong or match.identity == track.identity

    def _appearance_dropped(self, track: Track, embedding: np.ndarray, doubt: bool = False) -> bool:
        floor = self.doubt_min_appearance if doubt else self.min_appearance
        return (track.appearance is not None and float(
            np.dot(np.asarray(embedding, np.float64).reshape(-1), track.appearance)) < floor)
