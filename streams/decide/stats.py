"""What the engine counts for the metrics collector, which reads it at scrape time: plain
counters and fixed-bucket histograms, no metrics library in the hot path."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

DELAY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0)
# steps of the worker's event loop: a tick's handling, the loop's lag (goals: 50 ms, 250 ms)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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
    # measured by the batch loop (the engine has no clock): a tick's handling time, and how
    # late the event loop ran a timer (any synchronous step of the worker delays it)
    tick_seconds: Histogram = field(default_factory=lambda: Histogram(STEP_BUCKETS))
    loop_lag: Histogram = field(default_factory=lambda: Histogram(STEP_BUCKETS))
    loop_lag_max: float = 0.0
    # how long the heartbeat loop waited for a round of commits (processing paused meanwhile)
    commit_seconds: Histogram = field(default_factory=lambda: Histogram(STEP_BUCKETS))
