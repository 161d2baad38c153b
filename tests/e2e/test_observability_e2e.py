"""End to end: the observability contract (docs/metrics-alerts-history.md) of a real pipeline run.

Two ``arcbeat worker`` processes (web ports 6066/6067, scraped by the local stack's Prometheus
as job ``arcbeat``), ``arcbeat history`` (port 6070, its own InfluxDB database) and ``arcbeat
simulate`` (150 machines in three locations of this run's own; 10 % permanent outages at the
start; one location silent for 8 s, a quarter of its machines never coming back; a few
malformed messages), in compressed time: 1 s heartbeats, Disconnected after 4 s, deadlines
checked every 0.5 s, mass silence from 5 machines, held 10 s, fleet snapshots every 2 s.

The stack's Prometheus runs a test copy of its configuration for the duration of the module:
2 s scrape and evaluation intervals, and deploy/prometheus/rules/*.yml with every ``for:`` set
to ``0s`` (tests/support/prometheus.py renders both from the real files and restores the
original afterwards). Alertmanager runs its configuration unchanged, so the machine alerts wait
its real ``group_wait`` (1 m) before the webhook (tests/support/webhook.py, 127.0.0.1:9095)
sees them.

The tests run in file order against one run (module fixture): the settled moment, the alerts,
the dashboards (while the workers run), then InfluxDB history and the simulator's ground truth
(after the workers stopped). About 2 minutes. A missing service fails, never skips.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arcbeat.deploy.stack import Stack
from tests.support.dashboards import only_absence
from tests.support.groundtruth import statuses_at, stops_in_groundtruth
from tests.support.observability import DashboardResult, ObservabilityRun, say
from tests.support.webhook import summarize

pytestmark = pytest.mark.services

# Queries allowed to come back empty, with why. Keep it short: every other query of the three
# dashboards must return data of its panel's shape from this run.
ALLOWED_EMPTY: dict[str, str] = {
    "arcbeat_capacity_days_to_limit": (
        "the forecast is exported only for a growing trend fitted over hourly capacity "
        "samples (exporters/capacity/forecast.py days_to_limit needs two distinct hours); a run of "
        "minutes has one sample per scope, and its fleet does not grow"
    ),
}


def allowed_empty(result: DashboardResult) -> str | None:
    """Why an answer without this run's data is acceptable for this query, or None."""
    if not only_absence(result.problems):
        return None
    for needle, why in ALLOWED_EMPTY.items():
        if needle in result.query.query:
            return why
    return None


@pytest.fixture(scope="module")
def run(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservabilityRun]:
    the_run = ObservabilityRun(stack, Path(tmp_path_factory.mktemp("observability")))
    try:
        yield the_run
    finally:
        the_run.close()
        timings = ", ".join(f"{k} {v:.0f}s" for k, v in the_run.timings.items())
        say(f"timings from the start of the run: {timings}")


def test_prometheus_scrapes_both_workers_and_their_sum_is_the_fleet(run: ObservabilityRun) -> None:
    st = run.stable()
    n = run.plan.machines
    down = len(run.expected_disconnected)
    assert st.saw_silent_scope, "the silent location was never reported silent by /fleet"
    # each worker exports only the partitions it owns: both export some, none twice
    assert set(st.per_worker) == set(run.instances), st.per_worker
    assert all(v > 0 for v in st.per_worker.values()), st.per_worker
    assert sum(st.per_worker.values()) == n, st.per_worker
    fleet_counts = {k: v for k, v in st.fleet["byStatus"].items() if v}
    assert st.prometheus == fleet_counts, (
        f"Prometheus sum by (status) {st.prometheus} differs from the workers' /fleet "
        f"{fleet_counts}"
    )
    assert st.prometheus == {"Connected": n - down, "Disconnected": down}, st.prometheus


def test_outages_alert_grouped_and_a_silent_location_is_inhibited(run: ObservabilityRun) -> None:
    seen = run.alerts()
    silent = run.silent_location
    silent_scope = f"location={silent}"

    # the mass silence: one page for the scope
    page = seen.scope_silent_page
    assert page["receiver"] == "pager" and page["status"] == "firing", summarize([page])
    assert page["groupLabels"] == {
        "alertname": "ArcScopeSilent",
        "scope": silent_scope,
        "location": silent,
    }, page["groupLabels"]

    # outaged machines elsewhere: tickets, one notification per subscription/resource group
    # holding all of the group's machines (they went offline within a second)
    by_group: dict[tuple[str, str], set[str]] = defaultdict(set)
    for m in run.outaged:
        if run.fleet.location(m) != silent:
            _rid, sub, rg = run.fleet.names(m)
            by_group[(sub.lower(), rg.lower())].add(run.key(m))
    notes_by_group: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for note in seen.machine_notifications:
        group = note["groupLabels"]
        assert set(group) == {"alertname", "subscription", "resource_group"}, group
        assert note["receiver"] == "noc-tickets", summarize([note])
        for alert in note["alerts"]:
            labels = alert["labels"]
            assert (labels["subscription"], labels["resource_group"]) == (
                group["subscription"],
                group["resource_group"],
            ), f"alert {labels} in the notification of group {group}"
        if note["status"] == "firing":
            group_key = (group["subscription"].lower(), group["resource_group"].lower())
            notes_by_group[group_key].append(note)
    for group_key, keys in by_group.items():
        notes = notes_by_group.get(group_key, [])
        assert len(notes) == 1, (
            f"group {group_key}: expected one firing notification, got "
            f"{summarize(notes) if notes else 'none'}"
        )
        got = {str(a["labels"]["resource_id"]).lower() for a in notes[0]["alerts"]}
        assert keys <= got, f"group {group_key}: missing {sorted(keys - got)}"
    say(
        f"{sum(len(k) for k in by_group.values())} machine alerts delivered in "
        f"{len(by_group)} notifications (largest group {max(len(k) for k in by_group.values())})"
    )

    # the silent location's Disconnected machines: in Alertmanager, inhibited by its
    # ArcScopeSilent, and never delivered
    silent_keys = {run.key(m) for m in run.expected_disconnected} & run.silent_location_keys()
    inhibited = {str(a["labels"]["resource_id"]).lower() for a in seen.inhibited}
    assert silent_keys <= inhibited, f"not inhibited: {sorted(silent_keys - inhibited)}"
    for alert in seen.inhibited:
        status = alert["status"]
        assert status["state"] == "suppressed" and not status["silencedBy"], status
        assert set(status["inhibitedBy"]) & seen.scope_silent_fingerprints, (
            f"{alert['labels']['machine_name']} inhibited by {status['inhibitedBy']}, not by "
            f"ArcScopeSilent {silent_scope} {seen.scope_silent_fingerprints}"
        )
    assert not seen.not_inhibited_silent, [a["labels"] for a in seen.not_inhibited_silent]
    assert not seen.leaked, (
        f"machine alerts of the silent location reached the webhook "
        f"(waited {seen.waited_for_group:g}s group_wait): {[a['labels'] for a in seen.leaked]}"
    )
    # ... while the other locations' machine alerts stay active (not inhibited)
    active = {str(a["labels"]["resource_id"]).lower() for a in seen.other_active}
    others = {k for keys in by_group.values() for k in keys}
    assert others <= active, f"not active: {sorted(others - active)}"


def test_every_dashboard_query_returns_data_of_its_panel_shape(run: ObservabilityRun) -> None:
    results = run.dashboards()
    allowed = [(r, why) for r in results if (why := allowed_empty(r)) is not None]
    bad = [r for r in results if r.problems and allowed_empty(r) is None]
    say(
        f"{len(results)} dashboard queries, {len(allowed)} allowed empty: "
        + "; ".join(f"{r.query.where}" for r, _ in allowed)
    )
    assert not bad, "dashboard queries without the data their panel needs:\n" + "\n".join(
        f"- {r.query.where} [{r.query.datasource} {r.query.shape}]: {', '.join(r.problems)}\n"
        f"  {r.executed}"
        for r in bad
    )
    kinds = Counter((r.query.datasource, r.query.shape) for r in results)
    assert kinds[("prometheus", "vector")] and kinds[("prometheus", "matrix")], kinds
    assert kinds[("influxdb", "series")] and kinds[("influxdb", "table")], kinds


def test_every_transition_is_in_influxdb(run: ObservabilityRun) -> None:
    seen = run.history()
    records = [r.value for r in seen.topic]
    transitions = {str(v["transitionId"]): v for v in records if v["type"] == "StatusChanged"}
    assert len(transitions) == sum(1 for v in records if v["type"] == "StatusChanged"), (
        "duplicate transition ids on the status topic"
    )
    rows = {str(r["transition_id"]): r for r in seen.transitions}
    assert len(rows) == len(seen.transitions), "duplicate transition ids in InfluxDB"
    assert set(rows) == set(transitions), (
        f"missing in InfluxDB: {sorted(set(transitions) - set(rows))[:5]}; "
        f"not on the topic: {sorted(set(rows) - set(transitions))[:5]}"
    )
    for tid, v in transitions.items():
        row = rows[tid]
        want = {
            "status": v["status"],
            "previous_status": v["previousStatus"] or "none",  # first onboarding
            "reason": v["reason"],
            "mass_outage": "true" if v["massOutage"] else "false",
            "resource_id": str(v["resourceId"]).lower(),
        }
        got = {k: row.get(k) or "" for k in want}
        assert got == want, f"{tid}: InfluxDB {got}, topic {want}"
    # the run's story is in the history: every outage and dead machine declared, the dead
    # ones as a mass outage, the silent location's scope events
    declared = {
        str(v["resourceId"]).lower(): bool(v["massOutage"])
        for v in transitions.values()
        if v["status"] == "Disconnected"
    }
    assert {run.key(m) for m in run.expected_disconnected} == set(declared), declared
    assert all(declared[run.key(m)] for m in run.dead)
    scope = f"location={run.silent_location}"
    topic_scope = Counter(
        (v["scope"], v["type"], int(v["machines"])) for v in records if v["type"] != "StatusChanged"
    )
    influx_scope = Counter((r["scope"], r["type"], int(r["machines"])) for r in seen.scope_events)
    assert topic_scope == influx_scope, f"topic {topic_scope}, InfluxDB {influx_scope}"
    # mass silence: only the silent location's (early warnings, ScopeDegraded and
    # ScopeDegradationCleared, may come beside it: a location going silent is late first)
    silence = [(s, t) for s, t, _ in topic_scope if t in ("ScopeSilent", "ScopeRecovered")]
    assert {t for s, t in silence if s == scope} == {"ScopeSilent", "ScopeRecovered"}
    assert all(s == scope for s, _ in silence), topic_scope


def test_every_machine_has_availability_windows(run: ObservabilityRun) -> None:
    """Per-machine window counts: every machine sent heartbeats during the first
    closed windows, so each has availability points."""
    seen = run.history()
    keys = {run.key(m) for m in range(run.plan.machines)}
    missing = keys - set(seen.availability)
    assert not missing, (
        f"{len(missing)} of {len(keys)} machines have no availability point after "
        f"{max(seen.availability.values(), default=0)} closed {run.plan.window:g}s windows "
        f"(InfluxDB availability holds {len(seen.availability)} machines)"
    )


def test_prometheus_counts_match_the_simulators_ground_truth(run: ObservabilityRun) -> None:
    gt = run.groundtruth()
    st = run.stable()
    p = run.plan
    truth = statuses_at(gt, st.at, disconnect_after=p.disconnect_after)
    assert not truth.ambiguous, f"not a settled moment: {truth.ambiguous[:5]}"
    assert dict(truth.counts) == st.prometheus, (
        f"ground truth at {st.at:.1f}: {dict(truth.counts)}, Prometheus {st.prometheus}"
    )
    # and the simulator did what the schedule the test expects says
    stops = stops_in_groundtruth(gt)
    assert stops.get("outage-permanent") == {run.key(m) for m in run.outaged}
    assert stops.get("location-silent-dead") == {run.key(m) for m in run.dead}
