"""Early warning on the worker's side: late machines, delivery delays per location, and each
partition's interval samples for the degraded-scope rule (:mod:`.degradation`).

For every accepted heartbeat (fast path too) the engine updates the machine's clock-offset
baseline and adds its delay to the counters of its partition, location and subscription (one
list per pair, which its slot holds: :meth:`EarlyWarning.counters_for`), so that the fast path
costs the same however many subscriptions there are. Every tick, :meth:`EarlyWarning.on_tick`
moves what the partition's counters gained into the cumulative histograms (metrics: per
location only) and the current interval; the first tick of an interval returns the
partition's sample of the one that ended (machines Connected and late at its end, its delays)
per location and per subscription's part in a location. The worker
publishes those samples on the shared scope board; the owner of partition 0 merges them and
decides (:class:`Decider`). A replay merges them the same way (``arcbeat replay``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from arcbeat.streams.decide.degradation import (
    DELAY_BOUNDS,
    LOCATION,
    SUBSCRIPTION,
    Decision,
    Detector,
    Rule,
    ScopeSample,
    ScopeTrack,
    new_counters,
    part_scope,
    total,
)
from arcbeat.streams.decide.timestamps import rfc3339
from arcbeat.streams.settings import Settings


def rule_of(settings: Settings) -> Rule:
    t = settings.timing
    return Rule(
        factor=t.degraded_factor,
        sustain=t.degraded_for if t.degraded_for > 0 else t.heartbeat_interval,
        min_machines=t.degraded_min_machines,
        min_delay=t.heartbeat_interval / 10,
    )


@dataclass
class Cumulative:
    """Delivery delays of one location since the worker started (a Prometheus histogram)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DELAY_BOUNDS) + 1))
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class PartitionSample:
    """One partition's samples of one interval (``bucket``: its start), per location scope."""

    partition: int
    bucket: float
    scopes: dict[str, ScopeSample]

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "bucket": self.bucket,
                "scopes": {
                    s: [x.connected, x.late, list(x.delays)] for s, x in self.scopes.items()
                },
            }
        )

    @classmethod
    def decode(cls, partition: int, raw: bytes) -> PartitionSample | None:
        try:
            body = orjson.loads(raw)
            return cls(
                partition,
                float(body["bucket"]),
                {
                    str(s): ScopeSample(int(v[0]), int(v[1]), tuple(int(n) for n in v[2]))
                    for s, v in body["scopes"].items()
                },
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
            return None


class EarlyWarning:
    """Delays and interval samples of the partitions a worker (or a replay) holds."""

    def __init__(self, settings: Settings) -> None:
        self.interval = settings.timing.heartbeat_interval
        self.locations: list[str] = []
        self._location_index: dict[str, int] = {}
        # (location, subscription) pairs, and the location index of each
        self.pairs: list[tuple[str, str]] = []
        self._pair_location: list[int] = []
        self._index: dict[tuple[str, str], int] = {}
        # per partition state (the id of its PartitionIndex: a partition restored again is a
        # new one), per pair index: counters its slots add to (never replaced, so that a
        # slot may hold them), and what the previous tick had read of them
        self.counters: dict[int, dict[int, list[Any]]] = {}
        self._read: dict[int, dict[int, list[Any]]] = {}
        self.cumulative: dict[int, Cumulative] = {}  # per location index
        self._current: dict[int, tuple[float, dict[int, list[int]]]] = {}

    def location_index(self, location: str) -> int:
        i = self._location_index.get(location)
        if i is None:
            i = self._location_index[location] = len(self.locations)
            self.locations.append(location)
        return i

    def pair_index(self, location: str, subscription: str) -> int:
        i = self._index.get((location, subscription))
        if i is None:
            i = self._index[(location, subscription)] = len(self.pairs)
            self.pairs.append((location, subscription))
            self._pair_location.append(self.location_index(location))
        return i

    def counters_for(self, state: object, location: str, subscription: str) -> list[Any]:
        """The delay counters a machine of the partition state ``state`` (its PartitionIndex)
        in ``location`` and ``subscription`` adds to."""
        pair = self.pair_index(location, subscription)
        by_pair = self.counters.setdefault(id(state), {})
        c = by_pair.get(pair)
        if c is None:
            c = by_pair[pair] = new_counters()
            self._read.setdefault(id(state), {})[pair] = new_counters()
        return c

    def release(self, p: int) -> None:
        # the counters stay: a partition given back keeps its slots, which hold them
        self._current.pop(p, None)

    def _fresh(self, state: object) -> dict[int, list[Any]]:
        """What the partition's counters gained since the previous tick, per pair."""
        out: dict[int, list[Any]] = {}
        read = self._read.get(id(state), {})
        for pair, c in self.counters.get(id(state), {}).items():
            before = read[pair]
            if c == before:
                continue  # no heartbeat of this pair since
            out[pair] = [a - b for a, b in zip(c, before, strict=True)]
            read[pair] = list(c)
        return out

    def on_tick(
        self,
        p: int,
        state: object,
        now: float,
        counts: Callable[[], tuple[Mapping[str, int], Mapping[str, int]]],
    ) -> PartitionSample | None:
        """Fold the partition's fresh delays (``state``: its PartitionIndex); the sample of the
        interval that just ended, on the first tick of the next one. ``counts`` gives the
        machines Connected and late per scope (locations, and subscriptions' parts), asked
        for only when an interval ends."""
        taken = self._fresh(state)
        bucket = math.floor(now / self.interval) * self.interval
        start, acc = self._current.get(p, (bucket, {}))
        for pair, got in taken.items():
            loc = self._pair_location[pair]
            cum = self.cumulative.get(loc)
            if cum is None:
                cum = self.cumulative[loc] = Cumulative()
            n = len(cum.counts)
            for i in range(n):
                cum.counts[i] += got[i]
            cum.sum += got[n]
            a = acc.get(pair)
            if a is None:
                acc[pair] = got[:n]
            else:
                for i in range(n):
                    a[i] += got[i]
        out = None
        if bucket > start:
            out = PartitionSample(p, start, self._scopes(acc, *counts()))
            start, acc = bucket, {}
        self._current[p] = (start, acc)
        return out

    def _scopes(
        self, acc: Mapping[int, list[int]], connected: Mapping[str, int], late: Mapping[str, int]
    ) -> dict[str, ScopeSample]:
        """An interval's samples: every location and part with machines Connected or delays."""
        delays: dict[str, list[int]] = {}
        for pair, h in acc.items():
            location, subscription = self.pairs[pair]
            for scope in (LOCATION + location, part_scope(subscription, location)):
                d = delays.get(scope)
                if d is None:
                    delays[scope] = list(h)
                else:
                    for i, n in enumerate(h):
                        d[i] += n
        scopes: dict[str, ScopeSample] = {}
        for scope, n_connected in connected.items():
            if scope.startswith((LOCATION, SUBSCRIPTION)):
                h = delays.pop(scope, [])
                scopes[scope] = ScopeSample(n_connected, late.get(scope, 0), tuple(h))
        for scope, h in delays.items():
            scopes[scope] = ScopeSample(0, late.get(scope, 0), tuple(h))
        return scopes

    def by_location(self) -> dict[str, Cumulative]:
        return {self.locations[i]: c for i, c in self.cumulative.items()}


def merged(samples: Iterable[PartitionSample]) -> dict[str, ScopeSample]:
    """Every partition's samples of one interval, per scope."""
    parts: dict[str, list[ScopeSample]] = {}
    for s in samples:
        for scope, x in s.scopes.items():
            parts.setdefault(scope, []).append(x)
    return {scope: total(xs) for scope, xs in parts.items()}


def decision_record(d: Decision) -> bytes:
    return orjson.dumps(
        {
            "type": d.type,
            "scope": d.scope,
            "at": rfc3339(d.at),
            "machines": d.late,
            "connected": d.connected,
            "lateShare": d.late_share,
            "deliveryDelayP90Seconds": d.p90 if d.p90 is None or math.isfinite(d.p90) else None,
            "baselineLateShare": d.base_late,
            "baselineDelayP90Seconds": d.base_p90,
            "signal": d.signal,
        }
    )


def planned_scopes(windows: Iterable[Any], at: float) -> set[str]:
    """Scopes a maintenance window covers whole at ``at``: a location, a subscription, or a
    subscription's part in a location (a window on those and nothing narrower)."""
    out: set[str] = set()
    for w in windows:
        sel = w.selector
        if sel.resource_ids or sel.resource_group or sel.tags or not w.active_at(at):
            continue
        if sel.subscription_id and sel.location:
            out.add(part_scope(sel.subscription_id, sel.location))
        elif sel.subscription_id:
            out.add(SUBSCRIPTION + sel.subscription_id.lower())
        elif sel.location:
            out.add(LOCATION + sel.location)
    return out


class Decider:
    """The degraded-scope rule over every partition's samples: each interval is judged once,
    when its samples have had time to arrive (``settle``)."""

    def __init__(self, settings: Settings) -> None:
        self.detector = Detector(rule_of(settings))
        self.interval = settings.timing.heartbeat_interval
        self.settle = 2 * settings.worker.commit_interval + 2 * settings.timing.check_interval
        self.judged = -math.inf  # start of the latest interval judged

    def due(self, now: float) -> float | None:
        """The interval to judge now (its start), if any."""
        bucket = math.floor((now - self.settle) / self.interval) * self.interval - self.interval
        return bucket if bucket > self.judged else None

    def judge(
        self,
        bucket: float,
        samples: Iterable[PartitionSample],
        planned: Iterable[str],
        at: float | None = None,
    ) -> list[Decision]:
        """Judge the interval starting at ``bucket``, deciding at ``at`` (default: as soon as
        a live decider could, its end plus ``settle``)."""
        self.judged = bucket
        mine = [s for s in samples if s.bucket == bucket]
        end = bucket + self.interval
        when = end + self.settle if at is None else at
        return self.detector.step(end, merged(mine), planned, decided_at=when)

    # the detector's state on the scope board, so that the next decider goes on from it
    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "judged": self.judged if math.isfinite(self.judged) else None,
                "tracks": {
                    s: [
                        t.base_late,
                        t.base_p90,
                        t.intervals,
                        t.above_since,
                        t.below_since,
                        t.degraded,
                        t.since,
                    ]
                    for s, t in self.detector.tracks.items()
                },
            }
        )

    def restore(self, raw: bytes) -> None:
        try:
            body = orjson.loads(raw)
            tracks = {
                str(s): ScopeTrack(
                    float(v[0]), float(v[1]), int(v[2]), v[3], v[4], bool(v[5]), float(v[6])
                )
                for s, v in body["tracks"].items()
            }
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
            return  # a state no decider can read: start learning again
        self.detector.tracks = tracks
        if body.get("judged") is not None:
            self.judged = float(body["judged"])


def replay_decisions(
    settings: Settings, samples: Iterable[PartitionSample], planned: Mapping[float, set[str]]
) -> list[Decision]:
    """What the degraded-scope rule decides over a replay's samples, interval by interval."""
    by_bucket: dict[float, list[PartitionSample]] = {}
    for s in samples:
        by_bucket.setdefault(s.bucket, []).append(s)
    d = Decider(settings)
    out: list[Decision] = []
    for bucket in sorted(by_bucket):
        out += d.judge(bucket, by_bucket[bucket], planned.get(bucket, set()))
    return out


class EarlyBoard:
    """The worker's side of the shared board for early warning: each partition publishes its
    interval samples (``g|<p>``); the owner of partition 0 judges them and keeps the rule's
    state under ``G|``, where every worker reads which scopes are degraded."""

    SAMPLE = "g|"
    STATE = "G|"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.decider: Decider | None = None
        # every sample seen on the board, by (partition, interval): a partition's key holds
        # only its latest, which may be newer than the interval being judged
        self.seen: dict[tuple[int, float], PartitionSample] = {}

    def decide(
        self,
        now: float,
        view: Mapping[str, bytes],
        windows: Iterable[Any],
        silent: Iterable[str] = (),
    ) -> tuple[list[tuple[str, bytes]], list[tuple[bytes, bytes]]]:
        """Board writes and status records (key, value) of the decider's tick at ``now``.
        ``silent``: scopes in a mass-silence verdict, not judged (they page already)."""
        if self.decider is None:
            self.decider = Decider(self.settings)
            raw = view.get(self.STATE)
            if raw:
                self.decider.restore(raw)
        for k, raw in view.items():
            if k.startswith(self.SAMPLE):
                try:
                    p = int(k[len(self.SAMPLE) :])
                except ValueError:
                    continue
                s = PartitionSample.decode(p, raw)
                if s is not None and s.bucket > self.decider.judged:
                    self.seen[(p, s.bucket)] = s
        bucket = self.decider.due(now)
        if bucket is None:
            return [], []
        samples = [s for (_, b), s in self.seen.items() if b == bucket]
        quiet = planned_scopes(windows, now) | set(silent)
        decisions = self.decider.judge(bucket, samples, quiet, now)
        self.seen = {k: s for k, s in self.seen.items() if k[1] > bucket}
        records = [(f"scope:{d.scope}".encode(), decision_record(d)) for d in decisions]
        return [(self.STATE, self.decider.encode())], records

    def lost(self) -> None:
        """Partition 0 went to another worker: it goes on from the board's state."""
        self.decider = None
        self.seen = {}


def degraded_scopes(raw: bytes | None) -> list[str]:
    """The scopes the board's early-warning state holds degraded."""
    if not raw:
        return []
    try:
        body = orjson.loads(raw)
        return sorted(str(s) for s, v in body["tracks"].items() if v[5])
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
        return []
