"""What the workers emitted: status transitions and scope events read from
``<prefix>.status``, ticks read from the heartbeats topic, and figures measured from them.

A tick tells up to which broker time a partition had been read, so the oracle
(:mod:`tests.support.oracle`) knows exactly which deadlines a worker could see.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from arcbeat.streams.decide.timestamps import parse_rfc3339
from tests.support.kafka import KafkaRecord


@dataclass(frozen=True, slots=True)
class Transition:
    """A StatusChanged record read from ``<prefix>.status`` (or an expected one)."""

    key: str
    number: int
    previous: str | None
    status: str
    reason: str
    decided_at: float
    last_heartbeat_at: float
    flapping: bool
    mass_outage: bool
    changed_at: float = 0.0
    delay: float | None = None
    tid: str = ""
    location: str = ""
    resource_id: str = ""

    def short(self) -> str:
        mass = " mass" if self.mass_outage else ""
        flap = " flapping" if self.flapping else ""
        return (
            f"#{self.number} {self.previous}->{self.status} ({self.reason}{mass}{flap}) "
            f"decided {self.decided_at:.3f} lastHb {self.last_heartbeat_at:.3f}"
        )


@dataclass(frozen=True, slots=True)
class ScopeEvent:
    type: str
    scope: str
    machines: int
    at: float


@dataclass
class Observed:
    by_key: dict[str, list[Transition]]
    scope_events: list[ScopeEvent]
    duplicate_ids: list[str]
    records: int

    @classmethod
    def parse(cls, records: Iterable[KafkaRecord]) -> Observed:
        by_key: dict[str, list[Transition]] = defaultdict(list)
        scopes: list[ScopeEvent] = []
        ids: Counter[str] = Counter()
        n = 0
        for r in records:  # partition/offset order: a key's records are in emission order
            n += 1
            assert r.value is not None, f"status record without value at {r.partition}/{r.offset}"
            rec = orjson.loads(r.value)
            if rec["type"] in ("ScopeDegraded", "ScopeDegradationCleared"):
                continue  # early warnings: tests/e2e/test_early_warning_e2e.py reads them
            if rec["type"] in ("ScopeSilent", "ScopeRecovered"):
                scopes.append(
                    ScopeEvent(
                        rec["type"], rec["scope"], int(rec["machines"]), parse_rfc3339(rec["at"])
                    )
                )
                continue
            assert rec["type"] == "StatusChanged", rec
            tid = rec["transitionId"]
            ids[tid] += 1
            key, _, rest = tid.partition("#")
            assert r.key is not None and r.key.decode() == key == rec["resourceId"].lower(), rec
            by_key[key].append(
                Transition(
                    key=key,
                    number=int(rest.split("@")[0]),
                    previous=rec["previousStatus"],
                    status=rec["status"],
                    reason=rec["reason"],
                    decided_at=parse_rfc3339(rec["decidedAt"]),
                    last_heartbeat_at=parse_rfc3339(rec["lastHeartbeatAt"]),
                    flapping=bool(rec["flapping"]),
                    mass_outage=bool(rec["massOutage"]),
                    changed_at=parse_rfc3339(rec["changedAt"]),
                    delay=rec["detectionDelaySeconds"],
                    tid=tid,
                    location=rec["location"],
                    resource_id=rec["resourceId"],
                )
            )
        scopes.sort(key=lambda e: e.at)
        return cls(dict(by_key), scopes, sorted(t for t, c in ids.items() if c > 1), n)

    def all(self) -> list[Transition]:
        return [t for ts in self.by_key.values() for t in ts]

    def scope(
        self, kind: str, scope: str | None = None, *, until: float | None = None
    ) -> list[ScopeEvent]:
        return [
            e
            for e in self.scope_events
            if e.type == kind
            and (scope is None or e.scope == scope)
            and (until is None or e.at <= until)
        ]

    def silent_intervals(self) -> dict[str, list[tuple[float, float]]]:
        """Per scope, the [ScopeSilent.at, ScopeRecovered.at) verdict intervals."""
        out: dict[str, list[tuple[float, float]]] = defaultdict(list)
        open_at: dict[str, float] = {}
        for e in self.scope_events:
            if e.type == "ScopeSilent":
                open_at.setdefault(e.scope, e.at)
            elif e.scope in open_at:
                out[e.scope].append((open_at.pop(e.scope), e.at))
        for scope, start in open_at.items():
            out[scope].append((start, float("inf")))
        return dict(out)


@dataclass(frozen=True, slots=True)
class Tick:
    partition: int
    offset: int
    at: float


def tick_gaps(ticks: Sequence[Tick], start: float, end: float) -> float:
    """The longest time between consecutive ticks of one partition within [start, end]."""
    by_part: dict[int, list[float]] = defaultdict(list)
    for t in ticks:
        if start <= t.at <= end:
            by_part[t.partition].append(t.at)
    worst = 0.0
    for ats in by_part.values():
        ats.sort()
        worst = max([worst, *(b - a for a, b in itertools.pairwise(ats))])
    return worst


def stats(values: Sequence[float]) -> str:
    if not values:
        return "n=0"
    v = sorted(values)
    p50 = v[len(v) // 2]
    p95 = v[min(len(v) - 1, int(len(v) * 0.95))]
    return f"n={len(v)} min={v[0]:.3f}s p50={p50:.3f}s p95={p95:.3f}s max={v[-1]:.3f}s"


def detection_delays(ts: Iterable[Transition], *, mass: bool = False) -> list[float]:
    return [
        t.delay
        for t in ts
        if t.reason == "heartbeat_timeout" and t.delay is not None and t.mass_outage == mass
    ]


def connected_latencies(ts: Iterable[Transition]) -> list[float]:
    """changedAt (when the worker emitted it) minus the heartbeat's broker arrival."""
    return [
        t.changed_at - t.decided_at
        for t in ts
        if t.status == "Connected" and t.reason in ("heartbeat_resumed", "reonboarded")
    ]
