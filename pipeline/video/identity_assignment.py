"""One face <-> one identity per frame and camera: when several faces of a frame claim the same enrolled person,
the claims are settled by one assignment over similarities (`scipy.optimize.linear_sum_assignment`).

A claim is what a face could be named: its match's identity and, when that also reaches the matcher's
threshold, its runner-up; a track already showing a confirmed name claims that name with the similarity it was
confirmed with. Every face may also stay unknown. The assignment names as many faces as it can, then maximises
the summed similarity, so the weaker claim on a contested name falls back to its runner-up (if above the
threshold) or to unknown. Nothing is solved when no name is contested (the usual frame).

`IdentityArbiter.settle(tracked, recognised)` applies it to one batch of the pipeline: the recognised faces get
their settled `Match` (what they vote with); tracks whose shown name lost (`losers`) are split by the caller,
never relabelled.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.gallery.matcher import Match
from pipeline.video.match_stage import Recognised
from pipeline.video.track_stage import Tracked
from pipeline.video.tracker import Track

# Added to every named option so that naming one more face always beats any gain in similarity (cosines are
# within [-1, 1]); staying unknown scores 0.
NAMED_BONUS = 4.0
FORBIDDEN = -1e9


def assign_identities(claims: Sequence[dict[str, float]]) -> list[str | None]:
    """One identity (or None) per claim: each identity to at most one claim, from that claim's options."""
    names = sorted({name for claim in claims for name in claim})
    if not names:
        return [None] * len(claims)
    column = {name: k for k, name in enumerate(names)}
    n = len(claims)
    score = np.full((n, len(names) + n), FORBIDDEN)
    score[np.arange(n), len(names) + np.arange(n)] = 0.0  # each claim's own "unknown"
    for row, claim in enumerate(claims):
        for name, similarity in claim.items():
            score[row, column[name]] = NAMED_BONUS + float(similarity)
    rows, cols = linear_sum_assignment(score, maximize=True)
    out: list[str | None] = [None] * n
    for row, col in zip(rows.tolist(), cols.tolist()):
        if col < len(names):
            out[row] = names[col]
    return out


def match_options(match: Match) -> dict[str, float]:
    """The names a face can take: its best (when known), and its runner-up when that too reaches the threshold
    the match was decided at."""
    options = {}
    threshold = match.threshold
    if match.identity is not None:
        options[match.identity] = float(match.similarity)
    if (threshold is not None and match.runner_up is not None and match.runner_up_similarity is not None
            and match.runner_up_similarity >= threshold):
        options.setdefault(match.runner_up, float(match.runner_up_similarity))
    return options


def settled_match(match: Match, identity: str | None) -> Match:
    """`match` as the assignment left it: unchanged, its runner-up promoted, or unknown."""
    if identity == match.identity:
        return match
    if identity is None:
        return replace(match, identity=None, identity_id=None)
    return Match(identity, None, float(match.runner_up_similarity), match.identity, float(match.similarity),
                 float(match.runner_up_similarity) - float(match.similarity), match.threshold, offset=match.offset)


class IdentityArbiter:
    """`settle(tracked, recognised)` -> (recognised with settled matches, [(loser track, Tracked)])."""

    def __init__(self):
        self.contested = 0  # frames where a name was contested

    def settle(self, tracked: Sequence[Tracked],
               recognised: Sequence[Recognised]) -> tuple[list[Recognised], list[tuple[Track, Tracked]]]:
        by_frame: dict[tuple[str, int], list[int]] = defaultdict(list)
        for k, item in enumerate(recognised):
            by_frame[(item.candidate.frame.camera, item.candidate.frame.index)].append(k)
        out, losers = list(recognised), []
        for item in tracked:
            if item.detected:
                losers += self._settle_frame(item, by_frame.get((item.frame.camera, item.frame.index), []), out)
        return out, losers

    def _settle_frame(self, item: Tracked, fresh: list[int], out: list[Recognised]) -> list[tuple[Track, Tracked]]:
        embedded = {out[k].candidate.track.id for k in fresh}
        shown = [a.track for a in item.assignments
                 if a.track.id not in embedded and a.track.identity_confirmed and a.track.identity is not None]
        claims = [match_options(out[k].match) for k in fresh]
        claims += [{t.identity: float(t.similarity if t.similarity is not None else 0.0)} for t in shown]
        primary = Counter(max(c, key=c.get) for c in claims if c)
        if not primary or primary.most_common(1)[0][1] < 2:
            return []
        self.contested += 1
        names = assign_identities(claims)
        for k, name in zip(fresh, names):
            out[k] = replace(out[k], match=settled_match(out[k].match, name))
        return [(track, item) for track, name in zip(shown, names[len(fresh):]) if name is None]
