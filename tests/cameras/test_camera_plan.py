"""The fair share, table-driven, and against a brute-force oracle."""

from __future__ import annotations

import itertools

import pytest

from pipeline.cameras import plan
from pipeline.core.errors import ConfigError


@pytest.mark.parametrize("cameras, capacities, expected", [
    (6, {"a": 4, "b": 4, "c": 4}, {"a": 2, "b": 2, "c": 2}),
    (7, {"a": 4, "b": 4, "c": 4}, {"a": 3, "b": 2, "c": 2}),       # the extra one to the lowest id
    (6, {"a": 4, "b": 4}, {"a": 3, "b": 3}),                        # a worker died: shares grow
    (6, {"a": 1, "b": 10, "c": 10}, {"a": 1, "b": 3, "c": 2}),      # a small worker: the rest fill up
    (10, {"a": 2, "b": 3}, {"a": 2, "b": 3}),                       # not enough capacity: all full
    (0, {"a": 4}, {"a": 0}),
    (3, {"a": 0, "b": 5}, {"a": 0, "b": 3}),                        # capacity 0: a worker that only watches
    (5, {}, {}),
    (1, {"b": 1, "a": 1}, {"a": 1, "b": 0}),                        # order given does not matter
])
def test_plan(cameras, capacities, expected):
    assert plan(cameras, list(capacities), capacities) == expected
    assert plan([f"c{i}" for i in range(cameras)], list(capacities), capacities) == expected


def brute_force(count, capacities):
    """Among all assignments that serve as many cameras as possible, the most even (smallest max, then lexicographic
    preference for lower ids) one."""
    workers = sorted(capacities)
    best = None
    for quotas in itertools.product(*(range(capacities[w] + 1) for w in workers)):
        if sum(quotas) != min(count, sum(capacities.values())):
            continue
        key = (sorted(quotas, reverse=True), [-q for q in quotas])
        if best is None or key < best[0]:
            best = (key, dict(zip(workers, quotas, strict=True)))
    return best[1]


@pytest.mark.parametrize("count", range(9))
@pytest.mark.parametrize("caps", [(1, 2, 3), (3, 3, 3), (0, 4, 1), (2, 2), (5,)])
def test_plan_matches_brute_force(count, caps):
    capacities = {f"w{i}": c for i, c in enumerate(caps)}
    assert plan(count, list(capacities), capacities) == brute_force(count, capacities)


@pytest.mark.parametrize("capacities, message", [
    ({"a": -1}, "whole numbers >= 0"),
    ({"a": 1.5}, "whole numbers >= 0"),
    ({"a": True}, "whole numbers >= 0"),
])
def test_bad_capacities(capacities, message):
    with pytest.raises(ConfigError, match=message):
        plan(3, list(capacities), capacities)


def test_missing_capacity():
    with pytest.raises(ConfigError, match="no capacity given for worker"):
        plan(3, ["a", "b"], {"a": 1})
