"""The demo's parts that need no service: the scenario timeline, the time-ordered printing,
the tally and the summary, and the pointers it prints (tests/e2e/test_demo_e2e.py runs it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from arcbeat.deploy import demo_report
from arcbeat.deploy.demo import SILENT_FOR, Plan, demo_env, pointers
from arcbeat.deploy.demo_report import (
    AlertSeen,
    Tally,
    TimeOrder,
    clock,
    parse_time,
    percentile,
    prometheus_alerts,
    summary,
)
from arcbeat.deploy.demo_uplink import UplinkPlan, early_warning_lines
from arcbeat.deploy.settings import Settings

T0 = parse_time("2026-05-01T12:00:00.000Z")


def _at(seconds: float) -> str:
    return f"2026-05-01T12:{int(seconds // 60):02d}:{seconds % 60:06.3f}Z"


def changed(
    name: str,
    at: float,
    before: str | None,
    after: str,
    reason: str,
    *,
    last: float | None = None,
    delay: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": "StatusChanged",
        "resourceId": f"/subscriptions/s/resourceGroups/rg/providers/"
        f"Microsoft.HybridCompute/machines/{name}",
        "machineName": name,
        "location": "westus2",
        "previousStatus": before,
        "status": after,
        "reason": reason,
        "changedAt": _at(at),
        "lastHeartbeatAt": _at(last if last is not None else at),
        "detectionDelaySeconds": delay,
        **extra,
    }


def scope(kind: str, at: float, name: str = "location=westeurope") -> dict[str, Any]:
    return {"type": kind, "scope": name, "machines": 40, "connected": 100, "at": _at(at)}


def test_every_scenario_and_its_verdicts_end_before_the_summary() -> None:
    for duration in (60.0, 120.0, 600.0):
        plan = Plan(1000, duration, interval=2.0, disconnect_after=6.0)
        args = plan.simulate_args(groundtruth=Path("/tmp/gt"))
        assert "--duration" not in args  # the fleet keeps sending after the scenarios
        assert plan.outages_until + plan.gone <= duration - plan.settle
        assert plan.silent_at + SILENT_FOR <= duration - plan.settle
        assert plan.silent_at >= 4 * plan.interval  # after the onboarding
        flap_end = 2 * plan.interval + plan.flap_cycles * (plan.gone + 3 * plan.interval)
        assert flap_end <= duration - plan.settle + 3 * plan.interval


def test_the_demo_has_its_own_topics_group_and_database() -> None:
    env = demo_env("my-demo")
    assert env["ARCBEAT_TOPIC_PREFIX"] == env["ARCBEAT_APP_ID"] == "my-demo"
    assert env["ARCBEAT_INFLUX_DB"] == "my_demo"


def test_records_print_in_time_order_with_onboardings_folded() -> None:
    out: list[str] = []
    order = TimeOrder(out.append, machines=3, delay=2.0)
    # as they arrive: partition by partition, each in order
    order.add(changed("b", 1.0, None, "Connected", "onboarded"))
    order.add(changed("b", 9.5, "Connected", "Disconnected", "heartbeat_timeout", delay=0.5))
    order.add(changed("a", 0.5, None, "Connected", "onboarded"))
    order.add(scope("ScopeSilent", 9.0))
    order.add(changed("c", 1.5, None, "Connected", "onboarded"))
    order.flush(T0 + 10.0)  # up to 8.0 s: the three onboardings only
    assert out == [f"{clock(T0 + 0.5)}  +3 machines onboarded, Connected (3 of 3)"]
    order.flush()
    assert out[1].startswith(f"{clock(T0 + 9.0)}  *** ScopeSilent location=westeurope")
    assert out[2].startswith(f"{clock(T0 + 9.5)}  b")
    assert "(detected 0.50s after deadline)" in out[2]


def test_the_summary_a_noc_engineer_reads() -> None:
    tally = Tally(disconnect_after=6.0, heartbeat_interval=2.0)
    assert (tally.scale, tally.sla) == (150.0, 12.0)
    for i in range(3):
        tally.add_status(changed(f"m{i}", 0.1, None, "Connected", "onboarded"))
    for i, delay in enumerate((0.2, 0.4, 0.9)):
        tally.add_status(
            changed(
                f"m{i}", 20 + delay, "Connected", "Disconnected", "heartbeat_timeout",
                last=14.0, delay=delay, flapping=i == 0,
            )
        )  # fmt: skip
    tally.add_status(scope("ScopeSilent", 30.0))
    tally.add_status(scope("ScopeRecovered", 50.0))
    tally.add_status(
        changed(
            "m1", 55.0, "Connected", "Disconnected", "heartbeat_timeout",
            last=25.0, delay=24.0, massOutage=True,
        )
    )  # fmt: skip
    tally.add_status(changed("m0", 25.0, "Disconnected", "Connected", "heartbeat_resumed"))
    for reason in ("schema", "schema", "too_large"):
        tally.add_dlq({"reason": reason})
    assert tally.outages() == []
    assert tally.by_status() == Counter({"Connected": 1, "Disconnected": 2})
    lines = summary(
        tally,
        machines=3,
        seconds=60.0,
        fleet={"byStatus": {"Connected": 1, "Disconnected": 2}, "silentScopes": []},
        alerts=[
            AlertSeen("ArcScopeSilent", "page", "location=westeurope", 1, "firing"),
            AlertSeen("ArcMachineOffline", "ticket", "", 2, "pending"),
        ],
        alertmanager=Counter({"active": 1, "-> pager": 1, "suppressed": 2}),
        points={"transitions": 9, "fleet": 30},
        db="arcbeat_demo",
    )
    text = "\n".join(lines)
    print(text)
    assert "transitions        8, by kind:" in text
    assert f"{' ' * 21}    4  heartbeat_timeout       Connected -> Disconnected" in text
    assert f"{' ' * 21}    3  onboarded                   (new) -> Connected" in text
    assert "(1 of them marked flapping)" in text
    assert "12:00:30  ScopeSilent location=westeurope: 40 machines late" in text
    assert "12:00:50  ScopeRecovered location=westeurope: 40 still late" in text
    assert "silent when it recovered were declared then, marked [mass outage])" in text
    # the held machine is not counted against the service level
    assert "p50 0.40 s, p99 0.90 s, max 0.90 s (3 heartbeat_timeout)" in text
    assert "within 12 s of the last heartbeat (30 min" in text
    assert "in production): met by 3 of 3, the slowest 6.90 s after its last heartbeat" in text
    assert "DLQ                3 rejected: schema 2 · too_large 1" in text
    assert "ArcScopeSilent         page    location=westeurope" in text
    assert "ArcMachineOffline      ticket  2 alerts" in text
    assert "Alertmanager now: 1 active (pager 1), 2 suppressed" in text
    assert "39 points in InfluxDB database arcbeat_demo: fleet 30 · transitions 9" in text
    assert "fleet now          Connected 1 · Disconnected 2 · silent scopes: none" in text
    assert all(len(line) <= 100 for line in lines), [ln for ln in lines if len(ln) > 100]


def test_a_service_that_does_not_answer_is_named_in_the_summary() -> None:
    lines = summary(
        Tally(6.0, 2.0),
        machines=10,
        seconds=60.0,
        fleet="http://127.0.0.1:6066/fleet: refused",
        alerts="http://127.0.0.1:9090/api/v1/query_range: refused",
        alertmanager="http://127.0.0.1:9093/api/v2/alerts: refused",
        points="InfluxDB: database not found",
        db="d",
    )
    text = "\n".join(lines)
    assert "DLQ                0 rejected\n" in text
    assert "no heartbeat_timeout transition" in text
    assert "mass silence       none" in text
    assert "the worker did not answer: http://127.0.0.1:6066/fleet: refused" in text
    assert "Prometheus did not answer" in text
    assert "Alertmanager did not answer" in text
    assert "InfluxDB did not answer: InfluxDB: database not found" in text


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile([3.0], 99)) == (
        50.0,
        99.0,
        3.0,
    )


def test_pointers_name_the_demo_worker_when_the_callers_settings_would_not() -> None:
    demo = Settings().replace(topic_prefix="arcbeat-demo", influx_db="arcbeat_demo", web_port=6068)
    state, logs = Path("state"), Path("state/arcbeat-demo")
    same = dict(pointers(demo, demo, state, logs, worker=True))
    assert same["fleet totals"] == "arcbeat fleet"
    assert same["worker API"] == "curl -s http://127.0.0.1:6068/fleet"
    other = dict(pointers(demo, Settings(), state, logs, worker=True))
    assert other["fleet totals"] == "arcbeat fleet --url http://127.0.0.1:6068"
    assert other["offline machines"].endswith("--status Disconnected --url http://127.0.0.1:6068")
    assert "-database arcbeat_demo" in other["history (InfluxDB)"]
    after = dict(pointers(demo, demo, state, logs, worker=False))
    assert not any("6068" in how for how in after.values())  # the worker is gone by then
    assert {"Prometheus", "alerts", "Alertmanager", "history (InfluxDB)", "logs"} <= set(after)


def test_alerts_by_rule_and_scope_for_the_demos_machines_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def series(state: str, **labels: str) -> dict[str, Any]:
        return {"metric": {"__name__": "ALERTS", "alertstate": state, **labels}}

    offline = {"alertname": "ArcMachineOffline", "severity": "ticket"}
    fired = [
        series("firing", alertname="ArcPipelineStalled", severity="page", cause="no_worker_up"),
        series("firing", alertname="ArcScopeSilent", severity="page", scope="location=x"),
        series("firing", **offline, resource_id="/subscriptions/s/m1"),
        series("firing", **offline, resource_id="/subscriptions/other/m9"),  # another run's
    ]
    now = [
        series("firing", alertname="ArcScopeSilent", severity="page", scope="location=x"),
        series("firing", **offline, resource_id="/subscriptions/s/m1"),
        series("pending", **offline, resource_id="/subscriptions/s/M2"),
    ]

    def answer(url: str, timeout: float = 10.0) -> Any:
        return {"data": {"result": fired if "query_range" in url else now}}

    monkeypatch.setattr(demo_report, "get_json", answer)
    seen = prometheus_alerts("http://p", 0.0, 60.0, {"/subscriptions/s/m1", "/subscriptions/s/m2"})
    assert seen == [
        AlertSeen("ArcMachineOffline", "ticket", "", 2, "firing"),
        AlertSeen("ArcScopeSilent", "page", "location=x", 1, "firing"),
        AlertSeen("ArcPipelineStalled", "page", "no_worker_up", 1, "resolved"),
    ]


def test_the_uplink_story_gives_the_lead_time_in_production_minutes() -> None:
    plan = UplinkPlan(300, 60.0, interval=2.0, disconnect_after=6.0)
    assert plan.min_duration <= 60.0
    args = plan.simulate_args(Path("/tmp/g.jsonl"))
    assert "steady,uplink-degrades" in args and "--duration" not in args
    tally = Tally(disconnect_after=6.0, heartbeat_interval=2.0)
    tally.add_status({**scope("ScopeDegraded", 40.0, "location=westasia"), "signal": "both"})
    assert early_warning_lines(tally) == [
        "12:00:40  ScopeDegraded location=westasia (both); no Disconnected there yet"
    ]
    tally.add_status(
        changed("m1", 46.0, "Connected", "Disconnected", "heartbeat_timeout", location="westasia")
    )
    [line] = early_warning_lines(tally)
    assert line.endswith("there 12:00:46: 6.0 s later, 15 production minutes of warning"), line
    # early warning is not a mass silence in the summary
    text = "\n".join(
        summary(tally, machines=300, seconds=60.0, fleet={}, alerts=[], alertmanager=Counter(),
                points={}, db="d")
    )  # fmt: skip
    assert "mass silence       none" in text
