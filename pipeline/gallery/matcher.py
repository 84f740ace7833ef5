"""The open-set matcher: embeddings in, one `Match` per face out (a known identity, or unknown).

An identity's score comes from its templates: `max` (its best template) or `mean_top2` (the mean of its
best two, = max when it has one template). The best identity is accepted only when its score reaches the
threshold, which the caller takes from the model card's curve for the gallery's size (`threshold.operating_point`).

Scores are computed from the backend's top-k templates. The best identity is always exact: if a candidate
could be beaten by an identity with no template in the top k (its score would be <= the k-th similarity),
the search is repeated with a larger k. Under `mean_top2` an identity seen once in the top k is re-scored
from all of its templates when the labels carry them (mirror snapshots); the runner-up is the best other
identity with a template in the top k.

Negative templates ("this face is not Alice", store.add_negatives) refuse a name: an identity that would be
named (score >= threshold) is refused when the face is more like one of its negatives than its score, and the
decision passes to the next best identity, which still needs the threshold. Identities ranked below the one
named are not checked, so an identity without negatives decides exactly as before. Negatives are read from
`negatives` (a GalleryMirror, for any backend) or else from the hits' labels when they are a Snapshot.

With a `cohort` (the card's, pipeline/gallery/cohort.py) every score of a face is lowered by that face's cohort
offset (how much it resembles strangers in general) before it meets the threshold, which must then come from
the card's cohort curve (`ModelCard.matching`). The offset is one number per face, so the ranking, the search
and the negatives' test (raw cosine against raw cosine) are unchanged; `Match.similarity` is the normalised score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.core.errors import GalleryError
from pipeline.gallery.cohort import Cohort
from pipeline.gallery.search import Hits, Labels, Search, SnapshotSource, check_queries, decode_rows
from pipeline.gallery.snapshot import Snapshot
from pipeline.gallery.threshold import GalleryThreshold

Score = Literal["max", "mean_top2"]
# Lowest cosine similarity: what an empty gallery scores, so every face there is unknown.
NO_SIMILARITY = -1.0


@dataclass(frozen=True)
class Match:
    identity: str | None  # name; None = unknown (best score below threshold, or empty gallery)
    identity_id: str | None
    similarity: float  # the best identity's score, the one compared with the threshold
    runner_up: str | None
    runner_up_similarity: float | None
    margin: float | None  # similarity - runner_up_similarity
    threshold: float | None = None  # the threshold this match was decided at (it follows the gallery's size)
    refused: str | None = None  # the better-scoring name a negative template refused (None: nothing refused)
    offset: float = 0.0  # the face's cohort offset, subtracted from its raw cosines (0: raw cosine scores)


class Matcher:
    """`Matcher(ExactSearch(mirror), threshold).match(embeddings) -> [Match, ...]`.

    The search backend (exact, ann or server: search.py) is the caller's choice. A search over a mirror reads
    it at every call, so identities enrolled a moment ago are matched.
    """

    def __init__(self, search: Search, threshold: float | GalleryThreshold, score: Score = "max", k: int = 32,
                 negatives: SnapshotSource | None = None, cohort: Cohort | None = None):
        if not isinstance(search, Search):
            raise GalleryError(f"the matcher needs a search backend (e.g. ExactSearch(mirror)), "
                               f"got {type(search).__name__}")
        if score not in ("max", "mean_top2"):
            raise GalleryError(f"score must be 'max' or 'mean_top2', got {score!r}")
        if k < 2:
            raise GalleryError(f"k must be at least 2 (best and runner-up), got {k}")
        self.search = search
        # A fixed cosine, or the gallery's operating point, read at every call (it moves as people are enrolled).
        self.threshold = threshold if isinstance(threshold, GalleryThreshold) else float(threshold)
        self.score = score
        self.k = k
        if negatives is not None and not isinstance(negatives, SnapshotSource):
            raise GalleryError(f"negatives must come from a GalleryMirror (an object with current()), "
                               f"got {type(negatives).__name__}")
        self.negatives = negatives
        if cohort is not None and not isinstance(cohort, Cohort):
            raise GalleryError(f"cohort must be a Cohort (pipeline.gallery.cohort), got {type(cohort).__name__}")
        self.cohort = cohort
        self._rows_of: tuple[Snapshot, np.ndarray, np.ndarray] | None = None  # (snapshot, order, starts)
        self._negatives_of: tuple[Snapshot, dict[str, np.ndarray]] | None = None  # (snapshot, id -> rows)

    def match(self, embeddings: np.ndarray) -> list[Match]:
        queries = check_queries(embeddings)
        if len(queries) == 0:
            return []
        threshold = self.current_threshold()
        offsets = self.cohort.offsets(queries) if self.cohort is not None else np.zeros(len(queries))
        hits = self.search.search(queries, self.k)
        refusing = self._negatives_by_id(hits.labels)
        results: list[Match | None] = [self._decide(hits, i, queries[i], threshold, refusing, float(offsets[i]))
                                       for i in range(len(queries))]
        k = self.k
        while any(r is None for r in results):
            k *= 4  # an identity outside the top k could still win: look further
            todo = [i for i, r in enumerate(results) if r is None]
            wide = self.search.search(queries[todo], k)
            refusing = self._negatives_by_id(wide.labels)
            for j, i in enumerate(todo):
                results[i] = self._decide(wide, j, queries[i], threshold, refusing, float(offsets[i]),
                                          final=not _full(wide, j))
        return results

    def current_threshold(self) -> float:
        return self.threshold.current().threshold if isinstance(self.threshold, GalleryThreshold) else self.threshold

    def _decide(self, hits: Hits, i: int, query: np.ndarray, threshold: float,
                refusing: dict[str, np.ndarray], offset: float = 0.0, final: bool = False) -> Match | None:
        """The Match for query `i`, or None when the top k cannot tell (only when `hits` row is full).
        Identities are ranked by raw score; `offset` (the face's cohort offset) is subtracted from the scores
        reported and compared with the threshold."""
        scores = self._identity_scores(hits, i, query)
        if not scores:
            return Match(None, None, NO_SIMILARITY, None, None, None, threshold)
        ranked = sorted(scores.items(), key=lambda item: -item[1])
        labels = hits.labels
        winner, refused = _unrefused(ranked, labels, query, threshold + offset, refusing)
        last = float(hits.similarities[i, -1])
        if not final and _full(hits, i) and (winner is None or winner + 1 >= len(ranked) or
                                             ranked[winner][1] < last):
            return None
        if winner is None:  # every identity with a template in the gallery refused this face
            return Match(None, None, NO_SIMILARITY, None, None, None, threshold, refused)
        best, best_score = ranked[winner]
        best_score -= offset
        known = best_score >= threshold
        runner = ranked[winner + 1] if winner + 1 < len(ranked) else None
        runner = None if runner is None else (runner[0], runner[1] - offset)
        return Match(
            identity=labels.names[best] if known else None,
            identity_id=labels.identity_ids[best] if known else None,
            similarity=best_score,
            runner_up=labels.names[runner[0]] if runner else None,
            runner_up_similarity=runner[1] if runner else None,
            margin=best_score - runner[1] if runner else None,
            threshold=threshold,
            refused=refused,
            offset=offset,
        )

    def _negatives_by_id(self, labels: Labels) -> dict[str, np.ndarray]:
        """Identity id -> its (n, dim) negatives, from the negatives source (else the labels), once per snapshot."""
        snapshot = self.negatives.current() if self.negatives is not None else labels
        if not isinstance(snapshot, Snapshot) or len(snapshot.negatives) == 0:
            return {}
        if self._negatives_of is None or self._negatives_of[0] is not snapshot:
            order = np.argsort(snapshot.negative_owner, kind="stable")
            owners, starts = np.unique(snapshot.negative_owner[order], return_index=True)
            groups = np.split(order, starts[1:])
            self._negatives_of = (snapshot, {snapshot.identity_ids[o]: snapshot.negatives[rows]
                                             for o, rows in zip(owners.tolist(), groups)})
        return self._negatives_of[1]

    def _identity_scores(self, hits: Hits, i: int, query: np.ndarray) -> dict[int, float]:
        """Identity index -> score, over identities with a template in query i's hits."""
        valid = hits.rows[i] >= 0
        rows, sims = hits.rows[i][valid], hits.similarities[i][valid]
        seen: dict[int, list[float]] = {}
        for owner, sim in zip(hits.labels.owner[rows].tolist(), sims.tolist()):
            seen.setdefault(owner, []).append(sim)
        if self.score == "max":
            return {owner: values[0] for owner, values in seen.items()}
        return {owner: self._mean_top2(hits.labels, owner, values, query) for owner, values in seen.items()}

    def _mean_top2(self, labels: Labels, owner: int, values: list[float], query: np.ndarray) -> float:
        if len(values) >= 2:
            return (values[0] + values[1]) / 2.0
        if not isinstance(labels, Snapshot):  # server labels: only the hits are known
            return values[0]
        rows = self._rows_of_identity(labels, owner)
        if len(rows) < 2:
            return values[0]
        sims = decode_rows(labels, rows) @ query
        top = np.sort(sims)[-2:]
        return float(top.mean())

    def _rows_of_identity(self, labels: Snapshot, owner: int) -> np.ndarray:
        """Template rows of one identity, from an owner-sorted index built once per snapshot."""
        if self._rows_of is None or self._rows_of[0] is not labels:
            order = np.argsort(labels.owner, kind="stable")
            starts = np.searchsorted(labels.owner[order], np.arange(len(labels.identity_ids) + 1))
            self._rows_of = (labels, order, starts)
        _, order, starts = self._rows_of
        return order[starts[owner]:starts[owner + 1]]


def _unrefused(ranked: list[tuple[int, float]], labels: Labels, query: np.ndarray, threshold: float,
               refusing: dict[str, np.ndarray]) -> tuple[int | None, str | None]:
    """(position in `ranked` of the best identity not refused or None, the first name refused before it).
    Only identities that would be named are checked: below the threshold a refusal changes nothing."""
    refused = None
    for position, (owner, score) in enumerate(ranked):
        negatives = refusing.get(labels.identity_ids[owner])
        if score < threshold or negatives is None or float((negatives @ query).max()) <= score:
            return position, refused
        refused = refused or labels.names[owner]
    return None, refused


def _full(hits: Hits, i: int) -> bool:
    """Did query i get all k hits (so the gallery may hold more beyond them)?"""
    return bool(hits.rows[i, -1] >= 0)
