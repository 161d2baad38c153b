"""Capacity model, forecast, report output and the Prometheus collector (pure, no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from arcbeat.deploy.settings import Settings
from arcbeat.exporters.capacity.collector import CapacityCollector
from arcbeat.exporters.capacity.forecast import CapacityHistory, days_to_limit
from arcbeat.exporters.capacity.model import (
    MACHINES_PER_RESOURCE_GROUP,
    RESOURCE_GROUPS_PER_SUBSCRIPTION,
    TAGS_PER_MACHINE,
    TENANT_OBJECTS,
    CapacityLimits,
    CapacityReport,
    CapacityUse,
    MachineSummary,
)
from arcbeat.exporters.capacity.os_rules import SUPPORTED_OPERATING_SYSTEMS, OsRule, os_supported
from arcbeat.exporters.capacity.report import build_report
from arcbeat.exporters.capacity.to_json import report_to_dict, report_to_json
from arcbeat.exporters.capacity.to_text import render_table
from tests.support.examples import examples

DAY = 86400.0
T0 = 1_700_000_000.0  # realistic unix seconds: the fit must not lose precision on them
SUB_A = "00000000-0000-0000-0000-00000000000a"
SUB_B = "00000000-0000-0000-0000-00000000000b"


def machine(
    sub: str = SUB_A, rg: str = "rg1", loc: str = "westeurope", **kw: Any
) -> MachineSummary:
    return MachineSummary(sub, rg, loc, **kw)


# --------------------------------------------------------------------------- forecast


def test_ten_per_day_from_400_to_500_reaches_800_in_30_days():
    history = [(T0 + d * DAY, 400 + 10 * d) for d in range(11)]  # ends at 500 "now"
    assert days_to_limit(history, 800) == pytest.approx(30.0, abs=1e-6)


def test_ten_per_day_starting_at_500_counts_from_the_last_sample():
    history = [(T0 + d * DAY, 500 + 10 * d) for d in range(11)]  # ends at 600
    assert days_to_limit(history, 800) == pytest.approx(20.0, abs=1e-6)
    # counted from an explicit "now", five days after the last sample
    assert days_to_limit(history, 800, now=T0 + 15 * DAY) == pytest.approx(15.0, abs=1e-6)


def test_noisy_growth_uses_least_squares():
    # +10/day with alternating +-3 noise: the fit still finds 10/day through the centre.
    history = [(T0 + d * DAY, 500 + 10 * d + (3 if d % 2 else -3)) for d in range(20)]
    result = days_to_limit(history, 1000)
    assert result is not None
    assert 29.0 < result < 33.0


@pytest.mark.parametrize(
    "history, limit",
    [
        ([(T0, 500), (T0 + DAY, 500), (T0 + 2 * DAY, 500)], 800),  # flat
        ([(T0, 600), (T0 + DAY, 550), (T0 + 2 * DAY, 500)], 800),  # shrinking
        ([(T0, 500)], 800),  # one sample
        ([(T0, 500), (T0, 600)], 800),  # no time spread
        ([(T0, 500), (T0 + DAY, 600)], 0),  # check switched off
        ([], 800),
    ],
)
def test_no_forecast_when_not_growing_or_undefined(history, limit):
    assert days_to_limit(history, limit) is None


def test_already_past_the_limit_is_zero_days():
    assert days_to_limit([(T0, 700), (T0 + DAY, 900)], 800) == 0.0


linear_histories = st.builds(
    lambda start, per_day, n, t0: (
        [(t0 + d * DAY, start + per_day * d) for d in range(n)],
        start,
        per_day,
        n,
        t0,
    ),
    start=st.integers(0, 100_000),
    per_day=st.integers(1, 1000),
    n=st.integers(2, 60),
    t0=st.floats(0, 2e9, allow_nan=False),
)


@settings(max_examples=examples(200), deadline=None)
@given(linear_histories, st.integers(1, 500_000))
def test_exact_linear_growth_gives_the_exact_answer(case, extra):
    history, start, per_day, n, _ = case
    last = start + per_day * (n - 1)
    limit = last + extra
    assert days_to_limit(history, limit) == pytest.approx(extra / per_day, rel=1e-6, abs=1e-6)


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1e6), st.integers(0, 10**6)), min_size=2, max_size=40),
    st.integers(1, 10**7),
    st.floats(-1e9, 1e9),
)
def test_forecast_is_non_negative_and_shift_invariant(samples, limit, shift):
    base = [(T0 + t, y) for t, y in samples]
    result = days_to_limit(base, limit)
    assert result is None or result >= 0.0
    shifted = days_to_limit([(t + shift, y) for t, y in base], limit)
    if result is None:
        assert shifted is None
    else:
        assert shifted is not None
        assert shifted == pytest.approx(result, rel=1e-6, abs=1e-6)


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(st.integers(0, 10**6), min_size=2, max_size=40).map(
        lambda ys: sorted(ys, reverse=True)
    ),
    st.integers(1, 10**7),
)
def test_never_growing_series_has_no_forecast(ys, limit):
    history = [(T0 + i * 3600.0, y) for i, y in enumerate(ys)]
    assert days_to_limit(history, limit) is None


@settings(max_examples=examples(200), deadline=None)
@given(linear_histories, st.integers(1, 10**6), st.integers(0, 10**6))
def test_a_higher_limit_never_comes_sooner(case, limit, more):
    history = case[0]
    low, high = days_to_limit(history, limit), days_to_limit(history, limit + more)
    assert low is not None and high is not None
    assert high >= low


# --------------------------------------------------------------------------- OS rules


@pytest.mark.parametrize(
    "name, version, expected",
    [
        ("Windows Server 2012 R2 Datacenter", "6.3.9600", True),
        ("Windows Server 2012 Standard", "6.2.9200", False),
        ("Windows Server 2008 R2", "6.1.7601", False),
        ("Windows Server 2016 Datacenter", "10.0.14393", True),
        ("Windows Server 2022", "10.0.20348", True),
        ("Windows Server", "10.0.17763", True),  # no year: the kernel version decides
        ("Windows Server", "6.2.9200", False),
        ("Windows 10 Pro", "10.0.19045", False),
        ("Ubuntu", "18.04", True),
        ("Ubuntu", "16.04.7 LTS", True),
        ("Ubuntu", "20.04", False),
        ("CentOS Linux", "7.9.2009", True),
        ("CentOS Linux", "8", False),
        ("SLES", "15.1", True),
        ("SUSE Linux Enterprise Server", "15", True),
        ("SLES", "12.5", False),
        ("Red Hat Enterprise Linux Server", "7.9", True),
        ("Red Hat Enterprise Linux", "8.6", False),
        ("Amazon Linux", "7", True),
        ("Debian GNU/Linux", "12", False),
        ("", "", None),
    ],
)
def test_supported_operating_systems(name, version, expected):
    assert os_supported(name, version) is expected


def test_supported_os_list_is_replaceable():
    rules = (*SUPPORTED_OPERATING_SYSTEMS, OsRule("Debian 12", ("debian",), ("12",)))
    assert os_supported("Debian GNU/Linux", "12", rules) is True


# --------------------------------------------------------------------------- report


def test_limits_come_from_settings():
    s = Settings().replace(limit_machines_per_resource_group=0, limit_tenant_objects=10)
    limits = CapacityLimits.from_settings(s.capacity)
    assert limits == CapacityLimits(980, 0, 50, 10)


def test_report_counts_use_and_headroom_per_scope():
    fleet = [
        machine(SUB_A, "rg1", tag_count=3),
        machine(SUB_A.upper(), "RG1", tag_count=50),  # same subscription and RG: case-insensitive
        machine(SUB_A, "rg2", loc="westus2", tag_count=51),
        machine(SUB_B, "rg1", loc="westus2"),
    ]
    limits = CapacityLimits(
        resource_groups_per_subscription=2,
        machines_per_resource_group=2,
        tags_per_machine=50,
        tenant_objects=5,
    )
    r = build_report(fleet, limits, now=T0)
    assert r.machines == 4
    assert r.machines_per_subscription == {SUB_A: 3, SUB_B: 1}
    assert r.machines_per_location == {"westeurope": 2, "westus2": 2}
    assert r.machines_per_resource_group[f"{SUB_A}/rg1"] == 2

    rgs = r.check(RESOURCE_GROUPS_PER_SUBSCRIPTION, f"subscription={SUB_A}")
    assert rgs is not None and (rgs.used, rgs.limit, rgs.headroom, rgs.ratio) == (2, 2, 0, 1.0)
    assert rgs.level == "critical"
    per_rg = r.check(MACHINES_PER_RESOURCE_GROUP, f"resource_group={SUB_A}/rg1")
    assert per_rg is not None and per_rg.used == 2
    tenant = r.check(TENANT_OBJECTS, "tenant")
    assert tenant is not None and (tenant.used, tenant.headroom) == (4, 1)
    assert tenant.level == "warning"  # 80 %
    tags = r.check(TAGS_PER_MACHINE, "tenant")
    assert tags is not None and tags.used == 51 and tags.level == "over"
    assert (r.max_tags, r.machines_at_tag_limit, r.machines_over_tag_limit) == (51, 1, 1)
    # closest to the limit first
    assert [c.ratio for c in r.checks] == sorted((c.ratio for c in r.checks), reverse=True)


def test_machines_per_resource_group_check_can_be_switched_off():
    r = build_report([machine()], CapacityLimits(machines_per_resource_group=0), now=T0)
    assert all(c.kind != MACHINES_PER_RESOURCE_GROUP for c in r.checks)
    assert any("switched off" in n for n in r.notes)
    assert r.machines_per_resource_group == {f"{SUB_A}/rg1": 1}  # still counted


def test_levels_at_80_and_95_percent():
    assert CapacityUse("k", "s", 79, 100).level == "ok"
    assert CapacityUse("k", "s", 80, 100).level == "warning"
    assert CapacityUse("k", "s", 95, 100).level == "critical"
    assert CapacityUse("k", "s", 101, 100).level == "over"


def test_unsupported_os_regions_and_agent_spread():
    fleet = [
        machine(os_name="Ubuntu", os_version="18.04", agent_version="0.9.19"),
        machine(os_name="Ubuntu", os_version="22.04", agent_version="0.10.1"),
        machine(os_name="Ubuntu", os_version="22.04", agent_version="0.10.1"),
        machine(os_name="Windows Server 2012", os_version="6.2", agent_version="0.10.1"),
        machine(loc="eastus", agent_version=""),
    ]
    r = build_report(fleet, CapacityLimits(), regions=("westeurope", "westus2"), now=T0)
    assert [(o.os_name, o.os_version, o.machines) for o in r.unsupported_os] == [
        ("Ubuntu", "22.04", 2),
        ("Windows Server 2012", "6.2", 1),
    ]
    assert r.unsupported_os_machines == 3 and r.unknown_os_machines == 1
    assert r.unsupported_regions == {"eastus": 1}
    assert r.latest_agent_version == "0.10.1"  # numeric, not text, order
    assert list(r.agent_versions) == ["0.10.1", "0.9.19", "unknown"]
    assert r.machines_not_on_latest_agent == 2
    # "*" accepts any region
    assert build_report(fleet, CapacityLimits(), regions=("*",)).unsupported_regions == {}


def test_forecast_from_history_mapping_and_from_capacity_history():
    limits = CapacityLimits(tenant_objects=800)
    past = {(TENANT_OBJECTS, "tenant"): [(T0 + d * DAY, 400 + 10 * d) for d in range(10)]}
    fleet = [machine(rg=f"rg{i % 7}") for i in range(500)]
    r = build_report(fleet, limits, history=past, now=T0 + 10 * DAY)
    tenant = r.check(TENANT_OBJECTS, "tenant")
    assert tenant is not None and tenant.days_to_limit == pytest.approx(30.0, abs=1e-6)

    history = CapacityHistory(max_samples=100)
    for d in range(10):
        history.record(build_report(fleet[: 400 + 10 * d], limits, now=T0 + d * DAY))
    again = build_report(fleet, limits, history=history, now=T0 + 10 * DAY)
    tenant = again.check(TENANT_OBJECTS, "tenant")
    assert tenant is not None and tenant.days_to_limit == pytest.approx(30.0, abs=1e-6)


def test_capacity_history_is_bounded_and_moves_forward():
    h = CapacityHistory(max_samples=3)
    for i in range(5):
        h.add("k", "s", T0 + i, i)
    h.add("k", "s", T0, 99)  # older: ignored
    h.add("k", "s", T0 + 4, 40)  # same time: replaced
    assert h.series("k", "s") == ((T0 + 2, 2), (T0 + 3, 3), (T0 + 4, 40))
    with pytest.raises(ValueError, match="max_samples"):
        CapacityHistory(max_samples=1)


def test_machine_summary_from_record():
    m = MachineSummary.from_mapping(
        {
            "subscriptionId": SUB_A,
            "resourceGroup": "rg",
            "location": "westeurope",
            "tags": {"a": "1", "b": "2"},
            "osName": "Ubuntu",
            "osVersion": "18.04",
            "agentVersion": "1.0",
        }
    )
    assert (m.tag_count, m.os_name, m.agent_version) == (2, "Ubuntu", "1.0")
    with pytest.raises(ValueError, match="resourceGroup"):
        MachineSummary.from_mapping({"subscriptionId": SUB_A, "location": "westeurope"})


def _sample_report() -> CapacityReport:
    fleet = [
        machine(rg=f"rg{i % 3}", tag_count=i % 5, os_name="Ubuntu", os_version="18.04")
        for i in range(30)
    ]
    fleet.append(machine(SUB_B, loc="eastus", os_name="CentOS Linux", os_version="6"))
    return build_report(fleet, CapacityLimits(), regions=("westeurope",), now=T0)


def test_json_output_is_complete_and_parseable():
    r = _sample_report()
    doc = json.loads(report_to_json(r))
    assert doc == json.loads(json.dumps(report_to_dict(r)))
    assert doc["machines"] == 31
    assert doc["generatedAt"] == "2023-11-14T22:13:20Z"
    kinds = {c["kind"] for c in doc["checks"]}
    assert kinds == {
        RESOURCE_GROUPS_PER_SUBSCRIPTION,
        MACHINES_PER_RESOURCE_GROUP,
        TAGS_PER_MACHINE,
        TENANT_OBJECTS,
    }
    first = doc["checks"][0]
    assert set(first) == {
        "kind",
        "scope",
        "used",
        "limit",
        "headroom",
        "ratio",
        "level",
        "daysToLimit",
    }
    assert doc["unsupportedOs"]["byOs"] == [
        {"osName": "CentOS Linux", "osVersion": "6", "machines": 1}
    ]
    assert doc["unsupportedRegions"]["byLocation"] == {"eastus": 1}


def test_table_output_names_every_section():
    text = render_table(_sample_report(), top=3)
    for needle in (
        "31 machines",
        "Limits (closest first, 3 of",
        "days to limit",
        "Machines per location",
        "Unsupported operating systems: 1 machines",
        "CentOS Linux",
        "outside supported regions (westeurope): 1",
        "Agent versions",
    ):
        assert needle in text, needle


# --------------------------------------------------------------------------- collector


def _scrape(collector: CapacityCollector) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(collector)
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        out[family.name] = [(s.labels, s.value) for s in family.samples]
    return out


def test_collector_exports_the_contract_metrics_at_scrape_time():
    calls: list[int] = []
    history = {(TENANT_OBJECTS, "tenant"): [(T0 - DAY, 20)]}
    fleet = [machine(rg=f"rg{i}") for i in range(30)]
    report = build_report(fleet, CapacityLimits(tenant_objects=100), history=history, now=T0)

    def snapshot() -> CapacityReport:
        calls.append(1)
        return report

    collector = CapacityCollector(snapshot)
    assert calls == []  # registering (describe) does not read the snapshot
    metrics = _scrape(collector)
    assert len(calls) == 1
    used = {(lab["kind"], lab["scope"]): v for lab, v in metrics["arcbeat_capacity_used"]}
    assert used[(TENANT_OBJECTS, "tenant")] == 30
    assert used[(RESOURCE_GROUPS_PER_SUBSCRIPTION, f"subscription={SUB_A}")] == 30
    limit = {(lab["kind"], lab["scope"]): v for lab, v in metrics["arcbeat_capacity_limit"]}
    assert limit[(TENANT_OBJECTS, "tenant")] == 100
    ratio = {(lab["kind"], lab["scope"]): v for lab, v in metrics["arcbeat_capacity_use_ratio"]}
    assert ratio[(TENANT_OBJECTS, "tenant")] == pytest.approx(0.3)
    days = {(lab["kind"], lab["scope"]): v for lab, v in metrics["arcbeat_capacity_days_to_limit"]}
    assert days == {(TENANT_OBJECTS, "tenant"): pytest.approx(7.0)}  # +10/day, 70 to go


def test_collector_caps_scopes_per_kind_keeping_the_closest():
    fleet = [machine(rg=f"rg{i}") for i in range(10) for _ in range(i + 1)]
    report = build_report(fleet, CapacityLimits(), now=T0)
    metrics = _scrape(CapacityCollector(lambda: report, max_scopes_per_kind=3))
    per_rg = {
        lab["scope"]: v
        for lab, v in metrics["arcbeat_capacity_used"]
        if lab["kind"] == MACHINES_PER_RESOURCE_GROUP
    }
    assert per_rg == {
        f"resource_group={SUB_A}/rg9": 10,
        f"resource_group={SUB_A}/rg8": 9,
        f"resource_group={SUB_A}/rg7": 8,
    }


def test_collector_before_the_first_snapshot_exports_nothing():
    metrics = _scrape(CapacityCollector(lambda: None))
    assert all(samples == [] for samples in metrics.values())
    with pytest.raises(ValueError, match="max_scopes_per_kind"):
        CapacityCollector(lambda: None, max_scopes_per_kind=0)
