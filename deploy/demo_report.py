"""What ``arcbeat demo`` shows: its transitions in time order, and the summary at the end.

:class:`Tally` counts the status and DLQ records of the demo's topics; :class:`TimeOrder` prints
the status records in the order of their times, although they arrive partition by partition;
:func:`summary` asks the worker, Prometheus, Alertmanager and InfluxDB what they saw and puts it
in the few lines a NOC engineer reads first.
"""

from __future__ import annotations

import heapq
import math
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from arcbeat.deploy.api_client import read_json

# The service level in production (docs/how-it-decides.md, Detection time): Disconnected no
# later than 30 minutes after the last heartbeat, with heartbeats every 5 minutes.
PRODUCTION_HEARTBEAT = 300.0
PRODUCTION_SLA = 1800.0

Say = Callable[[str], None]


def parse_time(text: object) -> float:
    """An RFC 3339 time of a record (``2026-05-01T12:00:00.000Z``) as seconds since the epoch."""
    return datetime.fromisoformat(str(text)).timestamp()


def fleet_line(machines: int, interval: float, disconnect_after: float) -> str:
    """The first line of a demo's plan: the simulated fleet and its timing."""
    return (
        f"the simulated fleet: {machines:,} machines, a heartbeat every {interval:g} s, "
        f"Disconnected after {disconnect_after:g} s of silence."
    )


def clock(t: float, ms: bool = True) -> str:
    """``HH:MM:SS.mmm`` (UTC, like the records' times)."""
    text = datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")
    return text[:12] if ms else text[:8]


def record_time(rec: Mapping[str, Any]) -> float:
    """When a status record happened: ``changedAt`` of a transition, ``at`` of a scope event."""
    return parse_time(rec["changedAt"] if rec.get("type") == "StatusChanged" else rec["at"])


def fmt_record(rec: Mapping[str, Any]) -> str:
    """One status record as one line."""
    when = clock(record_time(rec))
    if rec.get("type") == "StatusChanged":
        extra = ""
        if rec.get("detectionDelaySeconds") is not None:
            extra = f" (detected {float(rec['detectionDelaySeconds']):.2f}s after deadline)"
        if rec.get("massOutage"):
            extra += " [mass outage]"
        if rec.get("flapping"):
            extra += " [flapping]"
        return (
            f"{when}  {rec['machineName']:<14} {rec['location']:<11} "
            f"{rec['previousStatus'] or '-':>12} -> {rec['status']:<12} {rec['reason']}{extra}"
        )
    return f"{when}  *** {rec.get('type')} {rec.get('scope')} machines={rec.get('machines')}"


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (q in [0, 100]) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile: q must be in [0, 100], got {q}")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@dataclass
class Tally:
    """What the demo's topics carried: transitions, scope events, detection times, rejects."""

    disconnect_after: float
    heartbeat_interval: float
    transitions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    flapping: int = 0
    scope_events: list[dict[str, Any]] = field(default_factory=list)
    # heartbeat_timeout transitions: seconds after the deadline, and after the last heartbeat
    delays: list[float] = field(default_factory=list)
    since_last: list[float] = field(default_factory=list)
    held: int = 0  # declared at the end of a mass-silence hold (massOutage)
    dlq: Counter[str] = field(default_factory=Counter)
    status: dict[str, str] = field(default_factory=dict)  # machine key -> its latest status
    # location -> when its machines were declared Disconnected (how far ahead early warning came)
    disconnected_at: dict[str, list[float]] = field(default_factory=dict)

    def add_status(self, rec: Mapping[str, Any]) -> None:
        if rec.get("type") != "StatusChanged":
            self.scope_events.append(dict(rec))
            return
        self.transitions[
            (rec["previousStatus"] or "-", str(rec["status"]), str(rec["reason"]))
        ] += 1
        self.status[str(rec["resourceId"]).lower()] = str(rec["status"])
        self.flapping += bool(rec.get("flapping"))
        if rec["reason"] != "heartbeat_timeout":
            return
        self.disconnected_at.setdefault(str(rec.get("location")), []).append(
            parse_time(rec["changedAt"])
        )
        if rec.get("massOutage"):
            self.held += 1
        elif rec.get("detectionDelaySeconds") is not None:
            self.delays.append(float(rec["detectionDelaySeconds"]))
            self.since_last.append(
                parse_time(rec["changedAt"]) - parse_time(rec["lastHeartbeatAt"])
            )

    def add_dlq(self, rec: Mapping[str, Any]) -> None:
        self.dlq[str(rec.get("reason", "?"))] += 1

    def by_status(self) -> Counter[str]:
        return Counter(self.status.values())

    def outages(self) -> list[dict[str, Any]]:
        """``ScopeSilent`` events of this run that covered the whole fleet."""
        return [
            e
            for e in self.scope_events
            if e.get("type") == "ScopeSilent" and e.get("scope") == "fleet"
        ]

    @property
    def scale(self) -> float:
        """How much faster than production the demo's clock runs (300 s heartbeats / its own)."""
        return PRODUCTION_HEARTBEAT / self.heartbeat_interval

    @property
    def sla(self) -> float:
        """The production service level at the demo's time scale: seconds after the last
        heartbeat by which a silent machine must be Disconnected."""
        return PRODUCTION_SLA / self.scale


class TimeOrder:
    """Prints status records in the order of their times.

    Records arrive partition by partition, each partition in order, and become readable when
    their transaction commits: a record is held ``delay`` seconds past its own time, then
    printed after every earlier one. Onboardings (a thousand at the start) are folded into one
    line per batch.
    """

    def __init__(self, say: Say, machines: int, delay: float = 2.0) -> None:
        self.say = say
        self.machines = machines
        self.delay = delay
        self._heap: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = 0
        self._onboarded: list[dict[str, Any]] = []  # not printed yet
        self.onboarded = 0

    def add(self, rec: dict[str, Any]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (record_time(rec), self._seq, rec))

    def flush(self, now: float | None = None) -> None:
        """Print every record older than ``now - delay`` (all of them when ``now`` is None).
        Onboardings wait up to a second more, to be folded with the ones that follow."""
        while self._heap and (now is None or self._heap[0][0] <= now - self.delay):
            rec = heapq.heappop(self._heap)[2]
            if rec.get("reason") == "onboarded":
                self._onboarded.append(rec)
                continue
            self._fold()
            self.say(fmt_record(rec))
        if now is None or (
            self._onboarded and record_time(self._onboarded[0]) <= now - self.delay - 1.0
        ):
            self._fold()

    def _fold(self) -> None:
        if not self._onboarded:
            return
        self.onboarded += len(self._onboarded)
        self.say(
            f"{clock(record_time(self._onboarded[0]))}  +{len(self._onboarded):,} machines "
            f"onboarded, Connected ({self.onboarded:,} of {self.machines:,})"
        )
        self._onboarded = []


# -- the services' answers -----------------------------------------------------------------------


class Unanswered(Exception):
    """A service did not answer; the message says which and why."""


def get_json(url: str, timeout: float = 10.0) -> Any:
    """``GET url`` of a service (Prometheus, Alertmanager, InfluxDB, a worker) as JSON, or
    Unanswered with the URL and what went wrong."""
    try:
        return read_json(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise Unanswered(f"{url} answered {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise Unanswered(f"{url}: {exc}") from None


@dataclass(frozen=True)
class AlertSeen:
    """Alerts of one rule (and scope) that fired while the demo ran, or are pending now."""

    name: str
    severity: str
    scope: str  # the ArcScopeSilent scope, the ArcPipelineStalled cause, or ""
    count: int  # how many alerts (e.g. one per machine)
    now: str  # firing, pending or resolved


_STATE_ORDER = {"firing": 0, "pending": 1, "resolved": 2}


def _alert_key(metric: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in metric.items() if k not in ("__name__", "alertstate")))


def _other_machine(labels: Mapping[str, str], machines: Collection[str] | None) -> bool:
    """An alert about a machine that is not one of ``machines`` (None: any machine counts)."""
    rid = labels.get("resource_id")
    return machines is not None and rid is not None and rid.lower() not in machines


def prometheus_alerts(
    base: str, start: float, end: float, machines: Collection[str] | None = None
) -> list[AlertSeen]:
    """The alerts that fired between ``start`` and ``end`` or are pending now, by rule and
    scope, with their state now (Prometheus' ``ALERTS`` series). An alert about a machine
    (``resource_id``) counts only when it is one of ``machines`` (lower-cased Resource IDs)."""
    window = {"query": 'ALERTS{alertstate="firing"}', "start": f"{start:.3f}", "end": f"{end:.3f}"}
    fired = get_json(
        f"{base}/api/v1/query_range?" + urllib.parse.urlencode({**window, "step": "5"})
    )["data"]["result"]
    now = get_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": "ALERTS"}))
    state: dict[tuple[tuple[str, str], ...], str] = {}
    for series in now["data"]["result"]:
        key, current = _alert_key(series["metric"]), str(series["metric"].get("alertstate"))
        if _STATE_ORDER.get(current, 3) < _STATE_ORDER.get(state.get(key, ""), 3):
            state[key] = current
    groups: dict[tuple[str, str, str], list[str]] = {}
    for key in dict.fromkeys([*(_alert_key(s["metric"]) for s in fired), *state]):
        labels = dict(key)
        if _other_machine(labels, machines):
            continue
        group = (
            labels.get("alertname", "?"),
            labels.get("severity", ""),
            labels.get("scope") or labels.get("cause") or "",
        )
        groups.setdefault(group, []).append(state.get(key, "resolved"))
    return sorted(
        (
            AlertSeen(name, severity, scope, len(states), min(states, key=_STATE_ORDER.__getitem__))
            for (name, severity, scope), states in groups.items()
        ),
        key=lambda a: (_STATE_ORDER[a.now], a.name, a.scope),
    )


def alertmanager_alerts(base: str, machines: Collection[str] | None = None) -> Counter[str]:
    """Alertmanager's alerts now: ``active`` and ``suppressed`` (inhibited or silenced)
    counts, and ``-> <receiver>`` for each receiver of an active alert. An alert about a
    machine counts only when it is one of ``machines``."""
    counts: Counter[str] = Counter()
    for alert in get_json(f"{base}/api/v2/alerts"):
        if _other_machine(alert.get("labels") or {}, machines):
            continue
        state = str(alert["status"]["state"])
        counts[state] += 1
        if state == "active":
            for receiver in alert.get("receivers") or ():
                counts[f"-> {receiver['name']}"] += 1
    return counts


def influx_points(base: str, db: str) -> dict[str, int]:
    """Points per measurement in InfluxDB 1.x database ``db``."""
    url = f"{base}/query?" + urllib.parse.urlencode({"db": db, "q": "SELECT count(*) FROM /.*/"})
    counts: dict[str, int] = {}
    for result in get_json(url).get("results", []):
        if "error" in result:
            raise Unanswered(f"InfluxDB: {result['error']}")
        for series in result.get("series", []):
            values = [v for v in series["values"][0][1:] if isinstance(v, int)]
            counts[series["name"]] = max(values, default=0)
    return counts


def scraped(base: str, instance: str) -> str | None:
    """The health of Prometheus' target ``instance`` (``up``, ``down``, ``unknown``), or None
    when Prometheus does not scrape it."""
    targets = get_json(f"{base}/api/v1/targets?state=active")["data"]["activeTargets"]
    for t in targets:
        if t["labels"].get("instance") == instance:
            return str(t["health"])
    return None


# -- the summary ---------------------------------------------------------------------------------

PAD = " " * 21  # the summary's second column
WIDTH = 100


def _items(counts: Iterable[tuple[str, int]]) -> list[str]:
    return [f"{k} {v:,}" for k, v in counts]


def _wrapped(head: str, items: list[str], sep: str = " · ") -> list[str]:
    """``head`` then ``items`` joined by ``sep``, in lines of at most WIDTH columns."""
    if not items:
        return [head.rstrip().removesuffix(":")]
    lines, line = [], head
    for i, item in enumerate(items):
        piece = item + (sep.rstrip() if i < len(items) - 1 else "")
        if len(line) + len(piece) + 1 > WIDTH and line.strip() and line != head:
            lines.append(line.rstrip())
            line = PAD
        line += piece + " "
    lines.append(line.rstrip())
    return lines


def summary(
    tally: Tally,
    *,
    machines: int,
    seconds: float,
    fleet: Mapping[str, Any] | str,
    alerts: list[AlertSeen] | str,
    alertmanager: Counter[str] | str,
    points: dict[str, int] | str,
    db: str,
) -> list[str]:
    """The summary lines. Each service's answer is given, or the reason it has none (a str)."""
    minutes = tally.disconnect_after * tally.scale / 60
    lines = [
        f"summary: {machines:,} simulated machines for {seconds:.0f} s, time compressed "
        f"{tally.scale:g} times",
        f"{PAD}(a {tally.heartbeat_interval:g} s heartbeat stands for 5 min, "
        f"{tally.disconnect_after:g} s of silence for {minutes:g} min)",
        f"  transitions        {sum(tally.transitions.values()):,}, by kind:",
    ]
    for (before, after, reason), n in sorted(tally.transitions.items(), key=lambda kv: -kv[1]):
        before = "(new)" if before == "-" else before
        lines.append(f"{PAD}{n:>5,}  {reason:<20} {before:>12} -> {after}")
    if tally.flapping:
        lines.append(f"{PAD}({tally.flapping:,} of them marked flapping)")
    # early warning's records are summarised apart (deploy/demo_uplink.py)
    silences = [e for e in tally.scope_events if e["type"] in ("ScopeSilent", "ScopeRecovered")]
    if not silences:
        lines.append("  mass silence       none")
    for i, e in enumerate(silences):
        late = "machines late" if e["type"] == "ScopeSilent" else "still late"
        lines.append(
            ("  mass silence       " if i == 0 else PAD)
            + f"{clock(parse_time(e['at']), ms=False)}  {e['type']} {e['scope']}: "
            f"{e['machines']} {late}"
        )
    if silences:
        lines += [
            f"{PAD}(a silent scope's machines are held, not declared one by one; the "
            f"{tally.held:,} still",
            f"{PAD}silent when it recovered were declared then, marked [mass outage])",
        ]
    if tally.delays:
        met = sum(1 for s in tally.since_last if s <= tally.sla)
        lines += [
            f"  detection delay    after the deadline: p50 {percentile(tally.delays, 50):.2f} s, "
            f"p99 {percentile(tally.delays, 99):.2f} s, max {max(tally.delays):.2f} s "
            f"({len(tally.delays):,} heartbeat_timeout)",
            f"{PAD}service level: Disconnected within {tally.sla:g} s of the last heartbeat "
            f"({PRODUCTION_SLA / 60:g} min",
            f"{PAD}in production): met by {met:,} of {len(tally.since_last):,}, "
            f"the slowest {max(tally.since_last):.2f} s after its last heartbeat",
        ]
    else:
        lines.append("  detection delay    no heartbeat_timeout transition in this run")
    dlq = sum(tally.dlq.values())
    lines += _wrapped(f"  DLQ                {dlq:,} rejected: ", _items(tally.dlq.most_common()))
    if isinstance(alerts, str):
        lines.append(f"  alerts             Prometheus did not answer: {alerts}")
    elif not alerts:
        lines.append("  alerts             none (Prometheus)")
    else:
        lines.append("  alerts             (Prometheus: fired during the demo, or pending) now:")
        for a in alerts:
            what = a.scope
            if a.count > 1:
                what = f"{what} {a.count} alerts".strip()
            lines.append(f"{PAD}{a.name:<22} {a.severity:<7} {what:<28} {a.now}")
    if isinstance(alertmanager, str):
        lines.append(f"{PAD}Alertmanager did not answer: {alertmanager}")
    else:
        sent = sorted((k[3:], v) for k, v in alertmanager.items() if k.startswith("-> "))
        receivers = f" ({', '.join(_items(sent))})" if sent else ""
        lines.append(
            f"{PAD}Alertmanager now: {alertmanager['active']:,} active{receivers}, "
            f"{alertmanager['suppressed']:,} suppressed"
        )
    if isinstance(points, str):
        lines.append(f"  history            InfluxDB did not answer: {points}")
    else:
        lines += _wrapped(
            f"  history            {sum(points.values()):,} points in InfluxDB database {db}: ",
            _items(sorted(points.items())),
        )
    if isinstance(fleet, str):
        lines.append(f"  fleet now          the worker did not answer: {fleet}")
    else:
        silent = ", ".join(fleet.get("silentScopes") or []) or "none"
        lines += _wrapped(
            "  fleet now          ",
            [*_items(sorted(fleet.get("byStatus", {}).items())), f"silent scopes: {silent}"],
        )
    return lines
