"""Heavy hitters in bounded memory: weighted Space-Saving, and a window of summaries merged with a proven bound.

Why Space-Saving (Metwally et al. 2005): at most ``capacity`` counters whatever
the number of distinct keys, every counter over-estimates its key by at most
its recorded error, and the smallest counter bounds both that error and the
true count of any key not held.  The counters always sum to the stream's
weight ``N`` exactly, so the smallest is at most ``N / capacity``.

A sliding window is a ring of such summaries, one per time bucket (and per
partition); :func:`merge` sums them and carries the bound: a key's merged
estimate is the sum of its counters where held, and its true count lies within
``bound`` = the sum of the full summaries' smallest counters (0 while a summary
holds every key it saw, then the counts are exact).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Hashable, Iterable

__all__ = ["SpaceSaving", "Estimate", "Merged", "merge"]


class SpaceSaving:
    """Weighted Space-Saving over hashable keys, ``capacity`` counters at most."""

    __slots__ = ("capacity", "total", "_count", "_err", "_heap")

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = int(capacity)
        self.total = 0  # the stream's weight N
        self._count: dict = {}
        self._err: dict = {}
        self._heap: list = []  # (count, seq, key), lazily deleted: an entry is live when its count is current

    def __len__(self) -> int:
        return len(self._count)

    def add(self, key: Hashable, weight: int = 1) -> None:
        if weight <= 0:
            return
        self.total += weight
        c = self._count
        if key in c:
            c[key] += weight
            self._push(key)
        elif len(c) < self.capacity:
            c[key] = weight
            self._err[key] = 0
            self._push(key)
        else:
            floor, victim = self._pop_min()
            del c[victim], self._err[victim]
            c[key] = floor + weight
            self._err[key] = floor
            self._push(key)

    def update(self, counts: Iterable[tuple[Hashable, int]]) -> None:
        """Add pre-aggregated ``(key, weight)`` pairs (a chunk's exact counts): same bound, fewer steps."""
        for k, w in counts:
            self.add(k, int(w))

    def _push(self, key) -> None:
        heapq.heappush(self._heap, (self._count[key], id(key), key))
        if len(self._heap) > 4 * self.capacity + 16:  # drop stale entries: memory stays O(capacity)
            self._heap = [(n, id(k), k) for k, n in self._count.items()]
            heapq.heapify(self._heap)

    def _pop_min(self):
        heap, c = self._heap, self._count
        while True:
            n, _, k = heap[0]
            if c.get(k) == n:
                heapq.heappop(heap)
                return n, k
            heapq.heappop(heap)

    @property
    def floor(self) -> int:
        """Upper bound on any unheld key's count and on every held counter's error: 0 until full."""
        if len(self._count) < self.capacity:
            return 0
        heap, c = self._heap, self._count
        while c.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0]

    def items(self):
        """``(key, count, error)``: true count in ``[count - error, count]``."""
        return [(k, n, self._err[k]) for k, n in self._count.items()]

    def memory_items(self) -> int:
        """Entries held (counters + heap), for the memory-bound test."""
        return len(self._count) + len(self._heap)


@dataclass(frozen=True)
class Estimate:
    key: Hashable
    count: int  # merged estimate: true count within [count - bound, count + bound]
    lower: int  # guaranteed lower bound (sum of count - error where held)
    upper: int  # guaranteed upper bound (held counts + floors where not held)


@dataclass(frozen=True)
class Merged:
    total: int  # N: the weight of all merged summaries
    bound: int  # |estimate - true| <= bound for every key (sum of the summaries' floors)
    estimates: list[Estimate]  # every held key, largest estimate first

    def top(self, k: int) -> list[Estimate]:
        return self.estimates[:k]


def merge(summaries: Iterable[SpaceSaving]) -> Merged:
    """Sum summaries (time buckets, partitions); the bound is the sum of their floors.

    A key with true count above ``bound`` is held by at least one summary, so
    it is among the estimates: no heavy hitter can be missed.
    """
    summaries = list(summaries)
    est: dict = {}
    low: dict = {}
    held_floor: dict = {}  # sum of floors of the summaries that hold the key
    total = bound = 0
    for s in summaries:
        total += s.total
        f = s.floor
        bound += f
        for k, n, e in s.items():
            est[k] = est.get(k, 0) + n
            low[k] = low.get(k, 0) + (n - e)
            held_floor[k] = held_floor.get(k, 0) + f
    out = [Estimate(k, n, low[k], n + bound - held_floor[k]) for k, n in est.items()]
    out.sort(key=lambda e: (-e.count, repr(e.key)))
    return Merged(total, bound, out)
