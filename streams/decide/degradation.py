"""Early warning: delivery delays per location, and the degraded-scope rule. Pure.

Each heartbeat's **delivery delay** is its broker arrival minus its ``sentAt``, less the
machine's own baseline: the smallest such difference it has shown, which creeps up slowly
(:data:`CREEP` of the excess a heartbeat) so that a clock that was stepped is relearned. A
skewed clock therefore reads as no delay, and a slow uplink as a growing one.

A location is **degraded** when, for ``degraded_for`` on end, its late share (Connected machines
overdue by more than ``late_after``) or its delivery-delay p90 over the latest interval is above
its own baseline by ``degraded_factor`` (and above a floor: 2 % late, a tenth of the
heartbeat interval of delay, so that a quiet location's near-zero baseline cannot make noise
of one late machine). Baselines are slow averages over the intervals that were not degraded.
Locations in a maintenance window, and locations with fewer than ``degraded_min_machines``
Connected machines, are not judged.

A **subscription** is judged by the same rule, on its own baseline, from its parts: its
machines in each location (a sample per ``subscription=<id>|location=<name>``). The parts in a
location that is silent, in maintenance, or itself above its baseline (degraded or about to
be) are left out: that location explains them and warns for them (once a subscription has
warned, all its parts count until it clears). A subscription in a maintenance window of its
own, or with fewer than ``degraded_min_machines`` Connected machines in the parts left, is not
judged. See docs/early-warning.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Delay histogram bounds (seconds): fine at the bottom (a healthy uplink), up to an hour
DELAY_BOUNDS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
DELAY_SUM = len(DELAY_BOUNDS) + 1  # the index of the sum in a list of delay counters
CREEP = 0.01  # of the excess over the baseline, per heartbeat
MIN_LATE_SHARE = 0.02
BASELINE_ALPHA = 0.1  # each healthy interval moves the baseline a tenth of the way
WARM_UP = 3  # intervals of baseline before a location is judged
LOCATION = "location="
SUBSCRIPTION = "subscription="
PART = "|"  # between a subscription and a location in a part's scope (neither holds one)


def part_scope(subscription: str, location: str) -> str:
    """The scope of a subscription's machines in one location (subscription IDs are GUIDs,
    compared lower-cased as maintenance selectors compare them)."""
    return f"{SUBSCRIPTION}{subscription.lower()}{PART}{LOCATION}{location}"


def baseline(previous: float, raw: float) -> float:
    """A machine's clock-offset baseline after a heartbeat whose arrival - sentAt is ``raw``
    (``previous``: inf before its first)."""
    if raw < previous:
        return raw
    return previous + (raw - previous) * CREEP


def new_counters() -> list[Any]:
    """Delivery-delay counters: the count of each bucket of :data:`DELAY_BOUNDS` (and above),
    then their sum. Only ever added to: readers take differences."""
    return [0] * DELAY_SUM + [0.0]


def merge(hists: Iterable[list[int]]) -> list[int]:
    out = [0] * (len(DELAY_BOUNDS) + 1)
    for h in hists:
        for i, n in enumerate(h[: len(out)]):
            out[i] += n
    return out


def quantile(counts: list[int], q: float) -> float | None:
    """The bucket upper bound holding the q-quantile (None: no observations)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank and n:
            return DELAY_BOUNDS[i] if i < len(DELAY_BOUNDS) else math.inf
    return math.inf


@dataclass(frozen=True, slots=True)
class ScopeSample:
    """One location over one interval: machines Connected and late at its end, and the
    delivery delays of the heartbeats that arrived in it."""

    connected: int
    late: int
    delays: tuple[int, ...]

    @property
    def late_share(self) -> float:
        return self.late / self.connected if self.connected else 0.0

    @property
    def p90(self) -> float | None:
        return quantile(list(self.delays), 0.9)


def total(samples: Iterable[ScopeSample]) -> ScopeSample:
    """Samples of one interval added up (partitions of a scope, or parts of a subscription)."""
    xs = list(samples)
    return ScopeSample(
        sum(x.connected for x in xs),
        sum(x.late for x in xs),
        tuple(merge(list(x.delays) for x in xs if x.delays)),
    )


def subscriptions(samples: Mapping[str, ScopeSample], left_out: set[str]) -> dict[str, ScopeSample]:
    """Each subscription's sample from its parts, less the parts in a ``left_out`` location
    (or in ``left_out`` themselves); none at all when the whole fleet is left out."""
    if "fleet" in left_out:
        return {}
    parts: dict[str, list[ScopeSample]] = {}
    for scope, x in samples.items():
        sub, sep, location = scope.partition(PART)
        if not sep or location in left_out or scope in left_out:
            continue
        parts.setdefault(sub, []).append(x)
    return {sub: total(xs) for sub, xs in parts.items()}


@dataclass(frozen=True, slots=True)
class Rule:
    factor: float = 3.0
    sustain: float = 300.0  # degraded_for: how long the condition must hold (and clear)
    min_machines: int = 20
    min_delay: float = 30.0  # a tenth of the heartbeat interval


@dataclass
class ScopeTrack:
    base_late: float = 0.0
    base_p90: float = 0.0
    intervals: int = 0  # healthy intervals folded into the baselines
    above_since: float | None = None
    below_since: float | None = None
    degraded: bool = False
    since: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    type: str  # ScopeDegraded | ScopeDegradationCleared
    scope: str
    at: float
    late: int
    connected: int
    late_share: float
    p90: float | None
    base_late: float
    base_p90: float
    signal: str  # lateShare | deliveryDelay | both | none


@dataclass
class Detector:
    """The degraded-scope rule over interval samples (run where mass silence is decided)."""

    rule: Rule
    tracks: dict[str, ScopeTrack] = field(default_factory=dict)

    def step(
        self,
        at: float,
        samples: Mapping[str, ScopeSample],
        planned: Iterable[str] = (),
        *,
        decided_at: float | None = None,
    ) -> list[Decision]:
        """One interval ended at ``at``: judge every location that has a sample, then every
        subscription from its parts (``subscription=<id>|location=<name>``). The rule's
        clock is the intervals' ends (so that the live decider and a replay judge alike);
        ``decided_at`` is when the decision is taken (the records' time; default ``at``)."""
        when = at if decided_at is None else decided_at
        quiet = set(planned)
        # locations first: a subscription's parts in a location above its baseline are the
        # location's to warn for
        locations = {s: x for s, x in samples.items() if PART not in s}
        out = self._judge(at, when, locations, quiet, subscription=False)
        above = {
            s for s, t in self.tracks.items()
            if s.startswith(LOCATION) and (t.degraded or t.above_since is not None)
        }  # fmt: skip
        # a subscription that warned already goes on being judged on all its parts
        own, whole = subscriptions(samples, quiet | above), subscriptions(samples, quiet)
        subs = {
            s: whole[s] if s in self.tracks and self.tracks[s].degraded else x
            for s, x in own.items()
        }
        for s, x in whole.items():
            if s not in subs and s in self.tracks and self.tracks[s].degraded:
                subs[s] = x
        return out + self._judge(at, when, subs, quiet, subscription=True)

    def _judge(
        self,
        at: float,
        when: float,
        samples: Mapping[str, ScopeSample],
        quiet: set[str],
        *,
        subscription: bool,
    ) -> list[Decision]:
        out: list[Decision] = []
        r = self.rule
        held = {
            s for s, t in self.tracks.items()
            if t.degraded and s.startswith(SUBSCRIPTION) == subscription
        }  # fmt: skip
        for scope in sorted(set(samples) | held):
            s = samples.get(scope, ScopeSample(0, 0, ()))
            t = self.tracks.setdefault(scope, ScopeTrack())
            share, p90 = s.late_share, s.p90
            judged = scope not in quiet and s.connected >= r.min_machines
            late_high = share > max(r.factor * t.base_late, MIN_LATE_SHARE)
            delay_high = p90 is not None and p90 > max(r.factor * t.base_p90, r.min_delay)
            above = judged and t.intervals >= WARM_UP and (late_high or delay_high)
            if above:
                t.below_since = None
                if t.above_since is None:
                    t.above_since = at
                if not t.degraded and at - t.above_since >= r.sustain:
                    t.degraded, t.since = True, at
                    signal = "both" if late_high and delay_high else (
                        "lateShare" if late_high else "deliveryDelay")  # fmt: skip
                    out.append(self._decision("ScopeDegraded", scope, when, s, t, signal))
                continue
            t.above_since = None
            if t.degraded:
                if t.below_since is None:
                    t.below_since = at
                # in maintenance (or too few machines to judge) a warning ends at once
                if not judged or at - t.below_since >= r.sustain:
                    t.degraded, t.since, t.below_since = False, at, None
                    out.append(self._decision("ScopeDegradationCleared", scope, when, s, t, "none"))
                continue
            if judged:
                # only healthy intervals teach the baseline: a degradation is not "normal"
                a = 1.0 if t.intervals == 0 else BASELINE_ALPHA
                t.base_late += a * (share - t.base_late)
                if p90 is not None:
                    t.base_p90 += a * (p90 - t.base_p90)
                t.intervals += 1
        return out

    @staticmethod
    def _decision(
        kind: str, scope: str, at: float, s: ScopeSample, t: ScopeTrack, signal: str
    ) -> Decision:
        return Decision(
            kind, scope, at, s.late, s.connected, round(s.late_share, 4), s.p90,
            round(t.base_late, 4), round(t.base_p90, 3), signal,
        )  # fmt: skip

    def degraded(self) -> list[str]:
        return sorted(s for s, t in self.tracks.items() if t.degraded)
