"""Clusters of unknown people: which earlier stranger a new face track is, and which clusters are one person.

Pure functions over unit embeddings (cosine similarity, higher = more alike) and `OnlineClusters`, the
in-memory clusterer for photos mode and the benchmark, which applies the rule the Redis-backed directory
applies live:

- assignment: a track's query (`track_query`, the quality-weighted unit mean of its faces) joins the cluster
  whose best member scores highest (`cluster_scores`), when that score reaches the assignment threshold;
  otherwise it starts a new cluster. A new stranger is compared with every member of every cluster, so like
  the gallery's open-set threshold (pipeline/gallery/threshold.py) the threshold follows the number of
  comparisons M: it holds the chance that a new stranger joins someone else's cluster, 1 - (1 - FAR)^M, at
  `merge_rate` (`assignment_threshold`);
- re-clustering: clusters whose average linkage (the mean cosine over all cross pairs of their tracks)
  reaches the card's threshold at a fixed per-comparison FAR, `merge_far`, are merged (`merge_groups`) when
  they hold 3+ tracks together; the oldest cluster of a group keeps its id.

Defaults measured by `python -m bench.clusters` (3,730 photos the model never saw: 333 held-out LFW people with
2+ photos and 1,620 one-photo strangers, each photo a one-face track, three feeding orders): pairwise precision
>= 0.99 in every order and BCubed precision >= 0.99, then the highest pairwise recall, chose merge_rate 2e-3 and
merge_far 1e-4: pairwise precision 0.998 and recall 0.934, BCubed 0.992 / 0.916 (F 0.953), 0.7% of clusters
mixing people (0.39 pairwise recall before re-clustering). dlib's chinese whispers on its own descriptors:
BCubed F 0.937 at precision 0.903, 4.3% mixed. Without the 3-track rule the same guard allows merge_far 2e-5 at
most (pairwise recall 0.81); looser settings keep pairwise precision >= 0.99 while 19% of the clusters mix two
people, mostly two lone strangers, because one person with 530 photos holds 92% of the same-person pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.gallery.threshold import operating_point, threshold_at_far

# Chance that a new stranger's track is put in someone else's cluster (FPIR over all members), and the
# per-comparison FAR at which two clusters' average linkage merges them: bench.clusters' choice (the module notes).
MERGE_RATE = 2e-3
MERGE_FAR = 1e-4
MAX_MEMBERS = 16  # members kept per cluster: bounds M (and the cost of an assignment) at 16 per stranger
# A re-clustering merge needs 3+ tracks between the two clusters (Immich's minFaces): two lone tracks meeting at
# a per-comparison FAR among the C^2/2 cluster pairs were most of the false merges the benchmark found.
MIN_MERGE_SIZE = 3

Threshold = float | Callable[[Sequence[int]], float]


def cluster_scores(query: np.ndarray, members: np.ndarray, owner: np.ndarray, clusters: int) -> np.ndarray:
    """(clusters,) each cluster's best member similarity to `query`; -1.0 for a cluster without members."""
    members, owner = np.asarray(members), np.asarray(owner)
    if members.ndim != 2 or owner.shape != (members.shape[0],):
        raise ValueError(f"members must be (M, d) and owner (M,), got {members.shape} and {owner.shape}")
    scores = np.full(clusters, -1.0)
    if members.shape[0]:
        np.maximum.at(scores, owner, (members @ np.asarray(query, members.dtype)).astype(np.float64))
    return scores


def best_cluster(query: np.ndarray, members: np.ndarray, owner: np.ndarray, clusters: int,
                 threshold: float) -> tuple[int | None, float]:
    """(the best-scoring cluster, its score), the cluster None when no cluster reaches `threshold`."""
    if clusters == 0:
        return None, -1.0
    scores = cluster_scores(query, members, owner, clusters)
    best = int(np.argmax(scores))
    return (best if scores[best] >= threshold else None), float(scores[best])


def merge_groups(sums: np.ndarray, counts: np.ndarray, threshold: float, min_size: int = 1) -> list[list[int]]:
    """Average-linkage (UPGMA) merges of clusters given as sums of their unit members and member counts.

    The mean cosine over all cross pairs of A and B is sA.sB / (nA nB), so the linkage is exact without the
    members. Repeatedly merges the pair with the highest linkage while it is >= `threshold`, among pairs holding
    at least `min_size` members together; returns the groups of original indices with 2+ clusters, each sorted
    ascending. Hand-written because library agglomerative clustering (scipy, scikit-learn) starts from single
    points; here each cluster is already a weighted group.
    """
    sums = np.array(sums, dtype=np.float64)
    counts = np.array(counts, dtype=np.float64)
    n = counts.size
    if sums.ndim != 2 or sums.shape[0] != n or np.any(counts < 1):
        raise ValueError(f"sums must be (C, d) with counts (C,) >= 1, got {sums.shape} and {counts.shape}")
    if n < 2:
        return []
    link = (sums @ sums.T) / np.outer(counts, counts)
    link[np.add.outer(counts, counts) < min_size] = -np.inf
    np.fill_diagonal(link, -np.inf)
    alive, groups = np.ones(n, bool), {i: [i] for i in range(n)}
    rows = np.arange(n)
    best = np.argmax(link, axis=1)  # each row's best partner, kept up to date so a step costs O(C d)
    while True:
        i = int(np.argmax(link[rows, best]))
        j = int(best[i])
        if not link[i, j] >= threshold:
            break
        i, j = min(i, j), max(i, j)  # the older (lower) index absorbs the younger
        sums[i] += sums[j]
        counts[i] += counts[j]
        groups[i] += groups.pop(j)
        alive[j] = False
        row = (sums @ sums[i]) / (counts * counts[i])
        row[~alive | (counts + counts[i] < min_size)] = -np.inf
        row[i] = -np.inf
        link[j, :] = link[:, j] = -np.inf
        link[i, :] = link[:, i] = row
        stale = (best == i) | (best == j)
        stale[i] = True
        best[stale] = np.argmax(link[stale], axis=1)
        best[row > link[rows, best]] = i
    return [sorted(g) for g in groups.values() if len(g) > 1]


def track_query(embeddings: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(d,) the unit (weighted) mean of a track's unit face embeddings: the query it is assigned by."""
    embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    w = np.ones(embeddings.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (embeddings.shape[0],) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"weights must be ({embeddings.shape[0]},) non-negative, not all zero, got {w.shape}")
    mean = w @ embeddings
    norm = np.linalg.norm(mean)
    if not norm > 0:
        raise ValueError("the track's embeddings cancel out: no direction to assign by")
    return (mean / norm).astype(np.float32)


def assignment_threshold(card: Any, members_per_cluster: Sequence[int], merge_rate: float = MERGE_RATE) -> float:
    """The threshold at which a new stranger joins one of these clusters with chance `merge_rate` (the
    gallery's FPIR rule, members in place of templates)."""
    return operating_point(card, "auto", merge_rate, members_per_cluster, quiet=True).threshold


def merge_threshold(card: Any, merge_far: float = MERGE_FAR) -> float:
    """The average-linkage threshold for re-clustering: the card's threshold at per-comparison FAR `merge_far`."""
    return threshold_at_far(card, merge_far)


class OnlineClusters:
    """Unknown people clustered as their tracks (or photos) arrive; a cluster's index is its id, in order of
    creation, so the lowest index of a merged group is its oldest cluster and keeps the id.

    `threshold`: the assignment threshold, a cosine or a rule (members per live cluster) -> cosine such as
    `lambda members: assignment_threshold(card, members)`, asked before every assignment. `merge_threshold`:
    the average-linkage threshold of `recluster` (`merge_threshold(card)`), for pairs of clusters holding
    `min_merge_size` tracks together.

    Members: a cluster keeps its first `max_members` track queries, in arrival order (after a merge, the first
    of the group's). Later tracks still add to its sum and count, which is what re-clustering compares. Keeping
    the first ones means what the earliest tracks established is never displaced, and M, the cost of an
    assignment and the strictness it needs stay bounded.
    """

    def __init__(self, threshold: Threshold, merge_threshold: float, max_members: int = MAX_MEMBERS,
                 min_merge_size: int = MIN_MERGE_SIZE):
        if max_members < 1:
            raise ValueError(f"max_members must be >= 1, got {max_members}")
        self.threshold, self.merge_threshold, self.max_members = threshold, merge_threshold, max_members
        self.min_merge_size = min_merge_size
        self._members = np.zeros((0, 0), np.float32)  # rows [0, _size) are live, owner by cluster index
        self._owner = np.zeros(0, np.int64)
        self._size = 0
        self._sums: list[np.ndarray] = []
        self._counts: list[int] = []
        self._held: list[int] = []  # members kept per cluster
        self._root: list[int] = []  # each cluster's surviving cluster (itself unless merged away)
        self._items: list[int] = []  # the cluster each assigned track went to
        self.last_threshold: float | None = None

    @property
    def clusters(self) -> list[int]:
        """The live clusters' indices, oldest first."""
        return [c for c, root in enumerate(self._root) if root == c]

    def members_per_cluster(self) -> list[int]:
        return [self._held[c] for c in self.clusters]

    def assign(self, embeddings: np.ndarray, weights: np.ndarray | None = None) -> int:
        """Put one track (its face embeddings, optional quality weights) in a cluster; returns its index."""
        query = track_query(embeddings, weights)
        cluster = None
        if self.clusters:
            threshold = self.threshold(self.members_per_cluster()) if callable(self.threshold) else self.threshold
            self.last_threshold = float(threshold)
            cluster, _ = best_cluster(query, self._members[:self._size], self._owner[:self._size],
                                      len(self._root), threshold)
        if cluster is None:
            cluster = self._new_cluster(query.size)
        self._sums[cluster] += query
        self._counts[cluster] += 1
        if self._held[cluster] < self.max_members:
            self._append_member(query, cluster)
        self._items.append(cluster)
        return cluster

    def recluster(self) -> list[list[int]]:
        """Merge clusters by average linkage (`merge_groups`); returns the merged groups of cluster indices,
        each ascending: the first survives and takes the others' tracks and members."""
        live = self.clusters
        if len(live) < 2:
            return []
        found = merge_groups(np.stack([self._sums[c] for c in live]), [self._counts[c] for c in live],
                             self.merge_threshold, self.min_merge_size)
        groups = [[live[i] for i in group] for group in found]
        for survivor, *merged in groups:
            for c in merged:
                self._sums[survivor] += self._sums[c]
                self._counts[survivor] += self._counts[c]
                self._root = [survivor if root == c else root for root in self._root]
        if groups:
            self._regroup_members()
        return groups

    def labels(self) -> np.ndarray:
        """(items,) the current cluster of every track assigned so far, in assignment order."""
        return np.asarray(self._root, np.int64)[np.asarray(self._items, np.int64)] if self._items \
            else np.zeros(0, np.int64)

    def _new_cluster(self, dim: int) -> int:
        self._sums.append(np.zeros(dim))
        self._counts.append(0)
        self._held.append(0)
        self._root.append(len(self._root))
        return len(self._root) - 1

    def _append_member(self, query: np.ndarray, cluster: int) -> None:
        if self._size == self._members.shape[0]:  # grow by doubling: amortised O(1) appends
            grown = np.zeros((max(64, 2 * self._size), query.size), np.float32)
            if self._size:
                grown[:self._size] = self._members[:self._size]
            self._members = grown
            self._owner = np.resize(self._owner, grown.shape[0])
        self._members[self._size], self._owner[self._size] = query, cluster
        self._size += 1
        self._held[cluster] += 1

    def _regroup_members(self) -> None:
        """Members re-owned by their survivors, the first `max_members` of each in arrival order."""
        owner = np.asarray(self._root)[self._owner[:self._size]]
        rank = np.zeros(self._size, np.int64)
        for cluster in np.unique(owner):
            rows = np.flatnonzero(owner == cluster)
            rank[rows] = np.arange(rows.size)
        keep = rank < self.max_members
        self._members = self._members[:self._size][keep].copy()
        self._owner, self._size = owner[keep], int(keep.sum())
        self._held = np.bincount(self._owner, minlength=len(self._root)).tolist()
