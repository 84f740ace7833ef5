"""A worker's live view of the unknown clusters: which cluster a new unknown track belongs to, and the periodic
passes (re-clustering, purge) that keep the clusters right and within their retention.

The directory holds every cluster as one in-memory matrix of member tracks (each the unit mean of a track's
sightings, the first `max_members` tracks of a cluster: `UnknownStore.members`), so assigning a track costs one
matrix product. Its own writes update the matrix at once; writes by other workers (another
camera's process, an operator's merge, forget or name) show up within `refresh_s`: the directory polls the
unknowns' head and re-reads the members when someone else moved it.

Assignment (clustering.best_cluster): the track's query (the unit mean of its faces) against every member of
every cluster, a cluster's score being its best member. The threshold follows the number of members like the
gallery's open-set threshold follows its templates: `threshold(members per cluster)` holds the chance that a
stranger's track joins someone else's cluster at the configured rate (clustering.assignment_threshold).
Re-clustering (clustering.merge_groups) merges clusters whose average-linkage similarity reaches
`merge_threshold` and that hold `min_merge_size` tracks together (two lone tracks never merge: across the
C^2/2 pairs of a big directory that is where false merges come from); the oldest id of a group survives and
the others become its aliases.

The directory sees the clusters of its store's model only (UnknownStore.members): a harmonic model's run beside
an older model's clusters starts its own, and neither assigns to nor merges with the other's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from pipeline.unknowns.clustering import (
    MAX_MEMBERS,
    MIN_MERGE_SIZE,
    best_cluster,
    merge_groups,
    track_query,
)
from pipeline.unknowns.provenance import model_label
from pipeline.unknowns.sightings import Members, Purged, Seen, UnknownStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assigned:
    cluster_id: str
    similarity: float | None  # to the cluster it joined; None for a new cluster
    threshold: float
    new: bool


@dataclass(frozen=True)
class Merged:
    survivor: str
    merged: tuple[str, ...]
    similarity: float  # the group's lowest average-linkage similarity at merge time


class UnknownDirectory:
    """`assign(seen)` -> the cluster the faces joined (or started); `extend(cluster_id, seen)` adds more faces."""

    def __init__(self, store: UnknownStore, threshold: Callable[[Sequence[int]], float], merge_threshold: float,
                 *, max_members: int = MAX_MEMBERS, min_merge_size: int = MIN_MERGE_SIZE, refresh_s: float = 10.0,
                 recluster_every_s: float = 300.0,
                 purge_every_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.threshold = threshold
        self.merge_threshold = float(merge_threshold)
        self.refresh_s, self.recluster_every_s, self.purge_every_s = refresh_s, recluster_every_s, purge_every_s
        self.clock = clock
        self.max_members, self.min_merge_size = int(max_members), int(min_merge_size)
        self.members: Members = store.members(self.max_members)
        self._note_other_models()
        started = clock()
        self._checked = self._reclustered = started
        self._purged = -float("inf")  # purge at the first maintenance call

    # -- assignment -------------------------------------------------------------------------------------
    def best(self, embeddings: np.ndarray, weights: Sequence[float] | None = None) -> tuple[str | None, float, float]:
        """(cluster id or None, its similarity, the threshold) for a track's faces."""
        m = self.members
        threshold = float(self.threshold(self._counts()))
        if not len(m.cluster_ids):
            return None, -1.0, threshold
        query = track_query(embeddings, None if weights is None else _positive(weights))
        index, similarity = best_cluster(query, m.matrix, m.owner, len(m.cluster_ids),
                                         threshold)
        return (None if index is None else m.cluster_ids[index]), float(similarity), threshold

    def assign(self, seen: Sequence[Seen]) -> Assigned:
        """Record `seen` (one track's faces) in the cluster they match, or in a new one."""
        embeddings, weights = np.stack([s.embedding for s in seen]), [s.quality for s in seen]
        cluster_id, similarity, threshold = self.best(embeddings, weights)
        query = track_query(embeddings, _positive(weights))
        if cluster_id is not None:
            target = self.store.add(cluster_id, seen)
            self._learn(target, query)
            return Assigned(target, similarity, threshold, False)
        created = self.store.new_cluster(seen)
        self._learn(created, query)
        return Assigned(created, None, threshold, True)

    def extend(self, cluster_id: str, seen: Sequence[Seen]) -> str:
        """More faces of a track already assigned; returns the cluster they went to (it may have been merged)."""
        target = self.store.add(cluster_id, seen)
        self._learn(target, None)
        return target

    # -- periodic passes ----------------------------------------------------------------------------------
    def maintain(self) -> tuple[list[Merged], Purged | None]:
        """Refresh, re-cluster and purge when each is due (call it often: it is cheap when nothing is)."""
        now = self.clock()
        purged = merges = None
        if now - self._purged >= self.purge_every_s:
            self._purged = now
            purged = self.store.purge()
            if purged.sightings:
                log.info("unknowns: purged %d sightings and %d clusters past retention or the size cap",
                         purged.sightings, purged.clusters)
                self.reload()
        if now - self._reclustered >= self.recluster_every_s:
            self._reclustered = now
            merges = self.recluster()
        if now - self._checked >= self.refresh_s:
            self.refresh()
        return merges or [], purged

    def recluster(self) -> list[Merged]:
        """Merge the clusters that belong together (average linkage); the oldest id of each group survives."""
        self.refresh()
        m = self.members
        live = np.flatnonzero(m.counts > 0)  # a cluster whose sightings all expired waits for the purge
        if len(live) < 2:
            return []
        sums, counts = m.sums[live], m.counts[live]
        merges = []
        for found in merge_groups(sums, counts, self.merge_threshold, self.min_merge_size):
            group = [int(live[i]) for i in found]
            ordered = sorted(group, key=lambda i: (m.created[i], m.cluster_ids[i]))
            survivor, others = m.cluster_ids[ordered[0]], [m.cluster_ids[i] for i in ordered[1:]]
            merged = self.store.merge(survivor, others)
            similarity = _lowest_linkage(m.sums, m.counts, group)
            merges.append(Merged(survivor, tuple(merged), similarity))
            log.info("unknowns: merged %s into %s (average similarity >= %.3f)", ", ".join(merged), survivor,
                     similarity)
        if merges:
            self.reload()
        return merges

    def refresh(self) -> None:
        """Re-read the members when another writer moved the head since we last looked."""
        self._checked = self.clock()
        if self.store.head() != self.members.seq:
            self.reload()

    def reload(self) -> None:
        self.members = self.store.members(self.max_members)

    # -- internals --------------------------------------------------------------------------------------
    def _note_other_models(self) -> None:
        """Say once, at the start, that another model's clusters are kept apart from this run's."""
        mine = self.store.writer_model()
        others = {m: n for m, n in self.store.models().items() if m != mine}
        if others:
            log.warning("unknowns of gallery %r: %s kept apart from this run's model %s: faces of two models are "
                        "never clustered together (this run starts its own clusters)", self.store.gallery,
                        ", ".join(f"{n} cluster(s) of model {model_label(m)}" for m, n in others.items()),
                        model_label(mine))

    def _counts(self) -> list[int]:
        """Members per cluster (what the assignment threshold's comparisons count)."""
        m = self.members
        counts = np.bincount(m.owner, minlength=len(m.cluster_ids)) if len(m.cluster_ids) else np.zeros(0, int)
        return [int(c) for c in counts if c > 0]

    def _learn(self, cluster_id: str, query: np.ndarray | None) -> None:
        """Our own write, applied in memory (`query`: a new member track; None: more faces of a known one, left
        to the next re-read); anything else written meanwhile makes it a full re-read."""
        m = self.members
        head = self.store.head()
        if head != m.seq + 1:
            self.reload()
            return
        if query is None:
            self.members = replace(m, seq=head)
            return
        ids, created, sums, counts = list(m.cluster_ids), list(m.created), m.sums, m.counts
        if cluster_id not in ids:
            ids.append(cluster_id)
            created.append(time.time())
            sums = np.concatenate([sums.reshape(-1, query.size), np.zeros((1, query.size))])
            counts = np.concatenate([counts, [0]])
        index = ids.index(cluster_id)
        sums, counts = sums.copy(), counts.copy()
        sums[index] += query
        counts[index] += 1
        matrix, owner = m.matrix.reshape(-1, query.size), m.owner
        if int(np.sum(owner == index)) < self.max_members:
            matrix = np.concatenate([matrix, query[None, :].astype(np.float32)])
            owner = np.concatenate([owner, [index]])
        # The store's caps may have evicted old sightings: their rows linger here until the next re-read,
        # which only makes a cluster a little easier to match, never another person's.
        self.members = Members(ids, created, matrix, owner.astype(np.int64), sums, counts, head)


def _positive(weights: Sequence[float]) -> np.ndarray:
    """Quality weights for the track query; a face of quality 0 still counts a little."""
    return np.maximum(np.asarray(weights, np.float64), 1e-3)


def _lowest_linkage(sums: np.ndarray, counts: np.ndarray, group: Sequence[int]) -> float:
    """The lowest average-linkage similarity between two members of a merged group (for the event)."""
    lowest = 1.0
    for a in group:
        for b in group:
            if a < b:
                lowest = min(lowest, float(sums[a] @ sums[b]) / float(counts[a] * counts[b]))
    return lowest
