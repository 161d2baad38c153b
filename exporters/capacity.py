"""Capacity planning: use, limits, headroom and a days-to-limit forecast
(docs/metrics-alerts-history.md, Capacity planning).

Pure: the input is an iterable of :class:`MachineSummary` (or the workers' merged
:class:`~arcbeat.streams.fleet_summary.FleetSummary`, see :func:`build_report_from_summary`)
plus :class:`CapacityLimits`; the output is a :class:`CapacityReport`. Nothing here does
I/O, so the same model feeds ``arcbeat capacity`` (table or JSON), the ``arcbeat_capacity_*``
Prometheus metrics (:class:`CapacityCollector`) and the InfluxDB ``capacity`` history.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from arcbeat.streams.fleet_summary import FleetSummary
from arcbeat.streams.settings import Settings

# Check kinds, as in the metric label `kind` of the arcbeat_capacity_* metrics.
RESOURCE_GROUPS_PER_SUBSCRIPTION: Final = "resource_groups_per_subscription"
MACHINES_PER_RESOURCE_GROUP: Final = "machines_per_resource_group"
TAGS_PER_MACHINE: Final = "tags_per_machine"
TENANT_OBJECTS: Final = "tenant_objects"
KINDS: Final = (
    RESOURCE_GROUPS_PER_SUBSCRIPTION,
    MACHINES_PER_RESOURCE_GROUP,
    TAGS_PER_MACHINE,
    TENANT_OBJECTS,
)

# Alert thresholds (ArcCapacityWarning / ArcCapacityCritical).
WARNING_RATIO: Final = 0.80
CRITICAL_RATIO: Final = 0.95

Level = Literal["ok", "warning", "critical", "over"]


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class MachineSummary:
    """What capacity planning needs to know about one machine."""

    subscription_id: str
    resource_group: str
    location: str
    tag_count: int = 0
    os_name: str = ""
    os_version: str = ""
    agent_version: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> MachineSummary:
        """From a camelCase record (heartbeat, status event or worker API row).

        ``tags`` (an object) or ``tagCount`` give the tag count.
        """
        missing = [k for k in ("subscriptionId", "resourceGroup", "location") if not data.get(k)]
        if missing:
            raise ValueError(
                f"machine record lacks {', '.join(missing)}: capacity needs subscriptionId, "
                f"resourceGroup and location (got keys {sorted(data)})"
            )
        tags = data.get("tags")
        tag_count = len(tags) if isinstance(tags, Mapping) else int(data.get("tagCount", 0) or 0)
        return cls(
            subscription_id=str(data["subscriptionId"]),
            resource_group=str(data["resourceGroup"]),
            location=str(data["location"]),
            tag_count=tag_count,
            os_name=str(data.get("osName") or ""),
            os_version=str(data.get("osVersion") or ""),
            agent_version=str(data.get("agentVersion") or ""),
        )


@dataclass(frozen=True, slots=True)
class CapacityLimits:
    """Limits to compare with; 0 switches a check off (Arc machines are exempt from the
    per-resource-group limit today, so that one is commonly off)."""

    resource_groups_per_subscription: int = 980
    machines_per_resource_group: int = 800
    tags_per_machine: int = 50
    tenant_objects: int = 50_000

    @classmethod
    def from_settings(cls, settings: Settings) -> CapacityLimits:
        return cls(
            resource_groups_per_subscription=settings.limit_resource_groups_per_subscription,
            machines_per_resource_group=settings.limit_machines_per_resource_group,
            tags_per_machine=settings.limit_tags_per_machine,
            tenant_objects=settings.limit_tenant_objects,
        )


# --------------------------------------------------------------------------- supported OS


@dataclass(frozen=True, slots=True)
class OsRule:
    """One supported operating system: ``names`` are lower-case prefixes of ``osName``;
    ``versions`` are accepted ``osVersion`` values (``7`` accepts ``7`` and ``7.9``)."""

    label: str
    names: tuple[str, ...]
    versions: tuple[str, ...]

    def matches(self, os_name: str, os_version: str) -> bool:
        name = os_name.strip().lower()
        if not any(name.startswith(n) for n in self.names):
            return False
        version = os_version.strip().lower()
        return any(
            version == v or version.startswith(v + ".") or version.startswith(v + " ")
            for v in self.versions
        )


# The supported operating systems (the capacity report counts the others). Windows is matched
# by _windows_supported (2012 R2 and higher); the rest by OsRule. Pass another tuple to
# build_report to change what counts as supported.
SUPPORTED_OPERATING_SYSTEMS: Final[tuple[OsRule, ...]] = (
    OsRule("Ubuntu 16.04, 18.04", ("ubuntu",), ("16.04", "18.04")),
    OsRule("CentOS 7", ("centos",), ("7",)),
    OsRule("SLES 15", ("sles", "suse linux enterprise server"), ("15",)),
    OsRule("RHEL 7", ("rhel", "red hat enterprise linux"), ("7",)),
    OsRule("Amazon Linux 7", ("amazon linux",), ("7",)),
)
WINDOWS_MINIMUM: Final = "Windows Server 2012 R2"

_WINDOWS_YEAR = re.compile(r"windows server (\d{4})( r2)?")
_WINDOWS_KERNEL = re.compile(r"^(\d+)\.(\d+)")


def _windows_supported(os_name: str, os_version: str) -> bool | None:
    """True/False for Windows, None when the machine is not Windows."""
    name = os_name.strip().lower()
    if not name.startswith("windows"):
        return None
    m = _WINDOWS_YEAR.search(name)
    if m:
        year = int(m.group(1))
        return year > 2012 or (year == 2012 and m.group(2) is not None)
    if not name.startswith("windows server"):
        return False  # client Windows (10, 11) is not a supported Arc server OS here
    k = _WINDOWS_KERNEL.match(os_version.strip())
    # 6.3 is the 2012 R2 kernel; 10.0 covers 2016 and later.
    return k is not None and (int(k.group(1)), int(k.group(2))) >= (6, 3)


def os_supported(
    os_name: str, os_version: str, rules: Sequence[OsRule] = SUPPORTED_OPERATING_SYSTEMS
) -> bool | None:
    """True/False, or None when the machine did not report its OS (cannot tell)."""
    if not os_name.strip():
        return None
    windows = _windows_supported(os_name, os_version)
    if windows is not None:
        return windows
    return any(rule.matches(os_name, os_version) for rule in rules)


# --------------------------------------------------------------------------- forecast


def days_to_limit(
    history: Sequence[tuple[float, int | float]], limit: int | float, now: float | None = None
) -> float | None:
    """Days until ``limit`` is reached, by least-squares linear growth over ``history``.

    ``history`` is ``(unix seconds, used)`` samples in any order. Returns None when there is
    no limit, fewer than two distinct times, or the fitted trend is not growing; 0.0 when
    the trend is already at or past the limit. Counted from ``now`` (default: last sample).
    """
    if limit <= 0 or len(history) < 2:
        return None
    n = len(history)
    mean_t = math.fsum(t for t, _ in history) / n
    mean_y = math.fsum(y for _, y in history) / n
    # Centre the times: unix seconds squared would lose precision in the sums.
    sxx = math.fsum((t - mean_t) ** 2 for t, _ in history)
    if sxx <= 0:
        return None
    sxy = math.fsum((t - mean_t) * (y - mean_y) for t, y in history)
    slope = sxy / sxx  # per second
    # Relative tolerance: rounding in the sums must not turn a flat series into "growing".
    span = max(t for t, _ in history) - min(t for t, _ in history)
    scale = max(1.0, max(abs(y) for _, y in history))
    if slope * span <= 1e-9 * scale:
        return None
    start = max(t for t, _ in history) if now is None else now
    fitted_now = mean_y + slope * (start - mean_t)
    remaining = (limit - fitted_now) / slope
    return max(0.0, remaining / 86400.0)


class CapacityHistory:
    """Bounded in-memory growth history per (kind, scope), for :func:`days_to_limit`.

    Pre-fill it from the InfluxDB ``capacity`` measurement after a restart with :meth:`add`.
    """

    def __init__(self, max_samples: int = 1000) -> None:
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2 to fit a trend, got {max_samples}")
        self._max = max_samples
        self._series: dict[tuple[str, str], deque[tuple[float, int]]] = {}

    def add(self, kind: str, scope: str, at: float, used: int) -> None:
        series = self._series.setdefault((kind, scope), deque(maxlen=self._max))
        if series and at <= series[-1][0]:
            if at == series[-1][0]:
                series[-1] = (at, used)  # same aligned time: the newer count wins
            return  # older than what we have: ignore, history only moves forward
        series.append((at, used))

    def record(self, report: CapacityReport, *, at: float | None = None) -> None:
        """Append the report's counts at ``at`` (default: when it was generated).

        A long-running recorder passes an aligned ``at`` (e.g. the hour): reports within one
        step then replace each other, so memory holds one sample per step per scope.
        """
        when = report.generated_at if at is None else at
        for use in report.checks:
            self.add(use.kind, use.scope, when, use.used)

    def series(self, kind: str, scope: str) -> Sequence[tuple[float, int]]:
        return tuple(self._series.get((kind, scope), ()))

    def __len__(self) -> int:
        return len(self._series)


# Growth history is kept per hour: a long-running recorder and a restart's pre-fill from
# InfluxDB hold one sample per hour per scope, at most HISTORY_SAMPLES (about six weeks).
HISTORY_STEP: Final = 3600.0
HISTORY_SAMPLES: Final = 1000

# Pre-fill query (InfluxQL, epoch=s): the last count of each hour, per kind and scope.
HISTORY_QUERY: Final = (
    'SELECT last("used") AS "used" FROM "capacity" '
    f"WHERE time > now() - {int(HISTORY_SAMPLES * HISTORY_STEP // 3600)}h "
    f'GROUP BY time({int(HISTORY_STEP)}s), "kind", "scope" fill(none)'
)


def history_step(at: float) -> float:
    """``at`` aligned down to the history step (pass to :meth:`CapacityHistory.record`)."""
    return at // HISTORY_STEP * HISTORY_STEP


def history_from_influxql(body: Mapping[str, Any], history: CapacityHistory) -> int:
    """Add the rows of a :data:`HISTORY_QUERY` answer (``/query?epoch=s`` JSON) to
    ``history``; returns the samples added. Raises ValueError naming what is malformed."""
    added = 0
    results = body.get("results")
    if not isinstance(results, list):
        raise ValueError(f"InfluxDB answer has no 'results' list: {str(body)[:200]}")
    for result in results:
        error = result.get("error")
        if error:
            if "database not found" in str(error):
                continue  # nothing written yet: an empty history
            raise ValueError(f"InfluxDB refused the capacity history query: {error}")
        for series in result.get("series") or []:
            tags = series.get("tags") or {}
            kind, scope = str(tags.get("kind", "")), str(tags.get("scope", ""))
            columns = series.get("columns") or ["time", "used"]
            t_col, u_col = columns.index("time"), columns.index("used")
            for row in series.get("values") or []:
                if row[u_col] is not None:
                    history.add(kind, scope, float(row[t_col]), int(row[u_col]))
                    added += 1
    return added


# --------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class CapacityUse:
    """One check: ``used`` of ``limit`` in ``scope``."""

    kind: str
    scope: str
    used: int
    limit: int
    days_to_limit: float | None = None

    @property
    def headroom(self) -> int:
        return self.limit - self.used

    @property
    def ratio(self) -> float:
        return self.used / self.limit if self.limit > 0 else 0.0

    @property
    def level(self) -> Level:
        if self.used > self.limit:
            return "over"
        if self.ratio >= CRITICAL_RATIO:
            return "critical"
        if self.ratio >= WARNING_RATIO:
            return "warning"
        return "ok"


@dataclass(frozen=True, slots=True)
class OsCount:
    os_name: str
    os_version: str
    machines: int


@dataclass(frozen=True, slots=True)
class CapacityReport:
    generated_at: float
    machines: int
    limits: CapacityLimits
    checks: tuple[CapacityUse, ...]  # sorted: highest ratio first
    machines_per_subscription: Mapping[str, int]
    machines_per_resource_group: Mapping[str, int]  # key "<subscription>/<resource group>"
    machines_per_location: Mapping[str, int]
    max_tags: int
    machines_at_tag_limit: int  # tag count == limit: no tag can be added
    machines_over_tag_limit: int
    unsupported_os: tuple[OsCount, ...]
    unknown_os_machines: int
    supported_os: tuple[str, ...]
    unsupported_regions: Mapping[str, int]
    supported_regions: tuple[str, ...]
    agent_versions: Mapping[str, int]  # newest first
    latest_agent_version: str | None
    machines_not_on_latest_agent: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def unsupported_os_machines(self) -> int:
        return sum(o.machines for o in self.unsupported_os)

    @property
    def unsupported_region_machines(self) -> int:
        return sum(self.unsupported_regions.values())

    def check(self, kind: str, scope: str) -> CapacityUse | None:
        for use in self.checks:
            if use.kind == kind and use.scope == scope:
                return use
        return None

    def worst(self, kind: str) -> CapacityUse | None:
        """The scope of ``kind`` closest to its limit."""
        return next((u for u in self.checks if u.kind == kind), None)


def subscription_scope(subscription_id: str) -> str:
    return f"subscription={subscription_id}"


def resource_group_scope(subscription_id: str, resource_group: str) -> str:
    return f"resource_group={subscription_id}/{resource_group}"


TENANT_SCOPE: Final = "tenant"

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


# --------------------------------------------------------------------------- output


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _use_dict(u: CapacityUse) -> dict[str, Any]:
    return {
        "kind": u.kind,
        "scope": u.scope,
        "used": u.used,
        "limit": u.limit,
        "headroom": u.headroom,
        "ratio": round(u.ratio, 6),
        "level": u.level,
        "daysToLimit": None if u.days_to_limit is None else round(u.days_to_limit, 3),
    }


def report_to_dict(report: CapacityReport) -> dict[str, Any]:
    """The ``arcbeat capacity --json`` document (camelCase, like the wire format)."""
    return {
        "generatedAt": _iso(report.generated_at),
        "machines": report.machines,
        "limits": {
            RESOURCE_GROUPS_PER_SUBSCRIPTION: report.limits.resource_groups_per_subscription,
            MACHINES_PER_RESOURCE_GROUP: report.limits.machines_per_resource_group,
            TAGS_PER_MACHINE: report.limits.tags_per_machine,
            TENANT_OBJECTS: report.limits.tenant_objects,
        },
        "checks": [_use_dict(u) for u in report.checks],
        "machinesPerSubscription": dict(report.machines_per_subscription),
        "machinesPerResourceGroup": dict(report.machines_per_resource_group),
        "machinesPerLocation": dict(report.machines_per_location),
        "tags": {
            "max": report.max_tags,
            "limit": report.limits.tags_per_machine,
            "machinesAtLimit": report.machines_at_tag_limit,
            "machinesOverLimit": report.machines_over_tag_limit,
        },
        "unsupportedOs": {
            "machines": report.unsupported_os_machines,
            "unknown": report.unknown_os_machines,
            "supported": list(report.supported_os),
            "byOs": [
                {"osName": o.os_name, "osVersion": o.os_version, "machines": o.machines}
                for o in report.unsupported_os
            ],
        },
        "unsupportedRegions": {
            "machines": report.unsupported_region_machines,
            "supported": list(report.supported_regions),
            "byLocation": dict(report.unsupported_regions),
        },
        "agentVersions": {
            "latest": report.latest_agent_version,
            "machinesNotOnLatest": report.machines_not_on_latest_agent,
            "byVersion": dict(report.agent_versions),
        },
        "notes": list(report.notes),
    }


def report_to_json(report: CapacityReport) -> str:
    return orjson.dumps(report_to_dict(report), option=orjson.OPT_INDENT_2).decode() + "\n"


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1
) -> list[str]:
    """Plain-text table: the first ``text_columns`` left-aligned, the rest (numbers) right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.ljust(w) if i < text_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _days(d: float | None) -> str:
    if d is None:
        return "-"
    return "0" if d == 0 else f"{d:.1f}"


def render_table(report: CapacityReport, top: int = 20) -> str:
    """The ``arcbeat capacity`` text report; ``top`` scopes closest to their limits."""
    out: list[str] = [
        f"Capacity report at {_iso(report.generated_at)}: {report.machines} machines, "
        f"{len(report.machines_per_subscription)} subscriptions, "
        f"{len(report.machines_per_resource_group)} resource groups, "
        f"{len(report.machines_per_location)} locations",
        "",
    ]
    shown = report.checks[:top]
    out.append(
        f"Limits (closest first, {len(shown)} of {len(report.checks)}; "
        f"warning at {WARNING_RATIO:.0%}, critical at {CRITICAL_RATIO:.0%}):"
    )
    out += _table(
        ["level", "kind", "scope", "used", "limit", "headroom", "use", "days to limit"],
        [
            [
                u.level,
                u.kind,
                u.scope,
                str(u.used),
                str(u.limit),
                str(u.headroom),
                f"{u.ratio:.1%}",
                _days(u.days_to_limit),
            ]
            for u in shown
        ],
        text_columns=3,
    )
    for note in report.notes:
        out.append(f"note: {note}")
    out.append("")
    out.append("Machines per location:")
    out += _table(
        ["location", "machines"],
        [[loc, str(n)] for loc, n in report.machines_per_location.items()],
    )
    out.append("")
    out.append("Machines per subscription:")
    out += _table(
        ["subscription", "machines"],
        [[s, str(n)] for s, n in list(report.machines_per_subscription.items())[:top]],
    )
    out.append("")
    out.append(
        f"Tags: at most {report.max_tags} on one machine (limit {report.limits.tags_per_machine}); "
        f"{report.machines_at_tag_limit} machines at the limit, "
        f"{report.machines_over_tag_limit} over it"
    )
    out.append(
        f"Unsupported operating systems: {report.unsupported_os_machines} machines "
        f"({report.unknown_os_machines} did not report their OS); "
        f"supported: {'; '.join(report.supported_os)}"
    )
    if report.unsupported_os:
        out += _table(
            ["os name", "os version", "machines"],
            [[o.os_name, o.os_version or "?", str(o.machines)] for o in report.unsupported_os],
            text_columns=2,
        )
    out.append(
        f"Machines outside supported regions ({', '.join(report.supported_regions)}): "
        f"{report.unsupported_region_machines}"
    )
    if report.unsupported_regions:
        out += _table(
            ["location", "machines"],
            [[loc, str(n)] for loc, n in report.unsupported_regions.items()],
        )
    out.append("")
    out.append(
        f"Agent versions: latest {report.latest_agent_version or '-'}, "
        f"{report.machines_not_on_latest_agent} machines on older versions"
    )
    out += _table(
        ["agent version", "machines", "share"],
        [
            [v, str(n), f"{n / report.machines:.1%}" if report.machines else "-"]
            for v, n in report.agent_versions.items()
        ],
    )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- Prometheus


class CapacityCollector(Collector):
    """Custom collector for the ``arcbeat_capacity_*`` gauges, read at scrape time.

    ``snapshot_fn`` returns the latest :class:`CapacityReport` (or None before the first
    one). At most ``max_scopes_per_kind`` scopes per kind are exported, those closest to
    their limit, so per-resource-group series stay bounded for a large tenant.
    ``days_to_limit`` is only exported where the trend is growing.
    """

    def __init__(
        self,
        snapshot_fn: Callable[[], CapacityReport | None],
        max_scopes_per_kind: int = 100,
    ) -> None:
        if max_scopes_per_kind < 1:
            raise ValueError(f"max_scopes_per_kind must be >= 1, got {max_scopes_per_kind}")
        self._snapshot_fn = snapshot_fn
        self._max = max_scopes_per_kind

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily
    ]:
        labels = ["kind", "scope"]
        return (
            GaugeMetricFamily(
                "arcbeat_capacity_used", "Capacity in use, per check kind and scope", labels=labels
            ),
            GaugeMetricFamily(
                "arcbeat_capacity_limit",
                "Configured limit, per check kind and scope",
                labels=labels,
            ),
            GaugeMetricFamily(
                "arcbeat_capacity_use_ratio",
                "used / limit, per check kind and scope",
                labels=labels,
            ),
            GaugeMetricFamily(
                "arcbeat_capacity_days_to_limit",
                "Days until the limit at the least-squares growth trend (absent when not growing)",
                labels=labels,
            ),
        )

    def describe(self) -> Iterator[Metric]:
        # Names only: registering must not call snapshot_fn.
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        used, limit, ratio, days = self._families()
        report = self._snapshot_fn()
        if report is not None:
            per_kind: Counter[str] = Counter()
            for u in report.checks:  # sorted closest-to-limit first
                if per_kind[u.kind] >= self._max:
                    continue
                per_kind[u.kind] += 1
                labels = [u.kind, u.scope]
                used.add_metric(labels, u.used)
                limit.add_metric(labels, u.limit)
                ratio.add_metric(labels, u.ratio)
                if u.days_to_limit is not None:
                    days.add_metric(labels, u.days_to_limit)
        yield used
        yield limit
        yield ratio
        yield days
