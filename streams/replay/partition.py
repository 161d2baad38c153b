"""What-if replay of one heartbeats partition through the same :class:`Engine`. Kafka-free:
``arcbeat replay`` reads the log (:mod:`arcbeat.streams.replay.log`) and feeds it here.

The engine decides from the log alone: heartbeats with their broker arrival time, and ticks
with the verdicts, the time of the latest mass-silence decision, the maintenance windows and
the deciding settings of the run that wrote them. Fed the same log with the same settings, it
emits the same transitions (the determinism oracle, tests/streams/test_replay.py). Fed with
other settings, it says what those settings would have decided.

A replay reads each partition from its first retained record, so that every machine's state
at the start of the reported range is known; only decisions inside the range are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from arcbeat.streams.decide.decisions_settings import differences
from arcbeat.streams.decide.early_warning import PartitionSample, planned_scopes
from arcbeat.streams.decide.engine import UNSPLIT, Engine
from arcbeat.streams.decide.heartbeat_heads import Parts, split_heartbeat
from arcbeat.streams.decide.mass_silence import Verdict
from arcbeat.streams.decide.output_records import Emit
from arcbeat.streams.decide.timestamps import parse_rfc3339
from arcbeat.streams.kafka import ticks
from arcbeat.streams.kafka.ticks import TICK_HEADER
from arcbeat.streams.settings import Settings


@dataclass(frozen=True, slots=True)
class Change:
    """One decided status change (a StatusChanged record), as the report compares them."""

    key: str
    previous: str | None
    status: str
    reason: str
    decided_at: float  # log time of the decision (a replay's changedAt)
    last_heartbeat_at: float
    detection_delay: float | None
    location: str
    subscription: str
    mass_outage: bool
    maintenance: str | None
    partition: int

    def identity(self) -> tuple[str, str | None, str, str, int, bool, str | None]:
        """What the oracle holds equal: machine, transition, reason and decision time (ms)."""
        return (
            self.key,
            self.previous,
            self.status,
            self.reason,
            round(self.decided_at * 1000),
            self.mass_outage,
            self.maintenance,
        )

    @classmethod
    def from_record(cls, rec: Mapping[str, Any], partition: int) -> Change:
        decided = rec.get("decidedAt") or rec["changedAt"]
        delay = rec.get("detectionDelaySeconds")
        return cls(
            key=str(rec["resourceId"]).lower(),
            previous=rec.get("previousStatus"),
            status=str(rec["status"]),
            reason=str(rec["reason"]),
            decided_at=parse_rfc3339(str(decided)),
            last_heartbeat_at=parse_rfc3339(str(rec["lastHeartbeatAt"])),
            detection_delay=float(delay) if delay is not None else None,
            location=str(rec.get("location", "")),
            subscription=str(rec.get("subscriptionId", "")),
            mass_outage=bool(rec.get("massOutage", False)),
            maintenance=rec.get("maintenance"),
            partition=partition,
        )


@dataclass(frozen=True, slots=True)
class ScopeEvent:
    """A scope-level record of the status topic (ScopeSilent, ScopeRecovered, ScopeDegraded,
    ScopeDegradationCleared)."""

    type: str
    scope: str
    at: float
    machines: int = 0

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> ScopeEvent:
        return cls(
            str(rec["type"]),
            str(rec["scope"]),
            parse_rfc3339(str(rec["at"])),
            int(rec.get("machines") or 0),
        )


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """The deciding settings recorded in the ticks changed at this point of the log."""

    partition: int
    offset: int
    at: float
    changed: dict[str, tuple[Any, Any]]


@dataclass
class PartitionResult:
    """What one partition's replay found (picklable: replays run in parallel processes)."""

    partition: int
    records: int = 0
    heartbeats: int = 0
    ticks: int = 0
    bad_ticks: int = 0
    first_offset: int = -1
    last_offset: int = -1
    last_at: float = 0.0  # log time of the last record read: decisions before it are final
    changes: list[Change] = field(default_factory=list)
    scope_events: list[ScopeEvent] = field(default_factory=list)
    # location -> [received, expected, plannedSeconds] of the availability windows in range
    availability: dict[str, list[float]] = field(default_factory=dict)
    # the deciding settings of the first tick that recorded them, and every change after it
    settings: dict[str, Any] | None = None
    settings_changes: list[SettingsChange] = field(default_factory=list)
    ticks_without_settings: int = 0
    # early warning: the partition's interval samples, and the locations a maintenance
    # window covered at each interval's end (the parent merges them and judges)
    samples: list[PartitionSample] = field(default_factory=list)
    planned: dict[float, set[str]] = field(default_factory=dict)


class PartitionReplay:
    """Feeds one partition's records, in log order, to a fresh engine."""

    def __init__(
        self,
        settings: Settings,
        partition: int,
        *,
        since: float,
        until: float,
        tick_keys: Sequence[bytes] = (),
    ) -> None:
        # fp_seed 0: the fingerprints only speed up plain heartbeats, they decide nothing
        self.engine = Engine(settings, fp_seed=0)
        self.engine.index_for(partition)
        self.p = partition
        self.since = since
        self.until = until
        self.tick_keys = list(tick_keys)
        self.result = PartitionResult(partition)
        # the engine's fast path for plain heartbeats (None with signed heartbeats)
        self.fast = self.engine.fast_heartbeat if self.engine.takes_fast_path() else None
        self._verdicts: dict[str, bool] = {}
        self._current: dict[str, Any] = {}  # the deciding settings of the latest tick

    def feed(
        self,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int,
        headers: Sequence[tuple[str, bytes]],
        parts: Parts | Literal[False] | None = UNSPLIT,
    ) -> None:
        """One record of the log. ``parts``: the message already split and turned down by
        :attr:`fast` (by default it is split and the fast path tried here)."""
        r = self.result
        if r.first_offset < 0:
            r.first_offset = offset
        r.records += 1
        r.last_offset = offset
        at = timestamp_ms / 1000.0
        r.last_at = at
        p = self.p
        if headers and any(h[0] == TICK_HEADER for h in headers):
            self._tick(offset, value, headers, at)
            return
        r.heartbeats += 1
        if parts is False:
            parts = split_heartbeat(value)  # once: the fast path and the general one share it
            if not headers and self.fast is not None and self.fast(p, key, value, at, parts):
                return
        emits, _ = self.engine.handle_message(
            p, offset, key, value, at, topic="replay", wall_now=0.0, headers=headers, parts=parts
        )
        # a message decides at its arrival and closes windows that started before it: before
        # the range, nothing it emits is reported
        if emits and at >= self.since:
            self._collect(emits)

    def _tick(
        self, offset: int, value: bytes | None, headers: Sequence[tuple[str, bytes]], at: float
    ) -> None:
        r = self.result
        tick = ticks.decode(value, headers, self.tick_keys)
        if tick is None:
            r.bad_ticks += 1  # skipped, exactly as the workers skipped it
            return
        r.ticks += 1
        if tick.settings is None:
            r.ticks_without_settings += 1
        elif r.settings is None:
            r.settings = self._current = tick.settings
        else:
            diff = differences(self._current, tick.settings)
            if diff:
                r.settings_changes.append(SettingsChange(self.p, offset, at, diff))
                self._current = tick.settings
        self._recorded_verdicts(tick.verdicts, at)
        emits, _ = self.engine.handle_tick(
            self.p,
            at,
            tick.verdicts,
            wall_now=0.0,
            decided_at=tick.decided_at,
            maintenance=tick.maintenance,
        )
        if emits and at >= self.since:
            self._collect(emits)
        early = self.engine.early_samples
        if early:
            idx = self.engine.partitions[self.p]
            for sample in early:
                r.samples.append(sample)
                end = sample.bucket + self.engine.early.interval
                # not judged: locations in maintenance, and those silent (they page already)
                r.planned[sample.bucket] = planned_scopes(idx.planned.all(), end) | {
                    s for s, v in tick.verdicts.items() if v.silent
                }
            early.clear()

    def _recorded_verdicts(self, verdicts: Mapping[str, Verdict], at: float) -> None:
        """The mass-silence verdicts the ticks carry, as scope events (from the deciding
        partition only: every partition's ticks carry the same ones)."""
        if self.p != 0:
            return
        for scope in sorted(set(verdicts) | set(self._verdicts)):
            v = verdicts.get(scope)
            silent = v is not None and v.silent
            if silent != self._verdicts.get(scope, False):
                self._verdicts[scope] = silent
                since = v.since if v is not None else at
                if self.since <= since < self.until:
                    self.result.scope_events.append(
                        ScopeEvent(
                            "ScopeSilent" if silent else "ScopeRecovered",
                            scope,
                            since,
                            v.machines if v is not None else 0,
                        )
                    )

    def _collect(self, emits: list[Emit]) -> None:
        r = self.result
        for e in emits:
            if e.topic == "status":
                rec = orjson.loads(e.value)
                kind = rec.get("type")
                if kind == "StatusChanged":
                    c = Change.from_record(rec, self.p)
                    if self.since <= c.decided_at < self.until:
                        r.changes.append(c)
                elif kind in ("ScopeDegraded", "ScopeDegradationCleared"):
                    ev = ScopeEvent.from_record(rec)
                    if self.since <= ev.at < self.until:
                        r.scope_events.append(ev)
            elif e.topic == "fleet" and e.value.startswith(b'{"type":"WindowCounts"'):
                rec = orjson.loads(e.value)
                start = parse_rfc3339(rec["windowStart"])
                if self.since <= start < self.until:
                    a = r.availability.setdefault(rec["location"], [0.0, 0.0, 0.0])
                    a[0] += rec["received"]
                    a[1] += rec["expected"]
                    a[2] += rec["plannedSeconds"]
