"""pick_diverse on synthetic unit vectors: best first, spread, no near-duplicates, k edge cases, bad input;
and against a brute-force oracle (every candidate's minimum distance recomputed from scratch at each step)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.recognise.diverse import pick_diverse


def unit(rows) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def angles(degrees) -> np.ndarray:
    """Unit vectors in a plane at these angles: cosine between two = cos(difference)."""
    radians = np.radians(np.asarray(degrees, np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def brute_force(embeddings: np.ndarray, quality: np.ndarray, k: int, duplicate_above: float = 0.97) -> list[int]:
    picked = [max(range(len(quality)), key=lambda i: (quality[i], -i))]
    while k == 0 or len(picked) < k:
        options = []
        for i in range(len(embeddings)):
            cosines = [float(embeddings[i] @ embeddings[j]) for j in picked]
            if i not in picked and max(cosines) < duplicate_above:
                options.append((min(1 - c for c in cosines), quality[i], -i))
        if not options:
            break
        picked.append(-max(options)[2])
    return picked


def test_the_best_face_comes_first_then_the_farthest():
    vectors = angles([0, 10, 20, 60, 90])
    quality = np.array([0.2, 0.9, 0.3, 0.1, 0.4])
    # 10° is best, 90° farthest from it; then 60° (30° from 90°) beats 0° and 20° (10° from 10°).
    assert pick_diverse(vectors, quality, 3) == [1, 4, 3]


def test_ties_in_distance_go_to_the_better_face():
    vectors = np.eye(3)  # every pair exactly orthogonal
    assert pick_diverse(vectors, np.array([0.9, 0.2, 0.5]), 0) == [0, 2, 1]
    assert pick_diverse(vectors, np.array([0.9, 0.5, 0.5]), 0) == [0, 1, 2]  # then the lower index


def test_spreads_over_clusters_before_repeating_one():
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(3, 16)))
    vectors = unit(np.repeat(centres, 5, axis=0) + 0.15 * rng.normal(size=(15, 16)))
    picked = pick_diverse(vectors, rng.uniform(size=15), 3, duplicate_above=0.999)
    assert sorted(i // 5 for i in picked) == [0, 1, 2]


def test_near_duplicates_are_never_picked():
    # 0° and 5° (cosine 0.996), 40° and 41° (0.9998): with 0.97 only one of each pair can be a template.
    vectors = angles([0, 5, 40, 41, 80])
    quality = np.array([0.5, 0.9, 0.1, 0.8, 0.2])
    picked = pick_diverse(vectors, quality, 0)
    assert picked == [1, 4, 3]
    cosines = vectors[picked] @ vectors[picked].T
    assert (cosines[np.triu_indices(len(picked), 1)] < 0.97).all()


@pytest.mark.parametrize(("k", "expected"), [(1, [0]), (2, [0, 2]), (3, [0, 2, 1]), (10, [0, 2, 1]), (0, [0, 2, 1])])
def test_k_caps_the_picks_and_zero_keeps_every_non_duplicate(k, expected):
    vectors = angles([0, 45, 90, 89.5])  # 89.5 duplicates 90
    assert pick_diverse(vectors, np.array([1.0, 0.5, 0.5, 0.4]), k) == expected


def test_equal_qualities_pick_the_first_and_empty_input_picks_nothing():
    assert pick_diverse(angles([0, 30, 60]), np.ones(3), 1) == [0]
    assert pick_diverse(np.zeros((0, 8)), np.zeros(0), 3) == []


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_brute_force_oracle(seed):
    rng = np.random.default_rng(seed)
    vectors = unit(rng.normal(size=(1, 8)) + 0.4 * rng.normal(size=(40, 8)))  # one person: similar rows
    quality = rng.uniform(size=40)
    for k in (0, 1, 4, 12):
        assert pick_diverse(vectors, quality, k, 0.95) == brute_force(vectors, quality, k, 0.95)


@pytest.mark.parametrize(("embeddings", "quality", "k", "duplicate_above", "message"), [
    (np.ones(4) / 2, np.ones(1), 1, 0.97, r"embeddings must have shape \(n, d\), got \(4,\)"),
    (angles([0, 90]), np.ones(3), 1, 0.97, r"quality must have shape \(2,\) .* got \(3,\)"),
    (angles([0, 90]), np.ones((2, 1)), 1, 0.97, r"quality must have shape \(2,\)"),
    (angles([0, 90]), np.ones(2), -1, 0.97, "k must be an integer >= 0"),
    (angles([0, 90]), np.ones(2), 1.5, 0.97, "k must be an integer >= 0"),
    (angles([0, 90]), np.ones(2), 1, 0.0, r"duplicate_above must be a cosine in \(0, 1\]"),
    (angles([0, 90]), np.ones(2), 1, 1.5, r"duplicate_above must be a cosine in \(0, 1\]"),
    (angles([0, 90]) * 2, np.ones(2), 1, 0.97, "unit rows .* row 0 has norm 2.0000"),
    (np.array([[np.nan, 1.0]]), np.ones(1), 1, 0.97, "finite"),
])
def test_bad_input_is_a_clear_value_error(embeddings, quality, k, duplicate_above, message):
    with pytest.raises(ValueError, match=message):
        pick_diverse(embeddings, quality, k, duplicate_above)
