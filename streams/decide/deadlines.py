"""Deadline bookkeeping: a bucketed timing wheel and the mass-silence arithmetic. Pure.

The wheel keeps each key in at most one bucket of ``granularity`` seconds. Popping due keys
costs O(due + buckets passed), never O(fleet). Entries are lazy: a key may sit in a bucket
earlier than its real deadline (a heartbeat moved it later); the caller re-evaluates every
popped key and schedules it again at its real deadline.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class DeadlineWheel(Generic[K]):
    __slots__ = ("_at", "_buckets", "_granularity", "_heap")

    def __init__(self, granularity: float = 1.0) -> None:
        if granularity <= 0:
            raise ValueError("granularity must be > 0")
        self._granularity = granularity
        self._buckets: dict[int, set[K]] = {}
        self._heap: list[int] = []  # bucket numbers, each pushed once while it exists
        self._at: dict[K, int] = {}  # key -> bucket number it sits in

    def _bucket(self, t: float) -> int:
        return math.floor(t / self._granularity)

    def schedule(self, key: K, at: float) -> None:
        """Make sure ``key`` is looked at no later than ``at``."""
        b = self._bucket(at)
        old = self._at.get(key)
        if old is not None:
            if old <= b:
                return  # an earlier look is already booked; it will reschedule then
            self._discard(key, old)
        self._at[key] = b
        bucket = self._buckets.get(b)
        if bucket is None:
            self._buckets[b] = {key}
            heapq.heappush(self._heap, b)
        else:
            bucket.add(key)

    def unschedule(self, key: K) -> None:
        old = self._at.pop(key, None)
        if old is not None:
            bucket = self._buckets.get(old)
            if bucket is not None:
                bucket.discard(key)

    def _discard(self, key: K, b: int) -> None:
        bucket = self._buckets.get(b)
        if bucket is not None:
            bucket.discard(key)

    def pop_due(self, now: float) -> list[K]:
        """Remove and return every key whose bucket starts at or before ``now``."""
        limit = self._bucket(now)
        due: list[K] = []
        heap = self._heap
        while heap and heap[0] <= limit:
            b = heapq.heappop(heap)
            bucket = self._buckets.pop(b, None)
            if not bucket:
                continue
            for key in bucket:
                if self._at.get(key) == b:
                    del self._at[key]
                    due.append(key)
        return due

    def next_at(self) -> float | None:
        while self._heap and not self._buckets.get(self._heap[0]):
            self._buckets.pop(heapq.heappop(self._heap), None)
        return self._heap[0] * self._granularity if self._heap else None

    def __contains__(self, key: object) -> bool:
        return key in self._at

    def __len__(self) -> int:
        return len(self._at)

    def __iter__(self) -> Iterator[K]:
        return iter(self._at)


@dataclass(frozen=True, slots=True)
class ScopeCounts:
    """One partition's view of a scope: Connected machines, and how many of them are late."""

    connected: int
    late: int


def late_after(heartbeat_interval: float, disconnect_after: float) -> float:
    """Silence after which a Connected machine counts as late (it missed a heartbeat).

    Late is the leading indicator of mass silence: it comes well before the deadline, so a
    scope is known to be silent before the first of its machines would be declared.
    """
    return min(1.5 * heartbeat_interval, disconnect_after / 2)


def next_look(due: float, last_heartbeat_at: float, late_after: float, *, watch: bool) -> float:
    """When a machine due at ``due`` is looked at next. A Connected machine watched for
    lateness (``watch``: not held, not late yet) is looked at when it becomes late, if that
    comes first: its late mark is the mass-silence evidence."""
    return min(due, last_heartbeat_at + late_after) if watch else due


def scope_is_silent(total: ScopeCounts, *, ratio: float, min_machines: int) -> bool:
    """The mass-silence rule (docs/how-it-decides.md, Mass silence) over the sum of every
    partition's counts."""
    # 1e-9: "at least 55 %" must hold at exactly 55 of 100 (0.55 * 100 is 55.000000000000007)
    return total.late >= min_machines and total.late + 1e-9 >= ratio * total.connected


def sum_counts(parts: list[ScopeCounts]) -> ScopeCounts:
    return ScopeCounts(sum(p.connected for p in parts), sum(p.late for p in parts))
