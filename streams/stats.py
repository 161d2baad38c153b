"""What the engine counts for the metrics collector, which reads it at scrape time: plain
counters and fixed-bucket histograms, no metrics library in the hot path."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

DELAY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0)


class Histogram:
    """A fixed-bucket histogram the metrics collector reads at scrape time."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = DELAY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value


@dataclass
class EngineStats:
    heartbeats: Counter[str] = field(default_factory=Counter)  # by kind
    rejects: Counter[str] = field(default_factory=Counter)  # by reason
    transitions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    clock_skew: int = 0
    detection_delay: Histogram = field(default_factory=Histogram)
    delivery_delay: Histogram = field(default_factory=Histogram)
    last_event_at: float = 0.0
    # machines the ticks looked at (decoded and judged): grows with the machines due, never
    # with those merely held (tests count it)
    tick_looks: int = 0
