"""pipeline.unknowns.clustering against brute-force oracles: average linkage over member vectors, per-cluster
best scores by a loop, and OnlineClusters' id and member rules."""

import numpy as np
import pytest

from pipeline.core.model_card import load_card
from pipeline.gallery.threshold import operating_point, threshold_at_far
from pipeline.unknowns.clustering import (
    OnlineClusters,
    assignment_threshold,
    best_cluster,
    cluster_scores,
    merge_groups,
    merge_threshold,
    track_query,
)
from tests.conftest import REPO


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clustered(rng, people=6, per=(1, 5), dim=16, spread=0.6):
    """Unit vectors scattered round `people` random centres, several clusters per person."""
    centres = unit(rng.normal(size=(people, dim)))
    clusters = []
    for p in range(people):
        for _ in range(rng.integers(1, 4)):
            n = int(rng.integers(*per))
            clusters.append(unit(centres[p] + spread * rng.normal(size=(n, dim)) / np.sqrt(dim)))
    return clusters


def brute_average_linkage(clusters, threshold, min_size=1):
    """UPGMA straight from the definition: the mean cosine over all member pairs, recomputed every step, over
    pairs with `min_size` members together."""
    groups = [[i] for i in range(len(clusters))]
    members = [c.copy() for c in clusters]
    while len(groups) > 1:
        best, pair = -np.inf, None
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                if len(members[a]) + len(members[b]) < min_size:
                    continue
                score = np.mean([x @ y for x in members[a] for y in members[b]])
                if score > best:
                    best, pair = score, (a, b)
        if best < threshold:
            break
        a, b = pair
        groups[a] += groups.pop(b)
        members[a] = np.concatenate([members[a], members.pop(b)])
    return sorted(sorted(g) for g in groups if len(g) > 1)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.3, 0.6])
@pytest.mark.parametrize("min_size", [1, 3])
def test_merge_groups_is_average_linkage(seed, threshold, min_size):
    clusters = clustered(np.random.default_rng(seed))
    sums = np.stack([c.sum(axis=0) for c in clusters])
    counts = np.array([len(c) for c in clusters])
    got = merge_groups(sums, counts, threshold, min_size)
    assert sorted(got) == brute_average_linkage(clusters, threshold, min_size)
    assert all(g == sorted(g) for g in got)


def test_merge_groups_edge_cases():
    assert merge_groups(np.zeros((0, 4)), np.zeros(0, int), 0.5) == []
    assert merge_groups(np.ones((1, 4)), [1], 0.5) == []
    two = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert merge_groups(two, [1, 1, 1], 0.99) == [[0, 1]]
    assert merge_groups(two, [1, 1, 1], 1.01) == []
    assert merge_groups(two, [1, 1, 1], 0.99, min_size=3) == []  # two lone members are not enough
    assert merge_groups(two * [[2], [1], [1]], [2, 1, 1], 0.99, min_size=3) == [[0, 1]]
    with pytest.raises(ValueError, match="counts"):
        merge_groups(two, [1, 0, 1], 0.5)


@pytest.mark.parametrize("seed", range(3))
def test_cluster_scores_and_best_cluster_match_a_loop(seed):
    rng = np.random.default_rng(seed)
    members = unit(rng.normal(size=(40, 8))).astype(np.float32)
    owner = rng.integers(0, 9, size=40)
    owner[owner == 4] = 5  # cluster 4 has no members
    query = unit(rng.normal(size=8)).astype(np.float32)
    expected = [max((float(m @ query) for m, o in zip(members, owner) if o == c), default=-1.0) for c in range(10)]
    scores = cluster_scores(query, members, owner, 10)
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert scores[4] == -1.0 and scores[9] == -1.0
    top = int(np.argmax(expected))
    assert best_cluster(query, members, owner, 10, expected[top] - 1e-6) == (top, pytest.approx(expected[top]))
    assert best_cluster(query, members, owner, 10, expected[top] + 1e-6)[0] is None
    assert best_cluster(query, members[:0], owner[:0], 0, 0.5) == (None, -1.0)


def test_track_query_is_the_unit_weighted_mean():
    faces = unit(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(track_query(faces), unit(np.array([1.0, 1.0, 0.0])), rtol=1e-6)
    np.testing.assert_allclose(track_query(faces, [3.0, 1.0]), unit(np.array([3.0, 1.0, 0.0])), rtol=1e-6)
    np.testing.assert_allclose(track_query(faces[0]), faces[0], rtol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        track_query(faces, [1.0])
    with pytest.raises(ValueError, match="cancel"):
        track_query(np.array([[1.0, 0.0], [-1.0, 0.0]]))


def axis(i, tilt=0.0, towards=None, dim=8):
    """One track: the unit vector along axis i, tilted by `tilt` towards axis `towards`."""
    v = np.zeros(dim)
    v[i] = 1.0
    if towards is not None:
        v[towards] = tilt
    return unit(v)[None, :]


def test_online_clusters_assign_by_threshold_and_cap_members():
    clusters = OnlineClusters(0.9, merge_threshold=0.99, max_members=2)
    assert clusters.assign(axis(0)) == 0
    assert clusters.assign(axis(1)) == 1  # orthogonal: a new cluster
    for tilt in (0.1, 0.2, 0.3):
        assert clusters.assign(axis(0, tilt=tilt, towards=2)) == 0
    assert clusters.members_per_cluster() == [2, 1]  # the first two tracks stay; the rest only count
    assert clusters.labels().tolist() == [0, 1, 0, 0, 0]
    assert clusters.last_threshold == 0.9


def test_online_clusters_threshold_rule_sees_members_per_cluster():
    seen = []
    rule = lambda members: seen.append(list(members)) or 0.9
    clusters = OnlineClusters(rule, merge_threshold=0.99, max_members=3)
    for track in (axis(0), axis(1), axis(0, tilt=0.1, towards=3), axis(2), axis(0, tilt=0.2, towards=3)):
        clusters.assign(track)
    assert seen == [[1], [1, 1], [2, 1], [2, 1, 1]]  # no rule needed for the very first track


def test_online_clusters_merge_keeps_the_oldest_id():
    clusters = OnlineClusters(0.999, merge_threshold=0.9, max_members=2, min_merge_size=1)
    tracks = [axis(1), axis(0), axis(2), axis(0, 0.3, 3), axis(0, 0.3, 4), axis(0, 0.2, 5)]
    assigned = [clusters.assign(t) for t in tracks]
    assert assigned == [0, 1, 2, 3, 4, 5]  # the strict threshold opens a cluster per track
    assert clusters.recluster() == [[1, 3, 4, 5]]
    assert clusters.clusters == [0, 1, 2]
    assert clusters.labels().tolist() == [0, 1, 2, 1, 1, 1]
    assert clusters.members_per_cluster() == [1, 2, 1]  # the group's first two members, by arrival
    assert clusters.assign(axis(0)) == 1  # later tracks find the survivor through its members
    assert clusters.recluster() == []


def test_online_clusters_leave_lone_tracks_for_more_evidence():
    clusters = OnlineClusters(0.999, merge_threshold=0.9)
    assert [clusters.assign(t) for t in (axis(0), axis(0, 0.3, 3))] == [0, 1]
    assert clusters.recluster() == []  # two single tracks: below MIN_MERGE_SIZE
    assert clusters.assign(axis(0)) == 0  # a second track of cluster 0
    assert clusters.recluster() == [[0, 1]]


def test_thresholds_follow_the_card():
    card = load_card(REPO / "models" / "facestream-default.json")
    assert merge_threshold(card, 1e-4) == pytest.approx(threshold_at_far(card, 1e-4))
    small, large = assignment_threshold(card, [1] * 10, 0.01), assignment_threshold(card, [4] * 500, 0.01)
    assert small == operating_point(card, "auto", 0.01, [1] * 10).threshold
    assert large > small  # more members to be mistaken for: a stricter threshold holds the same rate
