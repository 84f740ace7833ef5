"""The fair share: how many cameras each live worker should hold. A pure function, the same on every worker.

Only counts are planned, not which camera goes where: a worker keeps the cameras it already holds up to its
quota, so a rebalance moves only the surplus, never reshuffles. Ties go to the lower worker id, so every worker
computes the same quotas from the same membership.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping, Sequence

from pipeline.core.errors import ConfigError


def plan(cameras: Collection[str] | int, workers: Sequence[str], capacities: Mapping[str, int]) -> dict[str, int]:
    """worker -> number of cameras it should hold: as equal as capacities allow (water-filling), never above
    a worker's capacity, summing to min(cameras, total capacity)."""
    count = cameras if isinstance(cameras, int) else len(cameras)
    if count < 0:
        raise ConfigError(f"camera count must be >= 0, got {count}")
    missing = [w for w in workers if w not in capacities]
    if missing:
        raise ConfigError(f"no capacity given for worker(s) {', '.join(sorted(missing))}")
    bad = {w: capacities[w] for w in workers if isinstance(capacities[w], bool)
           or not isinstance(capacities[w], int) or capacities[w] < 0}
    if bad:
        raise ConfigError(f"capacities must be whole numbers >= 0, got {bad}")
    quotas = dict.fromkeys(sorted(set(workers)), 0)
    # One camera at a time to the worker with the fewest so far (then the lowest id) that still has room.
    heap = [(0, w) for w in quotas if capacities[w] > 0]
    heapq.heapify(heap)
    for _ in range(count):
        if not heap:
            break
        held, worker = heapq.heappop(heap)
        quotas[worker] = held + 1
        if held + 1 < capacities[worker]:
            heapq.heappush(heap, (held + 1, worker))
    return quotas
