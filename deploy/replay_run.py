"""Running a replay over every heartbeats partition, in parallel processes (one per core).

Partitions are independent (each one's state is a function of its own log), so they are
split into ``jobs`` groups of about equal size, each replayed by its own process. Each
process reports how many records it has read; the parent draws the progress and gathers
the results.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from arcbeat.deploy.replay_report import Report, Side, oracle, summarize
from arcbeat.streams.decide.decisions_settings import deciding, differences, with_recorded
from arcbeat.streams.decide.early_warning import replay_decisions
from arcbeat.streams.decide.timestamps import rfc3339
from arcbeat.streams.kafka import ticks
from arcbeat.streams.replay.log import (
    PartitionPlan,
    Recorded,
    plan,
    recorded_settings,
    replay_partitions,
)
from arcbeat.streams.replay.partition import Change, PartitionResult, ScopeEvent
from arcbeat.streams.settings import Settings

REPORT_EVERY = 20_000  # records between a process's progress messages


class ReplayError(RuntimeError):
    """The replay could not run (the topic is missing, a process failed)."""


@dataclass
class ReplayRun:
    settings: Settings
    plans: list[PartitionPlan]
    results: list[PartitionResult]
    recorded: Recorded | None
    seconds: float
    jobs: int
    cpu_seconds: float = 0.0  # the replay processes' CPU time, together

    @property
    def records(self) -> int:
        return sum(r.records for r in self.results)

    @property
    def heartbeats(self) -> int:
        return sum(r.heartbeats for r in self.results)

    @property
    def rate(self) -> float:
        """Heartbeats replayed per second of wall time."""
        return self.heartbeats / self.seconds if self.seconds > 0 else 0.0

    def changes(self) -> list[Change]:
        return sorted(
            (c for r in self.results for c in r.changes), key=lambda c: (c.decided_at, c.key)
        )

    def scope_events(self, since: float = -math.inf, until: float = math.inf) -> list[ScopeEvent]:
        """The recorded mass-silence verdicts, and the degraded-scope decisions of this
        replay's settings over its partitions' merged samples."""
        planned: dict[float, set[str]] = {}
        for r in self.results:
            for bucket, scopes in r.planned.items():
                planned.setdefault(bucket, set()).update(scopes)
        samples = [s for r in self.results for s in r.samples]
        degraded = [
            ScopeEvent(d.type, d.scope, d.at, d.late)
            for d in replay_decisions(self.settings, samples, planned)
            if since <= d.at < until
        ]
        events = [e for r in self.results for e in r.scope_events] + degraded
        return sorted(events, key=lambda e: e.at)

    def horizons(self) -> dict[int, float]:
        """Per partition, the log time of the last record read: decisions before it are final
        on both sides (the recorded run may have gone further since)."""
        return {r.partition: r.last_at for r in self.results}


@dataclass
class Bounds:
    """What the replay reads: each partition from its first retained record up to where the
    workers had committed when it began (their outputs up to there are in the status topic)."""

    plans: list[PartitionPlan] = field(default_factory=list)

    @classmethod
    def of(cls, plans: Sequence[PartitionPlan]) -> Bounds:
        out = []
        for p in plans:
            end = p.end if p.committed is None else min(p.end, p.committed)
            out.append(PartitionPlan(p.partition, p.start, max(end, p.start), p.committed))
        return cls(out)

    def total(self) -> int:
        return sum(p.end - p.start for p in self.plans)


def split(plans: Sequence[PartitionPlan], jobs: int) -> list[list[PartitionPlan]]:
    """Partitions into ``jobs`` groups of about equal records (largest first, greedy)."""
    groups: list[list[PartitionPlan]] = [[] for _ in range(max(1, jobs))]
    sizes = [0] * len(groups)
    for p in sorted(plans, key=lambda p: p.end - p.start, reverse=True):
        i = sizes.index(min(sizes))
        groups[i].append(p)
        sizes[i] += p.end - p.start
    return [g for g in groups if g]


def _child(
    settings: Settings,
    plans: list[PartitionPlan],
    since: float,
    until: float,
    tick_keys: list[bytes],
    recorded: bool,
    out: mp.Queue[tuple[str, Any]],
) -> None:
    pending = 0

    def progress(n: int) -> None:
        nonlocal pending
        pending += n
        if pending >= REPORT_EVERY:
            out.put(("progress", pending))
            pending = 0

    try:
        results, rec = replay_partitions(
            settings,
            plans,
            since=since,
            until=until,
            tick_keys=tick_keys,
            progress=progress,
            recorded=recorded,
        )
        out.put(("progress", pending))
        out.put(("done", (results, rec, time.process_time())))
    except BaseException as exc:  # reported to the parent, which says what failed
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def default_jobs() -> int:
    return max(1, min(2, len(os.sched_getaffinity(0))))


def run(
    settings: Settings,
    *,
    since: float,
    until: float,
    jobs: int | None = None,
    tick_keys: Sequence[bytes] = (),
    recorded: bool = True,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    bounds: Bounds | None = None,
) -> ReplayRun:
    """Replay [since, until) of the heartbeats log with ``settings``; with ``recorded``, also
    read what the workers decided in it (the status topic)."""
    if bounds is None:
        try:
            bounds = Bounds.of(asyncio.run(plan(settings)))
        except LookupError as exc:
            raise ReplayError(str(exc)) from None
    jobs = jobs or default_jobs()
    groups = split(bounds.plans, jobs)
    total = bounds.total()
    ctx = mp.get_context("fork")
    q: mp.Queue[tuple[str, Any]] = ctx.Queue()
    t0 = time.monotonic()
    procs = [
        ctx.Process(
            target=_child,
            args=(settings, g, since, until, list(tick_keys), recorded, q),
            name=f"arcbeat-replay-{i}",
            daemon=True,
        )
        for i, g in enumerate(groups)
    ]
    for pr in procs:
        pr.start()
    done = 0
    results: list[PartitionResult] = []
    recorded_all: Recorded | None = Recorded([], []) if recorded else None
    finished = 0
    cpu_seconds = 0.0
    try:
        while finished < len(procs):
            try:
                kind, payload = q.get(timeout=0.5)
            except queue.Empty:
                if not any(pr.is_alive() for pr in procs):
                    raise ReplayError("a replay process ended without a result") from None
                continue
            if kind == "progress":
                done += int(payload)
                on_progress(done, total)
            elif kind == "done":
                res, rec, cpu = payload
                cpu_seconds += cpu
                results.extend(res)
                if rec is not None and recorded_all is not None:
                    recorded_all.changes.extend(rec.changes)
                    recorded_all.scope_events.extend(rec.scope_events)
                finished += 1
            else:
                raise ReplayError(f"a replay process failed: {payload}")
    finally:
        for pr in procs:
            pr.join(timeout=5)
            if pr.is_alive():
                pr.kill()
    results.sort(key=lambda r: r.partition)
    return ReplayRun(
        settings,
        bounds.plans,
        results,
        recorded_all,
        time.monotonic() - t0,
        len(procs),
        cpu_seconds,
    )


# ---- what-if: the report, or why there is none ------------------------------------------------


class Refusal(ReplayError):
    """The comparison would mislead: the message says why and what to do instead."""


def parse_overrides(pairs: Sequence[str], option: str = "--set") -> dict[str, Any]:
    """``name=value`` pairs (flat setting names, values as in ARCBEAT_* variables)."""
    from arcbeat.deploy.settings import Settings
    from arcbeat.streams.settings import SettingsError

    out: dict[str, Any] = {}
    for pair in pairs:
        name, eq, raw = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or not name:
            raise SettingsError(f"{option} {pair!r}: write name=value, e.g. disconnect_after=20m")
        where = f"{option} {pair}"
        out[name] = Settings.setting(name, where).convert(raw.strip(), where)
    return out


@dataclass
class WhatIf:
    since: float
    until: float
    overrides: dict[str, Any] = field(default_factory=dict)
    # None: against the recorded run (the status topic); else a second replay with these
    against: dict[str, Any] | None = None
    alert_for: float = 60.0
    short: float = 600.0
    lookahead: float = 3600.0
    jobs: int | None = None


def _final(changes: Iterable[Change], horizons: Mapping[int, float]) -> list[Change]:
    return [c for c in changes if c.decided_at < horizons.get(c.partition, math.inf)]


def _refusals(run_: ReplayRun, *, base: Mapping[str, Any] | None) -> list[str]:
    why = []
    mid = [p for p in run_.plans if p.start > 0 and p.end > p.start]
    if mid:
        p = mid[0]
        why.append(
            f"the retained log of partition {p.partition} starts at offset {p.start}, after "
            f"its first record (retention removed the start): the state of its machines at "
            f"the start of the range is unknown, so transitions near it would differ for that "
            f"reason alone ({len(mid)} partitions like it). Compare two settings sets instead "
            f"(--against-set), which start from the same unknown state"
        )
    changes = [c for r in run_.results for c in r.settings_changes]
    seen = {orjson_key(r.settings) for r in run_.results if r.settings is not None}
    if changes:
        c = min(changes, key=lambda c: c.at)
        diff = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in c.changed.items())
        why.append(
            f"the workers' settings changed at {rfc3339(c.at)} (partition {c.partition}, "
            f"offset {c.offset}: {diff}): one replay has one set of settings, so one side "
            f"of the comparison would be wrong. Compare a range after the change "
            f"(--from {rfc3339(c.at + 1)}) once the log before it has aged out, or two "
            f"settings sets (--against-set)"
        )
    elif len(seen) > 1:
        why.append(
            "the partitions' ticks record different settings (workers with different "
            "configurations ran side by side): no single replay reproduces them"
        )
    bad = sum(r.bad_ticks for r in run_.results)
    good = sum(r.ticks for r in run_.results)
    if bad and not good:
        why.append(
            f"none of the {bad} ticks could be read: they are signed and the replay does "
            f"not have the key (set tick_key_file, ARCBEAT_TICK_KEY_FILE, as the workers do)"
        )
    del base
    return why


def orjson_key(d: Mapping[str, Any]) -> str:
    return orjson.dumps(dict(d), option=orjson.OPT_SORT_KEYS).decode()


def what_if(
    settings: Settings,
    spec: WhatIf,
    *,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> tuple[Report, int]:
    """Replay the range and build the report. Returns it and the exit code (0; 1 when the
    oracle differs). Raises :class:`Refusal` when a comparison would mislead."""
    keys = ticks.read_keys(settings.identity.tick_key_file)
    try:
        bounds = Bounds.of(asyncio.run(plan(settings)))
        recorded = asyncio.run(recorded_settings(settings, bounds.plans, keys))
    except LookupError as exc:
        raise ReplayError(str(exc)) from None
    except KafkaError as exc:
        raise ReplayError(
            f"cannot read the logs at {settings.kafka.bootstrap} ({exc}): check "
            "ARCBEAT_KAFKA_BOOTSTRAP and that the cluster is up"
        ) from None
    base = with_recorded(settings, recorded) if recorded is not None else settings
    right_settings = base.replace(**spec.overrides) if spec.overrides else base
    notes = []
    if recorded is None:
        notes.append(
            "the ticks do not record the workers' settings: the replay assumed the "
            "configured ones (ARCBEAT_*, arcbeat.toml)"
        )
    verdict_settings = sorted(
        {"outage_ratio", "outage_min_machines"} & (set(spec.overrides) | set(spec.against or {}))
    )
    if verdict_settings:
        notes.append(
            f"{', '.join(verdict_settings)} decide the mass-silence verdicts, which the "
            "replay takes from the ticks as recorded: holds and ScopeSilent follow the "
            "recorded verdicts, not these values"
        )
    against_recorded = spec.against is None
    total = bounds.total() * (1 if against_recorded else 2)
    offset = 0

    def progress(done: int, _total: int) -> None:
        on_progress(offset + done, total)

    right = run(
        right_settings,
        since=spec.since,
        until=spec.until,
        jobs=spec.jobs,
        tick_keys=keys,
        recorded=against_recorded,
        on_progress=progress,
        bounds=bounds,
    )
    horizons = right.horizons()
    if against_recorded:
        why = _refusals(right, base=recorded)
        if why:
            raise Refusal("; and ".join(why))
        assert right.recorded is not None
        left_settings = base
        left = Side("recorded", _final(right.recorded.changes, horizons),
                    sorted(right.recorded.scope_events, key=lambda e: e.at))  # fmt: skip
    else:
        left_settings = base.replace(**(spec.against or {}))
        offset = bounds.total()
        other = run(
            left_settings,
            since=spec.since,
            until=spec.until,
            jobs=spec.jobs,
            tick_keys=keys,
            recorded=False,
            on_progress=progress,
            bounds=bounds,
        )
        left = Side(
            "settings A",
            _final(other.changes(), horizons),
            other.scope_events(spec.since, spec.until),
            _availability(other),
        )
    right_side = Side(
        "replay" if against_recorded else "settings B",
        _final(right.changes(), horizons),
        right.scope_events(spec.since, spec.until),
        _availability(right),
    )
    until = min(spec.until, max(horizons.values(), default=spec.until))
    kw = {"until": until, "alert_for": spec.alert_for, "short": spec.short,
          "lookahead": spec.lookahead}  # fmt: skip
    changed = differences(deciding(left_settings), deciding(right_settings))
    report = Report(
        spec.since,
        spec.until,
        summarize(left, **kw),
        summarize(right_side, **kw),
        {k: list(v) for k, v in changed.items()},
        {
            "heartbeats": right.heartbeats,
            "records": right.records,
            "seconds": round(right.seconds, 3),
            "rate": round(right.rate),
            "jobs": right.jobs,
        },
        notes=notes,
    )
    code = 0
    if against_recorded and not changed:
        report.oracle = oracle(left.changes, right_side.changes)
        code = 0 if report.oracle.identical else 1
    return report, code


def _availability(run_: ReplayRun) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in run_.results:
        for loc, a in r.availability.items():
            t = out.setdefault(loc, [0.0, 0.0, 0.0])
            for i in range(3):
                t[i] += a[i]
    return out
