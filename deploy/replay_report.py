"""The report of ``arcbeat replay``: two runs side by side (the recorded one and a replay, or
two replays with different settings), as text, JSON or Markdown.

Pure: it reads lists of :class:`Change` and :class:`ScopeEvent`, nothing else.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arcbeat.streams.decide.timestamps import rfc3339
from arcbeat.streams.replay.partition import Change, ScopeEvent

DEGRADED = "ScopeDegraded"


@dataclass
class Side:
    """One run's decisions in the range."""

    name: str
    changes: list[Change]
    scope_events: list[ScopeEvent]
    # location -> [received, expected, plannedSeconds]; None: not computed for this side
    availability: Mapping[str, Sequence[float]] | None = None


@dataclass
class Summary:
    name: str
    transitions: dict[str, int]
    pages: dict[str, int]
    short_outages: int
    availability: dict[str, float | None] | None
    detection_delay: dict[str, float | None]
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transitions": self.transitions,
            "pages": self.pages,
            "shortOutages": self.short_outages,
            "availability": self.availability,
            "detectionDelaySeconds": self.detection_delay,
            "degradedWarnings": self.warnings,
        }


def _kind(c: Change) -> str:
    return f"{c.previous or 'none'}->{c.status} ({c.reason})"


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))], 3)


def _outages(changes: Iterable[Change], until: float) -> list[tuple[Change, float, bool]]:
    """Each Disconnected with when it ended (the machine's next change, or ``until``) and
    whether it ended in a resumed heartbeat."""
    by_key: dict[str, list[Change]] = defaultdict(list)
    for c in changes:
        by_key[c.key].append(c)
    out = []
    for cs in by_key.values():
        cs.sort(key=lambda c: c.decided_at)
        for i, c in enumerate(cs):
            if c.status != "Disconnected":
                continue
            nxt = cs[i + 1] if i + 1 < len(cs) else None
            end = nxt.decided_at if nxt is not None else until
            out.append((c, end - c.decided_at, nxt is not None and nxt.status == "Connected"))
    return out


def _scope_of(c: Change, scope: str) -> bool:
    kind, _, value = scope.partition("=")
    if kind == "location":
        return c.location == value
    if kind == "subscription":
        return c.subscription.lower() == value  # scopes name it lower-cased
    return scope == "fleet"


def warnings(
    events: Sequence[ScopeEvent], changes: Sequence[Change], *, lookahead: float
) -> list[dict[str, Any]]:
    """Each ScopeDegraded warning and its head start: how long before the first unplanned
    Disconnected of its scope (within ``lookahead``) it came; None when none followed."""
    timeouts = sorted(
        (c for c in changes if c.reason == "heartbeat_timeout" and c.maintenance is None),
        key=lambda c: c.decided_at,
    )
    out = []
    for e in events:
        if e.type != DEGRADED:
            continue
        first = next(
            (
                c
                for c in timeouts
                if e.at <= c.decided_at <= e.at + lookahead and _scope_of(c, e.scope)
            ),
            None,
        )
        out.append(
            {
                "scope": e.scope,
                "at": rfc3339(e.at),
                "firstDisconnectedAt": rfc3339(first.decided_at) if first else None,
                "leadSeconds": round(first.decided_at - e.at, 3) if first else None,
            }
        )
    return out


def summarize(
    side: Side, *, until: float, alert_for: float, short: float, lookahead: float
) -> Summary:
    changes = side.changes
    transitions = dict(sorted(Counter(_kind(c) for c in changes).items()))
    outages = _outages(changes, until)
    unplanned = [(c, d, r) for c, d, r in outages if c.maintenance is None]
    pages = {
        # ArcMachineOffline fires after its `for`: an outage shorter than that pages nobody
        "machineOffline": sum(1 for c, d, _ in unplanned if d >= alert_for and not c.mass_outage),
        "scopeSilent": sum(1 for e in side.scope_events if e.type == "ScopeSilent"),
    }
    short_outages = sum(1 for _, d, resumed in unplanned if resumed and d <= short)
    delays = [
        c.detection_delay
        for c in changes
        if c.reason == "heartbeat_timeout" and c.detection_delay is not None and not c.mass_outage
    ]
    availability: dict[str, float | None] | None = None
    if side.availability is not None:
        availability = {
            loc: (round(min(1.0, a[0] / a[1]), 5) if a[1] else None)
            for loc, a in sorted(side.availability.items())
        }
    return Summary(
        side.name,
        transitions,
        pages,
        short_outages,
        availability,
        {
            "count": float(len(delays)),
            "p50": _quantile(delays, 0.5),
            "p99": _quantile(delays, 0.99),
            "max": round(max(delays), 3) if delays else None,
        },
        warnings(side.scope_events, changes, lookahead=lookahead),
    )


@dataclass
class Oracle:
    """The replay with the workers' own settings against what they decided."""

    compared: int
    only_recorded: list[Change]
    only_replayed: list[Change]

    @property
    def identical(self) -> bool:
        return not self.only_recorded and not self.only_replayed

    def as_json(self, examples: int = 10) -> dict[str, Any]:
        def show(cs: list[Change]) -> list[dict[str, Any]]:
            return [
                {
                    "resourceId": c.key,
                    "previousStatus": c.previous,
                    "status": c.status,
                    "reason": c.reason,
                    "decidedAt": rfc3339(c.decided_at),
                }
                for c in cs[:examples]
            ]

        return {
            "identical": self.identical,
            "compared": self.compared,
            "onlyRecorded": len(self.only_recorded),
            "onlyReplayed": len(self.only_replayed),
            "examplesOnlyRecorded": show(self.only_recorded),
            "examplesOnlyReplayed": show(self.only_replayed),
        }


def oracle(recorded: Sequence[Change], replayed: Sequence[Change]) -> Oracle:
    """Transitions by machine, status, reason and decision time, as multisets."""
    a = Counter(c.identity() for c in recorded)
    b = Counter(c.identity() for c in replayed)
    only_a, only_b = a - b, b - a
    return Oracle(
        sum(a.values()),
        [c for c in recorded if only_a.get(c.identity(), 0) > 0],
        [c for c in replayed if only_b.get(c.identity(), 0) > 0],
    )


@dataclass
class Report:
    since: float
    until: float
    left: Summary
    right: Summary
    settings: dict[str, Any]  # what the right side changed: name -> [left, right]
    replay: dict[str, Any]  # heartbeats, seconds, rate, jobs
    oracle: Oracle | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "from": rfc3339(self.since),
            "to": rfc3339(self.until),
            "settings": self.settings,
            "replay": self.replay,
            "left": self.left.as_json(),
            "right": self.right.as_json(),
            "oracle": self.oracle.as_json() if self.oracle is not None else None,
            "notes": self.notes,
        }


def _rows(report: Report) -> list[tuple[str, str, str]]:
    left, right = report.left, report.right
    rows: list[tuple[str, str, str]] = []
    for kind in sorted(set(left.transitions) | set(right.transitions)):
        rows.append((kind, str(left.transitions.get(kind, 0)), str(right.transitions.get(kind, 0))))
    rows.append(("pages: machine offline", str(left.pages["machineOffline"]),
                 str(right.pages["machineOffline"])))  # fmt: skip
    rows.append(("pages: ScopeSilent", str(left.pages["scopeSilent"]),
                 str(right.pages["scopeSilent"])))  # fmt: skip
    rows.append(("short outages (likely false alarms)", str(left.short_outages),
                 str(right.short_outages)))  # fmt: skip
    for q in ("p50", "p99", "max"):
        rows.append(
            (f"detection delay {q} (s)", _num(left.detection_delay[q]),
             _num(right.detection_delay[q]))
        )  # fmt: skip
    locations = sorted(set(left.availability or {}) | set(right.availability or {}))
    for loc in locations:
        rows.append(
            (f"availability {loc}", _pct((left.availability or {}).get(loc)),
             _pct((right.availability or {}).get(loc)))
        )  # fmt: skip
    rows.append(("ScopeDegraded warnings", str(len(left.warnings)), str(len(right.warnings))))
    leads = [
        [w["leadSeconds"] for w in side.warnings if w["leadSeconds"] is not None]
        for side in (left, right)
    ]
    if any(leads):
        a, b = (_num(min(x)) if x else "-" for x in leads)
        rows.append(("warning head start, min (s)", a, b))
    return rows


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3f} %"


def text(report: Report) -> str:
    rows = _rows(report)
    head = ("", report.left.name, report.right.name)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    lines = [
        f"arcbeat replay {rfc3339(report.since)} .. {rfc3339(report.until)}: "
        f"{report.replay['heartbeats']:,} heartbeats in {report.replay['seconds']:.1f}s "
        f"({report.replay['rate']:,.0f}/s, {report.replay['jobs']} processes)",
    ]
    if report.settings:
        lines.append(
            "settings: " + ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in report.settings.items())
        )
    lines.append("")
    for r in [head, *rows]:
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}")
    if report.oracle is not None:
        o = report.oracle
        lines.append("")
        if o.identical:
            lines.append(f"oracle: identical ({o.compared} transitions, same settings)")
        else:
            lines.append(
                f"oracle: DIFFERS: {len(o.only_recorded)} only recorded, "
                f"{len(o.only_replayed)} only replayed (of {o.compared})"
            )
            for label, cs in (("recorded", o.only_recorded), ("replayed", o.only_replayed)):
                for c in cs[:5]:
                    lines.append(
                        f"  only {label}: {c.key} {c.previous}->{c.status} ({c.reason}) "
                        f"at {rfc3339(c.decided_at)}"
                    )
    for note in report.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def markdown(report: Report) -> str:
    lines = [
        f"## arcbeat replay {rfc3339(report.since)} .. {rfc3339(report.until)}",
        "",
        f"{report.replay['heartbeats']:,} heartbeats replayed in "
        f"{report.replay['seconds']:.1f} s ({report.replay['rate']:,.0f}/s).",
        "",
    ]
    if report.settings:
        lines += ["| setting | " + report.left.name + " | " + report.right.name + " |",
                  "|---|---|---|"]  # fmt: skip
        lines += [f"| `{k}` | {v[0]} | {v[1]} |" for k, v in report.settings.items()]
        lines.append("")
    lines += [f"| | {report.left.name} | {report.right.name} |", "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _rows(report)]
    if report.oracle is not None:
        o = report.oracle
        lines.append("")
        lines.append(
            f"Oracle: {'identical' if o.identical else 'differs'} "
            f"({o.compared} recorded transitions, {len(o.only_recorded)} only recorded, "
            f"{len(o.only_replayed)} only replayed)."
        )
    for note in report.notes:
        lines += ["", f"> {note}"]
    return "\n".join(lines) + "\n"
