"""Availability windows: each machine's heartbeats counted per tumbling window of broker time,
closed into a WindowCounts record (:func:`.output_records.window_counts`) when the window ends
or the machine reports in a later one (docs/how-it-decides.md, Availability).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from arcbeat.streams.decide.machines import Machine, from_slot
from arcbeat.streams.decide.output_records import Emit, window_counts

if TYPE_CHECKING:
    from arcbeat.streams.decide.partition_index import PartitionIndex


def window_start(t: float, window: float) -> float:
    """The start of the tumbling window of ``window`` seconds that holds time ``t``."""
    return math.floor(t / window) * window


class AvailabilityWindows:
    """The windows of every partition of one engine: ``window`` seconds long (0: off), each
    expecting ``expected`` heartbeats."""

    __slots__ = ("_starts", "check_interval", "expected", "window")

    def __init__(self, window: float, expected: int, check_interval: float) -> None:
        self.window = window
        self.expected = expected
        self.check_interval = check_interval
        # one float object per window for all machines (24 bytes a machine at a million)
        self._starts: dict[float, float] = {}

    def count(
        self,
        idx: PartitionIndex,
        key: str,
        old: Machine | None,
        kind: str,
        arrived_at: float,
        out: list[Emit],
    ) -> tuple[float | None, int]:
        """The machine's window start and count with this message counted (broker time).

        A heartbeat of a later window closes the machine's open one first (a tick may not
        have reached its end yet); a disconnect message is not a heartbeat and counts nothing.
        """
        start, received = (old.window_start, old.received) if old is not None else (None, 0)
        if self.window and kind != "disconnect":
            w = window_start(arrived_at, self.window)
            w = self._starts.setdefault(w, w)
            if old is not None and start is not None and start != w:
                self.close(idx, key, old, out)
                start, received = None, 0
            start, received = w, received + 1
            idx.windows.setdefault(w, set()).add(key)
        return start, received

    def close(self, idx: PartitionIndex, key: str, m: Machine, out: list[Emit]) -> None:
        """Close the machine's open window (it reported in a later one, or left)."""
        if m.window_start is None:
            return
        keys = idx.windows.get(m.window_start)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del idx.windows[m.window_start]
        out.append(self.record(idx, key, m))

    def close_ended(self, idx: PartitionIndex, now: float, out: list[Emit]) -> None:
        """Windows that ended by the tick's time: all of their heartbeats are before the tick
        in the log, so their counts are final.

        Tumbling windows all end at once, so a tick closes at most a budget of them: enough
        to close a whole partition within a quarter of a window, so that a window boundary
        (or a restart after a long stop) cannot stall the partition for one huge tick. A
        machine that reports again closes its own window at once (:meth:`count`); the budget
        paces only the silent ones.
        """
        window = self.window
        budget = max(10, math.ceil(len(idx.machines) * self.check_interval * 4 / window))
        for w in sorted(w for w in idx.windows if w + window <= now):
            keys = idx.windows[w]
            if len(keys) <= budget:
                del idx.windows[w]
                batch = sorted(keys)
            else:
                # any `budget` of them: which ones a tick picks is seen by no reader (what a
                # crashed run closed was never committed), only that each closes once
                batch = [keys.pop() for _ in range(budget)]
            budget -= len(batch)
            for key in batch:
                slot = idx.machines.get(key)
                if slot is None or slot.wstart != w:
                    continue
                out.append(self.record(idx, key, from_slot(slot)))
                slot.wstart, slot.received = None, 0
            if budget <= 0:
                break

    def record(self, idx: PartitionIndex, key: str, m: Machine) -> Emit:
        """The machine's WindowCounts; planned maintenance time is left out of availability."""
        start = m.window_start or 0.0
        i = m.info
        received, expected, planned = m.received, self.expected, 0.0
        if len(idx.planned):
            planned = idx.planned.planned_seconds(
                i.resource_id, i.subscription_id, i.resource_group, i.location, i.tags,
                start, start + self.window,
            )  # fmt: skip
            if planned > 0.0:
                # availability excludes planned time: heartbeats expected outside it; those
                # that came inside it may stand in for missing ones (capped at 100 %)
                expected = math.floor(self.expected * (1.0 - planned / self.window))
                received = min(received, expected)
        return window_counts(key, i, start, start + self.window, received, expected, planned)
