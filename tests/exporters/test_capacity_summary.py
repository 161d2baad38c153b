"""The workers' capacity summary (streams.decide.fleet_summary), the report built from it, and the
history exporter's capacity round (with a fake worker and a fake sink: no services)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from arcbeat.deploy.settings import Settings
from arcbeat.exporters.capacity.forecast import HISTORY_STEP, CapacityHistory, history_from_influxql
from arcbeat.exporters.capacity.model import (
    MACHINES_PER_RESOURCE_GROUP,
    RESOURCE_GROUPS_PER_SUBSCRIPTION,
    TENANT_OBJECTS,
    CapacityLimits,
    MachineSummary,
)
from arcbeat.exporters.capacity.report import build_report, build_report_from_summary
from arcbeat.exporters.capacity.task import CapacityTask, capacity_url
from arcbeat.exporters.capacity.to_json import report_to_json
from arcbeat.exporters.influx_points import capacity_line
from arcbeat.streams.decide.fleet_summary import (
    FleetSummary,
    SummaryError,
    merge,
    merge_all,
    summarize,
)
from arcbeat.streams.decide.machines import MachineInfo
from tests.support.examples import examples

SUBS = (
    "00000000-0000-0000-0000-00000000000a",
    "00000000-0000-0000-0000-00000000000B",  # case differs from its lower-cased twin below
    "00000000-0000-0000-0000-00000000000b",
)
RGS = ("rg-1", "RG-1", "prod.eu", "Prod.EU", "x(1)")
LOCATIONS = ("westeurope", "WestEurope", "westus2", "eastus", "westasia")
OSES = (
    ("", ""),
    ("Ubuntu", "18.04"),
    (" Ubuntu ", "20.04 "),
    ("CentOS Linux", "7.9"),
    ("Windows Server 2012 R2", ""),
    ("Windows Server 2008", ""),
    ("windows server", "6.1"),
)
AGENTS = ("", "unknown", "1.0", "1.00", "0.9.19", "1.10.2", "1.9.0")
T0 = 1_700_000_000.0


def info(sub: str, rg: str, loc: str, tags: int, os: tuple[str, str], agent: str) -> MachineInfo:
    name = f"m{tags}"
    return MachineInfo(
        resource_id=f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
        f"Microsoft.HybridCompute/machines/{name}",
        subscription_id=sub,
        resource_group=rg,
        machine_name=name,
        location=loc,
        os_type="linux",
        os_name=os[0] or None,
        os_version=os[1] or None,
        agent_version=agent,
        tags={f"t{i}": "v" for i in range(tags)},
        skew=0.0,
    )


machines_st = st.lists(
    st.builds(
        info,
        st.sampled_from(SUBS),
        st.sampled_from(RGS),
        st.sampled_from(LOCATIONS),
        st.integers(0, 55),
        st.sampled_from(OSES),
        st.sampled_from(AGENTS),
    ),
    max_size=60,
)


def as_machine_summary(i: MachineInfo) -> MachineSummary:
    return MachineSummary(
        i.subscription_id,
        i.resource_group,
        i.location,
        tag_count=len(i.tags),
        os_name=i.os_name or "",
        os_version=i.os_version or "",
        agent_version=i.agent_version,
    )


# --------------------------------------------------------------------------- summary


@given(machines_st, st.data())
@settings(max_examples=examples(200), deadline=None)
def test_merging_any_split_equals_the_whole(machines: list[MachineInfo], data: Any) -> None:
    workers = data.draw(st.integers(1, 5))
    owner = data.draw(
        st.lists(st.integers(0, workers - 1), min_size=len(machines), max_size=len(machines))
    )
    parts = [
        summarize(
            [m for m, o in zip(machines, owner, strict=True) if o == w],
            partitions=[w],
            partitions_total=workers,
        )
        for w in range(workers)
    ]
    whole = summarize(machines, partitions=range(workers), partitions_total=workers)
    assert merge_all(parts) == whole
    assert merge_all(reversed(parts)) == whole
    # pairwise merge is the same, and leaves its inputs alone
    before = [p.to_dict() for p in parts]
    acc = parts[0]
    for p in parts[1:]:
        acc = merge(acc, p)
    assert acc == whole
    assert [p.to_dict() for p in parts] == before
    assert whole.complete


@given(machines_st)
@settings(max_examples=examples(100), deadline=None)
def test_wire_form_round_trips(machines: list[MachineInfo]) -> None:
    s = summarize(machines, partitions=[0, 2], partitions_total=3)
    wire = orjson.loads(orjson.dumps(s.to_dict()))
    assert FleetSummary.from_dict(wire) == s
    assert not s.complete
    assert s.missing_partitions == (1,)


def test_counts_are_case_insensitive_and_keep_os_spelling() -> None:
    s = summarize(
        [
            info(SUBS[1], "RG-1", "WestEurope", 3, (" Ubuntu ", "18.04"), "1.0"),
            info(SUBS[2], "rg-1", "westeurope", 0, ("Ubuntu", "18.04"), "1.0"),
        ]
    )
    assert s.resource_groups == {(SUBS[2], "rg-1"): 2}
    assert s.locations == {"westeurope": 2}
    assert s.tag_counts == {3: 1, 0: 1}
    assert s.operating_systems == {("Ubuntu", "18.04"): 2}


def test_two_workers_counting_one_partition_is_refused() -> None:
    a = summarize([], partitions=[0, 1], partitions_total=3)
    b = summarize([], partitions=[1, 2], partitions_total=3)
    with pytest.raises(SummaryError, match=r"partition\(s\) 1 counted by two workers"):
        merge(a, b)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"version": 2}, "version: expected 1, got 2"),
        ({"machines": -1}, "machines: must be a count"),
        ({"locations": []}, "locations: must be a JSON object"),
        ({"tagCounts": {"x": 1}}, "tagCounts: keys must be tag counts"),
        ({"machines": 3}, "counts add up to 2, but machines is 3"),
        ({"resourceGroups": {"s": {"r": True}}}, r"resourceGroups\['s'\]\['r'\]: must be a count"),
    ],
)
def test_bad_wire_form_says_what_and_where(change: dict[str, Any], message: str) -> None:
    good = summarize([info(SUBS[0], "rg", "westus2", 1, OSES[1], "1.0")] * 2).to_dict()
    with pytest.raises(SummaryError, match=message) as err:
        FleetSummary.from_dict({**good, **change}, source="http://w:6066/capacity")
    assert str(err.value).startswith("http://w:6066/capacity: ")
    missing = {k: v for k, v in good.items() if k != "agentVersions"}
    with pytest.raises(SummaryError, match="lacks agentVersions"):
        FleetSummary.from_dict(missing)


# --------------------------------------------------------------------------- report


limits_st = st.builds(
    CapacityLimits,
    st.sampled_from([0, 1, 2, 980]),
    st.sampled_from([0, 3, 5, 800]),
    st.sampled_from([0, 3, 50]),
    st.sampled_from([0, 10, 50_000]),
)


@given(
    machines_st,
    limits_st,
    st.sampled_from([("*",), ("westeurope", "westus2"), ("eastus",)]),
    st.integers(0, 3),
)
@settings(max_examples=examples(200), deadline=None)
def test_report_from_summary_equals_report_from_machines(
    machines: list[MachineInfo], limits: CapacityLimits, regions: Sequence[str], past: int
) -> None:
    history = CapacityHistory()
    for d in range(past):  # some growth on a scope that exists and one that does not
        history.add(TENANT_OBJECTS, "tenant", T0 - (past - d) * 86400, d * 3)
        history.add(
            RESOURCE_GROUPS_PER_SUBSCRIPTION, f"subscription={SUBS[0]}", T0 - d * 3600 - 1, d
        )
    expected = build_report(
        [as_machine_summary(m) for m in machines],
        limits,
        regions=regions,
        history=history,
        now=T0,
    )
    got = build_report_from_summary(
        merge_all([summarize(machines[::2]), summarize(machines[1::2])]),
        limits,
        regions=regions,
        history=history,
        now=T0,
    )
    assert got == expected
    assert report_to_json(got) == report_to_json(expected)  # same order, too


def test_report_of_an_incomplete_summary_says_counts_are_low() -> None:
    s = summarize(
        [info(SUBS[0], "rg", "westus2", 1, OSES[1], "1.0")], partitions=[0, 3], partitions_total=4
    )
    report = build_report_from_summary(s, CapacityLimits(), now=T0)
    assert any("cover 2 of 4 partitions (missing 1, 2" in n for n in report.notes)


def test_history_from_influxql_answer() -> None:
    body = {
        "results": [
            {
                "statement_id": 0,
                "series": [
                    {
                        "name": "capacity",
                        "tags": {"kind": TENANT_OBJECTS, "scope": "tenant"},
                        "columns": ["time", "used"],
                        "values": [[T0, 10], [T0 + 3600, None], [T0 + 7200, 12]],
                    }
                ],
            }
        ]
    }
    history = CapacityHistory()
    assert history_from_influxql(body, history) == 2
    assert history.series(TENANT_OBJECTS, "tenant") == ((T0, 10), (T0 + 7200, 12))
    assert history_from_influxql({"results": [{"error": "database not found: x"}]}, history) == 0
    with pytest.raises(ValueError, match="refused"):
        history_from_influxql({"results": [{"error": "error parsing query"}]}, history)


# --------------------------------------------------------------------------- capacity task


def test_capacity_url() -> None:
    s = Settings().replace(web_host="10.0.0.5", web_port=7000)
    assert capacity_url(s) == "http://10.0.0.5:7000/capacity"
    assert capacity_url(s.replace(capacity_source_url="http://w:6066/")) == "http://w:6066/capacity"
    assert capacity_url(s.replace(capacity_source_url="http://w/capacity")) == "http://w/capacity"


class FakeSink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def write(self, lines: Sequence[str]) -> None:
        self.lines.extend(lines)

    async def close(self) -> None:
        pass


@pytest.fixture
async def fake_worker() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A loopback HTTP server answering GET /capacity with ``state["body"]``."""
    state: dict[str, Any] = {"body": {}, "status": 200}

    async def handle(request: web.Request) -> web.Response:
        return web.json_response(state["body"], status=state["status"])

    app = web.Application()
    app.router.add_get("/capacity", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        await runner.cleanup()


async def test_capacity_round_reports_writes_and_counts_failures(
    fake_worker: tuple[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    url, state = fake_worker
    s = Settings().replace(
        topic_prefix="capx",
        capacity_source_url=url,
        capacity_interval=10.0,
        limit_machines_per_resource_group=5,
        influx_url="http://127.0.0.1:1",  # no InfluxDB: history is not loaded, rounds go on
    )
    sink = FakeSink()
    registry = CollectorRegistry()
    task = CapacityTask(s, sink, registry)
    machines = [info(SUBS[0], "rg-a", "westeurope", 2, OSES[1], "1.0") for _ in range(4)]
    summary = summarize(machines, partitions=[0, 1], partitions_total=2)

    def failures() -> float:
        return registry.get_sample_value("arcbeat_capacity_fetch_failures_total") or 0.0

    caplog.set_level(logging.INFO, "arcbeat.exporters.history")
    async with aiohttp.ClientSession() as http:
        # a worker of another deployment
        state["body"] = {**summary.to_dict(), "topicPrefix": "other"}
        assert await task.round(http) is None
        assert failures() == 1
        assert "serves topic prefix 'other'" in caplog.text
        # a rebalance: one partition missing
        partial = summarize(machines, partitions=[0], partitions_total=2)
        state["body"] = {**partial.to_dict(), "topicPrefix": "capx"}
        assert await task.round(http) is None
        assert failures() == 2
        assert "cover 1 of 2 partitions" in caplog.text
        # the worker's own error
        state["status"], state["body"] = 502, {"error": "a worker did not answer /capacity"}
        assert await task.round(http) is None
        assert "answered HTTP 502" in caplog.text
        # good counts: a report, gauges, aligned points
        state["status"], state["body"] = 200, {**summary.to_dict(), "topicPrefix": "capx"}
        report = await task.round(http)
    assert report is not None
    assert failures() == 3
    assert "growth history not loaded" in caplog.text
    labels = {"kind": MACHINES_PER_RESOURCE_GROUP, "scope": f"resource_group={SUBS[0]}/rg-a"}
    assert registry.get_sample_value("arcbeat_capacity_use_ratio", labels) == 0.8
    assert registry.get_sample_value("arcbeat_capacity_used", labels) == 4
    at_ns = int(report.generated_at // 10) * 10 * 10**9
    assert capacity_line(MACHINES_PER_RESOURCE_GROUP, labels["scope"], 4, 5, at_ns) in sink.lines
    assert len(sink.lines) == len(report.checks)
    # recorded once per history step
    step = report.generated_at // HISTORY_STEP * HISTORY_STEP
    assert task.history.series(TENANT_OBJECTS, "tenant") == ((step, 4),)
