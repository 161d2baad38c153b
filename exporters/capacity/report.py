"""Counting the fleet into a :class:`~arcbeat.exporters.capacity.model.CapacityReport`."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arcbeat.exporters.capacity.forecast import CapacityHistory, days_to_limit
from arcbeat.exporters.capacity.model import (
    MACHINES_PER_RESOURCE_GROUP,
    RESOURCE_GROUPS_PER_SUBSCRIPTION,
    TAGS_PER_MACHINE,
    TENANT_OBJECTS,
    TENANT_SCOPE,
    CapacityLimits,
    CapacityReport,
    CapacityUse,
    MachineSummary,
    OsCount,
    resource_group_scope,
    subscription_scope,
)
from arcbeat.exporters.capacity.os_rules import (
    SUPPORTED_OPERATING_SYSTEMS,
    WINDOWS_MINIMUM,
    OsRule,
    os_supported,
)
from arcbeat.streams.decide.fleet_summary import FleetSummary

_VERSION_PART = re.compile(r"\d+|[^\d.]+")


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    # Numeric parts compare as numbers ("0.10" > "0.9"); text parts sort below numbers.
    return tuple(
        (1, int(p)) if p.isdigit() else (0, p) for p in _VERSION_PART.findall(version.lower())
    )


def build_report(
    machines: Iterable[MachineSummary],
    limits: CapacityLimits,
    *,
    regions: Sequence[str] = ("*",),
    supported_os: Sequence[OsRule] = SUPPORTED_OPERATING_SYSTEMS,
    history: CapacityHistory | Mapping[tuple[str, str], Sequence[tuple[float, int]]] | None = None,
    now: float | None = None,
) -> CapacityReport:
    """Count the fleet and compare with ``limits``.

    ``regions`` are the supported regions (``*`` accepts any, as in settings). ``history``
    gives past ``(unix seconds, used)`` samples per (kind, scope); the current count is
    appended before fitting the days-to-limit forecast.
    """
    total = 0
    per_rg: Counter[tuple[str, str]] = Counter()
    per_loc: Counter[str] = Counter()
    tag_counts: Counter[int] = Counter()
    os_counts: Counter[tuple[str, str]] = Counter()
    agents: Counter[str] = Counter()
    for m in machines:
        total += 1
        # Resource Manager names are case-insensitive: count lower-cased.
        per_rg[(m.subscription_id.lower(), m.resource_group.lower())] += 1
        per_loc[m.location.lower()] += 1
        tag_counts[m.tag_count] += 1
        os_counts[(m.os_name.strip(), m.os_version.strip())] += 1
        agents[m.agent_version] += 1
    counts = _Counts(total, per_rg, per_loc, tag_counts, os_counts, agents)
    return _report(
        counts, limits, regions=regions, supported_os=supported_os, history=history, now=now
    )


def build_report_from_summary(
    summary: FleetSummary,
    limits: CapacityLimits,
    *,
    regions: Sequence[str] = ("*",),
    supported_os: Sequence[OsRule] = SUPPORTED_OPERATING_SYSTEMS,
    history: CapacityHistory | Mapping[tuple[str, str], Sequence[tuple[float, int]]] | None = None,
    now: float | None = None,
) -> CapacityReport:
    """:func:`build_report` from the workers' merged ``GET /capacity`` counts (no per-machine
    objects: the summary is already what the report counts). Same result as ``build_report``
    over the same machines, plus a note when the summary misses partitions (counts are low).
    """
    counts = _Counts(
        total=summary.machines,
        per_rg=summary.resource_groups,
        per_loc=summary.locations,
        tag_counts=summary.tag_counts,
        os=summary.operating_systems,
        agents=summary.agent_versions,
    )
    notes: list[str] = []
    if not summary.complete:
        missing = summary.missing_partitions
        notes.append(
            f"incomplete: the workers' counts cover {len(summary.partitions)} of "
            f"{summary.partitions_total} partitions (missing {', '.join(map(str, missing))}; "
            "a worker is starting or rebalancing): counts are low"
        )
    return _report(
        counts,
        limits,
        regions=regions,
        supported_os=supported_os,
        history=history,
        now=now,
        extra_notes=notes,
    )


@dataclass(slots=True)
class _Counts:
    """What a report is computed from: machine counts per key (keys as in FleetSummary)."""

    total: int = 0
    per_rg: Mapping[tuple[str, str], int] = field(default_factory=Counter)
    per_loc: Mapping[str, int] = field(default_factory=Counter)
    tag_counts: Mapping[int, int] = field(default_factory=Counter)
    os: Mapping[tuple[str, str], int] = field(default_factory=Counter)  # stripped name, version
    agents: Mapping[str, int] = field(default_factory=Counter)  # raw version ("" = unknown)


def _most_first(counts: Mapping[Any, int]) -> list[tuple[Any, int]]:
    # Ties by key, so the output does not depend on the order machines were counted in.
    return sorted(((k, n) for k, n in counts.items() if n), key=lambda kv: (-kv[1], kv[0]))


def _report(
    counts: _Counts,
    limits: CapacityLimits,
    *,
    regions: Sequence[str],
    supported_os: Sequence[OsRule],
    history: CapacityHistory | Mapping[tuple[str, str], Sequence[tuple[float, int]]] | None,
    now: float | None,
    extra_notes: Sequence[str] = (),
) -> CapacityReport:
    at = time.time() if now is None else now
    total = counts.total
    per_rg = {k: n for k, n in counts.per_rg.items() if n}
    per_sub: Counter[str] = Counter()
    rgs_of_sub: Counter[str] = Counter()
    for (sub, _rg), n in per_rg.items():
        per_sub[sub] += n
        rgs_of_sub[sub] += 1  # keys are distinct (sub, rg): one per resource group
    tag_counts = {c: n for c, n in counts.tag_counts.items() if n}
    bad_os: Counter[tuple[str, str]] = Counter()
    unknown_os = 0
    for (name, version), n in counts.os.items():
        supported = os_supported(name, version, supported_os)
        if supported is None:
            unknown_os += n
        elif not supported:
            bad_os[(name, version)] += n
    any_region = "*" in regions
    region_set = {r.lower() for r in regions}
    bad_region: Counter[str] = Counter()
    if not any_region:
        for loc, n in counts.per_loc.items():
            if loc not in region_set:
                bad_region[loc] += n
    agents: Counter[str] = Counter()
    for version, n in counts.agents.items():
        agents[version or "unknown"] += n

    def past(kind: str, scope: str) -> Sequence[tuple[float, int]]:
        if history is None:
            return ()
        if isinstance(history, CapacityHistory):
            return history.series(kind, scope)
        return history.get((kind, scope), ())

    def use(kind: str, scope: str, used: int, limit: int) -> CapacityUse:
        samples = [s for s in past(kind, scope) if s[0] < at]
        samples.append((at, used))
        return CapacityUse(kind, scope, used, limit, days_to_limit(samples, limit, now=at))

    checks: list[CapacityUse] = []
    if limits.resource_groups_per_subscription > 0:
        for sub, rgs in rgs_of_sub.items():
            checks.append(
                use(
                    RESOURCE_GROUPS_PER_SUBSCRIPTION,
                    subscription_scope(sub),
                    rgs,
                    limits.resource_groups_per_subscription,
                )
            )
    if limits.machines_per_resource_group > 0:
        for (sub, rg), n in per_rg.items():
            checks.append(
                use(
                    MACHINES_PER_RESOURCE_GROUP,
                    resource_group_scope(sub, rg),
                    n,
                    limits.machines_per_resource_group,
                )
            )
    max_tags = max(tag_counts, default=0)
    if limits.tags_per_machine > 0:
        checks.append(use(TAGS_PER_MACHINE, TENANT_SCOPE, max_tags, limits.tags_per_machine))
    if limits.tenant_objects > 0:
        checks.append(use(TENANT_OBJECTS, TENANT_SCOPE, total, limits.tenant_objects))
    checks.sort(key=lambda u: (-u.ratio, u.kind, u.scope))

    tag_limit = limits.tags_per_machine
    at_limit = tag_counts.get(tag_limit, 0) if tag_limit > 0 else 0
    over_limit = sum(n for c, n in tag_counts.items() if tag_limit > 0 and c > tag_limit)
    versions = sorted(agents, key=lambda v: (v != "unknown", _version_key(v), v), reverse=True)
    known = [v for v in versions if v != "unknown"]
    latest = known[0] if known else None
    notes: list[str] = []
    if limits.machines_per_resource_group <= 0:
        notes.append("machines per resource group: check switched off (limit 0)")
    notes.extend(extra_notes)
    return CapacityReport(
        generated_at=at,
        machines=total,
        limits=limits,
        checks=tuple(checks),
        machines_per_subscription=dict(_most_first(per_sub)),
        machines_per_resource_group={f"{sub}/{rg}": n for (sub, rg), n in _most_first(per_rg)},
        machines_per_location=dict(_most_first(counts.per_loc)),
        max_tags=max_tags,
        machines_at_tag_limit=at_limit,
        machines_over_tag_limit=over_limit,
        unsupported_os=tuple(
            OsCount(name, version, n) for (name, version), n in _most_first(bad_os)
        ),
        unknown_os_machines=unknown_os,
        supported_os=(f"{WINDOWS_MINIMUM} and higher", *(r.label for r in supported_os)),
        unsupported_regions=dict(_most_first(bad_region)),
        supported_regions=tuple(regions),
        agent_versions={v: agents[v] for v in versions},
        latest_agent_version=latest,
        machines_not_on_latest_agent=total - agents[latest] if latest else 0,
        notes=tuple(notes),
    )
