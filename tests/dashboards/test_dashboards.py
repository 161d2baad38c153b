"""Dashboards as code: structure, freshness of the committed JSON, provisioning, queries,
and `arcbeat dashboards push` error paths.

No Grafana server runs here. The push tests use a closed loopback port (unreachable) and a
small local aiohttp stub that answers like Grafana's HTTP API (401 for a bad token, 403 for
a token without rights, and the few endpoints push uses); they test arcbeat's side of the
protocol, not Grafana itself.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import subprocess
from typing import Any

import pytest
import yaml
from aiohttp import web

from arcbeat.dashboards.build import (
    DASHBOARD_DIR,
    build_all,
    dashboard_path,
    render,
    stale_files,
    write_all,
)
from arcbeat.dashboards.push import GrafanaPushError, datasource_payloads, push
from arcbeat.dashboards.queries import (
    BUILTIN_VALUES,
    default_variable_values,
    panel_queries,
    substitute_variables,
    variable_names,
    variable_queries,
)
from arcbeat.deploy.commands import dashboards as dashboards_command
from tests.support.paths import REPO

PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
UIDS = {"arcbeat-noc", "arcbeat-machine", "arcbeat-capacity"}

# The metric names of the contract (docs/metrics-alerts-history.md, Metrics); histograms add
# _bucket etc.
CONTRACT_METRICS = {
    "arcbeat_machines",
    "arcbeat_subscription_machines",
    "arcbeat_heartbeats_received_total",
    "arcbeat_rejects_total",
    "arcbeat_transitions_total",
    "arcbeat_detection_delay_seconds_bucket",
    "arcbeat_delivery_delay_seconds_bucket",
    "arcbeat_machines_late",
    "arcbeat_scope_degraded",
    "arcbeat_clock_skew_total",
    "arcbeat_consumer_lag",
    "arcbeat_last_event_timestamp_seconds",
    "arcbeat_scope_silent",
    "arcbeat_outage_held_machines",
    "arcbeat_machine_offline",
    "arcbeat_machine_series_overflow",
    "arcbeat_machine_series_overflow_total",
    "arcbeat_flapping_machines",
    "arcbeat_machines_offline_in_maintenance",
    "arcbeat_maintenance_windows_active",
    "arcbeat_capacity_used",
    "arcbeat_capacity_limit",
    "arcbeat_capacity_use_ratio",
    "arcbeat_capacity_days_to_limit",
}
# The InfluxDB schema of the shared contract: measurement -> tags and fields.
INFLUX_SCHEMA = {
    "transitions": {
        "resource_id",
        "status",
        "previous_status",
        "reason",
        "location",
        "subscription_id",
        "resource_group",
        "os_type",
        "mass_outage",
        "machine_name",
        "transition_id",
        "detection_delay",
        "last_heartbeat_at",
        "flapping",
    },
    "scope_events": {"scope", "type", "machines"},
    "fleet": {"scope", "partition", "connected", "disconnected", "expired"},
    "availability": {
        "resource_id",
        "subscription_id",
        "location",
        "received",
        "expected",
        "availability",
        "planned_seconds",
    },
    "capacity": {"kind", "scope", "used", "limit", "ratio"},
    "maintenance": {
        "window_id",
        "reason",
        "created_by",
        "selector",
        "recurrence",
        "ended_by",
        "start",
        "end",
    },
}


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    built: dict[str, dict[str, Any]] = build_all()
    return built


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


# --------------------------------------------------------------------------- build


def test_three_dashboards_with_stable_uids(dashboards):
    assert set(dashboards) == UIDS
    for uid, d in dashboards.items():
        assert d["uid"] == uid
        assert d["title"].startswith("arcbeat / ")
        assert "id" not in d or d["id"] is None  # Grafana assigns ids; uids identify


def test_committed_json_is_up_to_date(dashboards):
    stale = [
        uid
        for uid, d in dashboards.items()
        if not dashboard_path(DASHBOARD_DIR, uid).is_file()
        or dashboard_path(DASHBOARD_DIR, uid).read_text(encoding="utf-8") != render(d)
    ]
    assert not stale, f"stale dashboard JSON {stale}: run `arcbeat dashboards build`"
    committed = {p.stem for p in DASHBOARD_DIR.glob("*.json")}
    assert committed == UIDS, f"unexpected JSON files in {DASHBOARD_DIR}: {committed - UIDS}"


def test_build_is_deterministic():
    assert render(build_all()["arcbeat-noc"]) == render(build_all()["arcbeat-noc"])


def test_cli_build_writes_and_check_detects_stale(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="arcbeat")
    dashboards_command.register(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return int(args.func(args))

    assert run("dashboards", "build", "--check", "--out", str(tmp_path)) == 1
    assert run("dashboards", "build", "--out", str(tmp_path)) == 0
    assert {p.name for p in tmp_path.iterdir()} == {f"{u}.json" for u in UIDS}
    assert run("dashboards", "build", "--check", "--out", str(tmp_path)) == 0
    (tmp_path / "arcbeat-noc.json").write_text("{}", encoding="utf-8")
    assert stale_files(tmp_path) == [str(tmp_path / "arcbeat-noc.json")]
    assert run("dashboards", "build", "--check", "--out", str(tmp_path)) == 1
    assert "arcbeat dashboards build" in capsys.readouterr().err
    assert write_all(tmp_path)[0].read_text(encoding="utf-8").endswith("}\n")


# --------------------------------------------------------------------------- structure


def test_every_panel_has_a_query_and_a_unique_id(dashboards):
    for uid, d in dashboards.items():
        ids = [p["id"] for p in all_panels(d)]
        assert len(ids) == len(set(ids)), f"{uid}: duplicate panel ids"
        for p in all_panels(d):
            if p["type"] == "row":
                continue
            targets = p.get("targets", [])
            assert targets, f"{uid} / {p['title']!r}: no query"
            refs = [t["refId"] for t in targets]
            assert all(refs) and len(refs) == len(set(refs)), f"{uid} / {p['title']}: refIds"
            for t in targets:
                text = t.get("expr") or t.get("query")
                assert text and text.strip(), f"{uid} / {p['title']!r}: empty query"
            assert p.get("title"), f"{uid}: panel {p['id']} has no title"


def test_grid_positions_are_present_inside_the_grid_and_do_not_overlap(dashboards):
    for uid, d in dashboards.items():
        boxes = []
        for p in d["panels"]:  # top-level panels share the grid (no collapsed rows here)
            gp = p.get("gridPos")
            assert gp, f"{uid} / {p.get('title')!r}: no gridPos"
            assert gp["w"] > 0 and gp["h"] > 0
            assert gp["x"] >= 0 and gp["x"] + gp["w"] <= 24, f"{uid} / {p['title']}: {gp}"
            boxes.append((p["title"], gp))
        for i, (ta, a) in enumerate(boxes):
            for tb, b in boxes[i + 1 :]:
                overlap = (
                    a["x"] < b["x"] + b["w"]
                    and b["x"] < a["x"] + a["w"]
                    and a["y"] < b["y"] + b["h"]
                    and b["y"] < a["y"] + a["h"]
                )
                assert not overlap, f"{uid}: {ta!r} {a} overlaps {tb!r} {b}"


def test_variables_are_defined_and_used(dashboards):
    expected = {
        "arcbeat-noc": {"location", "subscription", "resource_group"},
        "arcbeat-machine": {"subscription", "resource_group", "location", "resource_id"},
        "arcbeat-capacity": {"subscription", "resource_group", "location"},
    }
    for uid, d in dashboards.items():
        defined = {v["name"] for v in d["templating"]["list"]}
        assert defined == expected[uid]
        texts = [q.query for q in panel_queries(d)] + [
            str(v["query"]) for v in d["templating"]["list"]
        ]
        used = set().union(*(variable_names(t) for t in texts))
        assert used - defined <= set(BUILTIN_VALUES), f"{uid}: undefined {used - defined}"
        assert defined <= used, f"{uid}: defined but unused {defined - used}"
        for v in d["templating"]["list"]:
            assert v["type"] == "query" and v["datasource"]["uid"]
            if v.get("includeAll"):
                assert v["allValue"] == ".*"  # regex "All", see dashboards/common.py


def test_resource_id_variable_comes_from_influx_transitions(dashboards):
    (var,) = [
        v for v in dashboards["arcbeat-machine"]["templating"]["list"] if v["name"] == "resource_id"
    ]
    assert var["datasource"]["uid"] == "arcbeat-influxdb"
    assert var["query"].startswith('SHOW TAG VALUES FROM "transitions" WITH KEY = "resource_id"')
    assert not var.get("includeAll") and not var.get("multi")


def test_promql_uses_only_contract_metrics(dashboards):
    for d in dashboards.values():
        for q in panel_queries(d) + variable_queries(d):
            if q.datasource == "prometheus":
                used = set(re.findall(r"\barcbeat_\w+", q.query))
                assert used <= CONTRACT_METRICS, f"{q.where}: unknown {used - CONTRACT_METRICS}"


def test_influxql_uses_only_the_contract_schema(dashboards):
    known = set(INFLUX_SCHEMA) | set().union(*INFLUX_SCHEMA.values())
    for d in dashboards.values():
        queries = [
            (q.where, q.query)
            for q in panel_queries(d) + variable_queries(d)
            if q.datasource == "influxdb"
        ]
        queries += [(f"{d['uid']} / annotation", a) for a in _annotation_queries(d)]
        for where, query in queries:
            aliases = set(re.findall(r'\bAS "(\w+)"', query))
            measurements = set(re.findall(r'\bFROM "(\w+)"', query))
            assert measurements and measurements <= set(INFLUX_SCHEMA), where
            idents = set(re.findall(r'"(\w+)"', query))
            assert idents <= known | aliases, f"{where}: unknown {idents - known - aliases}"


def _annotation_queries(dashboard: dict[str, Any]) -> list[str]:
    return [
        a["target"]["query"]
        for a in dashboard.get("annotations", {}).get("list", [])
        if a.get("datasource", {}).get("type") == "influxdb"
    ]


def test_machine_dashboard_shows_maintenance_windows_as_annotations(dashboards):
    (annotation,) = dashboards["arcbeat-machine"]["annotations"]["list"]
    assert annotation["datasource"] == {"type": "influxdb", "uid": "arcbeat-influxdb"}
    assert annotation["enable"] is True
    target = annotation["target"]
    assert target["rawQuery"] is True and target["fromAnnotations"] is True
    query = target["query"]
    assert 'FROM "maintenance"' in query
    # windows overlapping the range: started before its end, ended after its start
    assert "time <= ${__to}ms" in query and '"end" >= ${__from:date:seconds}' in query
    # start is the point's time; the end in milliseconds is the region's end
    assert '"end" * 1000 AS "time_end"' in query
    assert target["timeEndColumn"] == "maintenance.time_end"
    assert target["textColumn"] == "reason"
    assert set(target["tagsColumn"].split(",")) == {"window_id", "created_by"}
    for uid in ("arcbeat-noc", "arcbeat-capacity"):
        assert not dashboards[uid].get("annotations", {}).get("list")


def test_availability_excludes_planned_time_with_planned_seconds_beside_it(dashboards):
    for uid in ("arcbeat-noc", "arcbeat-machine"):
        titles = {q.panel_title: q for q in panel_queries(dashboards[uid])}
        availability = titles["Availability (range)"]
        assert 'sum("received") / sum("expected")' in availability.query
        planned = titles["Planned downtime (range)"]
        assert 'sum("planned_seconds")' in planned.query and 'FROM "availability"' in planned.query
    noc = {q.panel_title: q for q in panel_queries(dashboards["arcbeat-noc"])}
    assert noc["Active maintenance windows"].query.startswith(
        "max(arcbeat_maintenance_windows_active)"
    )
    assert "arcbeat_machines_offline_in_maintenance" in noc["Offline in maintenance"].query
    # the offline table names the covering window
    assert noc["Offline machines (how long)"].labels[-1] == "maintenance"
    # the location ratio is the one the page fires on: planned downtime left out
    assert "arcbeat_machines_offline_in_maintenance" in noc["Offline ratio by location"].query


def test_promql_parses_with_promtool(dashboards, tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (Debian package prometheus)"
    rules: list[dict[str, str]] = []
    for d in dashboards.values():
        values = {**default_variable_values(d), "resource_id": "/subscriptions/x/m"}
        for q in panel_queries(d) + variable_queries(d):
            if q.datasource == "prometheus":
                rules.append(
                    {"record": f"dash:q{len(rules)}", "expr": substitute_variables(q.query, values)}
                )
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dash", "rules": rules}]}))
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(rules)} rules found" in proc.stdout


# --------------------------------------------------------------------------- provisioning


def _provisioned_datasources() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "arcbeat.yaml").read_text())
    assert doc["apiVersion"] == 1
    return {ds["uid"]: ds for ds in doc["datasources"]}


def _referenced_datasources(d: dict[str, Any]) -> set[tuple[str, str]]:
    refs = set()
    for p in all_panels(d):
        for holder in [p, *p.get("targets", [])]:
            ds = holder.get("datasource")
            if ds:
                refs.add((ds["type"], ds["uid"]))
    for v in d["templating"]["list"]:
        refs.add((v["datasource"]["type"], v["datasource"]["uid"]))
    return refs


def test_dashboards_reference_only_provisioned_datasources(dashboards):
    provisioned = _provisioned_datasources()
    for uid, d in dashboards.items():
        for kind, ds_uid in _referenced_datasources(d):
            assert ds_uid in provisioned, f"{uid}: datasource {ds_uid} is not provisioned"
            assert provisioned[ds_uid]["type"] == kind


def test_provisioned_datasources():
    ds = _provisioned_datasources()
    assert set(ds) == {"arcbeat-prometheus", "arcbeat-influxdb"}
    prom, influx = ds["arcbeat-prometheus"], ds["arcbeat-influxdb"]
    assert (prom["type"], prom["url"]) == ("prometheus", "http://prometheus:9090")
    assert (influx["type"], influx["url"]) == ("influxdb", "http://influxdb:8086")
    assert influx["jsonData"]["dbName"] == "arcbeat"
    assert influx["jsonData"]["version"] == "InfluxQL"
    assert influx["jsonData"]["httpHeaderName1"] == "Authorization"
    assert influx["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUX_TOKEN}"


def test_provisioning_matches_the_compose_grafana_service():
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "arcbeat.yaml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    # the token variable the datasource header uses reaches Grafana's environment
    header = _provisioned_datasources()["arcbeat-influxdb"]["secureJsonData"]["httpHeaderValue1"]
    (variable,) = re.findall(r"\$\{(\w+)\}", header)
    assert variable in grafana["environment"]


def test_push_payloads_match_provisioning():
    provisioned = _provisioned_datasources()
    payloads = datasource_payloads(
        prometheus_url="http://p:9090", influx_url="http://i:8086", influx_token="t"
    )
    assert {p["uid"]: p["type"] for p in payloads} == {
        uid: ds["type"] for uid, ds in provisioned.items()
    }
    influx = next(p for p in payloads if p["type"] == "influxdb")
    assert influx["secureJsonData"]["httpHeaderValue1"] == "Token t"
    assert influx["jsonData"]["dbName"] == "arcbeat"
    v1 = datasource_payloads(
        prometheus_url="x", influx_url="y", influx_username="u", influx_password="pw"
    )[1]
    assert v1["user"] == "u" and v1["secureJsonData"] == {"password": "pw"}


# --------------------------------------------------------------------------- queries


def test_panel_queries_cover_every_target_with_its_shape(dashboards):
    for d in dashboards.values():
        n_targets = sum(len(p.get("targets", [])) for p in all_panels(d))
        assert len(panel_queries(d)) == n_targets
    noc = {(q.panel_title, q.ref_id): q for q in panel_queries(dashboards["arcbeat-noc"])}
    offline = noc[("Offline machines (how long)", "A")]
    assert offline.datasource == "prometheus" and offline.shape == "vector"
    assert "time() - max by (resource_id" in offline.query
    assert offline.labels[:2] == ("resource_id", "machine_name")
    rate = noc[("Transitions per minute (Prometheus)", "A")]
    assert rate.shape == "matrix" and rate.labels == ("to", "reason")
    influx = noc[("Transitions per interval (InfluxDB history)", "A")]
    assert influx.datasource == "influxdb" and influx.shape == "series"
    assert influx.labels == ("status", "reason")
    cap = {q.panel_title: q for q in panel_queries(dashboards["arcbeat-capacity"])}
    assert cap["Machines per location"].labels == ("scope",)  # the outer GROUP BY
    machine = {q.panel_title: q for q in panel_queries(dashboards["arcbeat-machine"])}
    assert machine["Status timeline"].shape == "table"


def test_variable_queries_turn_label_values_into_promql(dashboards):
    qs = {q.panel_title: q for q in variable_queries(dashboards["arcbeat-noc"])}
    rg = qs["variable resource_group"]
    assert rg.query == (
        'count by (resource_group) (arcbeat_machine_offline{subscription=~"$subscription"})'
    )
    assert rg.shape == "vector" and rg.labels == ("resource_group",)
    machine = {q.ref_id: q for q in variable_queries(dashboards["arcbeat-machine"])}
    assert machine["resource_id"].datasource == "influxdb"


def test_substitute_variables():
    q = 'rate(x{a=~"$loc", b="${sub}", c="[[rg]]"}[$__rate_interval]) $__range_s'
    assert substitute_variables(q, {"loc": ".*", "sub": "s1", "rg": "r"}) == (
        'rate(x{a=~".*", b="s1", c="r"}[1m]) 3600'
    )
    assert substitute_variables("WHERE $timeFilter AND x =~ /^$v$/", {"v": ".*"}) == (
        "WHERE time > now() - 1h AND x =~ /^.*$/"
    )
    assert substitute_variables("[$__range]", {"__range": "6h"}) == "[6h]"
    with pytest.raises(ValueError, match=r"\$missing"):
        substitute_variables("up{a='$missing'}", {})


def test_default_values_cover_every_multi_value_variable(dashboards):
    assert default_variable_values(dashboards["arcbeat-noc"]) == {
        "location": ".*",
        "subscription": ".*",
        "resource_group": ".*",
    }
    # the machine has to be chosen
    assert "resource_id" not in default_variable_values(dashboards["arcbeat-machine"])


# --------------------------------------------------------------------------- push


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_push_to_an_unreachable_grafana_names_the_url(dashboards):
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(GrafanaPushError) as err:
        push(url, "token", dashboards, datasources=None, timeout=5)
    message = str(err.value)
    assert url in message and "cannot reach Grafana" in message
    assert "connection refused" in message


def test_push_rejects_a_bad_url():
    with pytest.raises(GrafanaPushError, match="http:// or https://"):
        push("127.0.0.1:3000", "t", {})


class FakeGrafana:
    """Answers the endpoints push uses, with Grafana's status codes and error bodies."""

    GOOD = "good-token"
    VIEWER = "viewer-token"

    def __init__(self) -> None:
        self.datasources: dict[str, dict[str, Any]] = {}
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.app = web.Application(middlewares=[self.auth])
        self.app.add_routes(
            [
                web.get("/api/datasources/uid/{uid}", self.get_ds),
                web.put("/api/datasources/uid/{uid}", self.put_ds),
                web.post("/api/datasources", self.post_ds),
                web.get("/api/folders/{uid}", self.get_folder),
                web.post("/api/folders", self.post_folder),
                web.post("/api/dashboards/db", self.post_dashboard),
            ]
        )

    @web.middleware
    async def auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        token = request.headers.get("Authorization", "")
        if token not in (f"Bearer {self.GOOD}", f"Bearer {self.VIEWER}"):
            return web.json_response(
                {
                    "extra": None,
                    "message": "Invalid API key",
                    "messageId": "api-keys.invalid",
                    "statusCode": 401,
                    "traceID": "",
                },
                status=401,
            )
        if token == f"Bearer {self.VIEWER}" and "datasources" in request.path:
            return web.json_response(
                {
                    "accessErrorId": "ACE0000000001",
                    "message": "You'll need additional permissions to perform this action. "
                    "Permissions needed: datasources:read",
                    "title": "Access denied",
                },
                status=403,
            )
        response: web.StreamResponse = await handler(request)
        return response

    async def get_ds(self, request: web.Request) -> web.Response:
        ds = self.datasources.get(request.match_info["uid"])
        if ds is None:
            return web.json_response({"message": "Data source not found"}, status=404)
        return web.json_response(ds)

    async def put_ds(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.datasources[request.match_info["uid"]] = body
        return web.json_response({"message": "Datasource updated", "datasource": body})

    async def post_ds(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.datasources[body["uid"]] = body
        return web.json_response({"message": "Datasource added", "datasource": body})

    async def get_folder(self, request: web.Request) -> web.Response:
        folder = self.folders.get(request.match_info["uid"])
        if folder is None:
            return web.json_response({"message": "folder not found"}, status=404)
        return web.json_response(folder)

    async def post_folder(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.folders[body["uid"]] = body
        return web.json_response(body)

    async def post_dashboard(self, request: web.Request) -> web.Response:
        body = await request.json()
        dash = body["dashboard"]
        if not body.get("overwrite") and dash["uid"] in self.dashboards:
            return web.json_response({"message": "version-mismatch"}, status=412)
        self.dashboards[dash["uid"]] = body
        return web.json_response(
            {"status": "success", "uid": dash["uid"], "url": f"/d/{dash['uid']}/x", "version": 1}
        )


@pytest.fixture
async def fake_grafana():
    fake = FakeGrafana()
    runner = web.AppRunner(fake.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_push_with_a_refused_token_says_so(fake_grafana, dashboards):
    fake, url = fake_grafana
    payloads = datasource_payloads(prometheus_url="http://p:9090", influx_url="http://i:8086")
    with pytest.raises(GrafanaPushError) as err:
        await asyncio.to_thread(push, url, "wrong-token", dashboards, datasources=payloads)
    message = str(err.value)
    assert url in message and "refused the token" in message and "401" in message
    assert "Invalid API key" in message
    assert fake.datasources == {} and fake.dashboards == {}


async def test_push_with_a_token_lacking_rights_says_so(fake_grafana, dashboards):
    _, url = fake_grafana
    payloads = datasource_payloads(prometheus_url="http://p:9090", influx_url="http://i:8086")
    with pytest.raises(GrafanaPushError, match=r"403 Forbidden.*--no-datasources"):
        await asyncio.to_thread(push, url, FakeGrafana.VIEWER, dashboards, datasources=payloads)


async def test_push_creates_then_updates_idempotently(fake_grafana, dashboards):
    fake, url = fake_grafana
    payloads = datasource_payloads(
        prometheus_url="http://p:9090", influx_url="http://i:8086", influx_token="tok"
    )
    first = await asyncio.to_thread(push, url, FakeGrafana.GOOD, dashboards, datasources=payloads)
    assert first.datasources == [
        ("arcbeat-prometheus", "created"),
        ("arcbeat-influxdb", "created"),
    ]
    assert first.folder == "created"
    assert {uid for uid, _ in first.dashboards} == UIDS
    saved = fake.dashboards["arcbeat-noc"]
    assert saved["overwrite"] is True and saved["folderUid"] == "arcbeat"
    assert saved["dashboard"]["uid"] == "arcbeat-noc" and saved["dashboard"]["id"] is None

    second = await asyncio.to_thread(push, url, FakeGrafana.GOOD, dashboards, datasources=payloads)
    assert [state for _, state in second.datasources] == ["updated", "updated"]
    assert second.folder == "exists"
    assert set(fake.datasources) == {"arcbeat-prometheus", "arcbeat-influxdb"}
    assert len(fake.dashboards) == 3


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="arcbeat")
    dashboards_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_cli_push_needs_a_token(monkeypatch, capsys):
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert _cli("dashboards", "push", "--url", "http://127.0.0.1:1", "--token", "") == 2
    assert "GRAFANA_TOKEN" in capsys.readouterr().err


def test_cli_push_reports_an_unreachable_grafana(capsys):
    url = f"http://127.0.0.1:{_closed_port()}"
    assert _cli("dashboards", "push", "--url", url, "--token", "t", "--timeout", "5") == 1
    err = capsys.readouterr().err
    assert url in err and "cannot reach Grafana" in err


async def test_cli_push_against_the_stub(fake_grafana, capsys):
    fake, url = fake_grafana
    code = await asyncio.to_thread(
        _cli,
        "dashboards",
        "push",
        "--url",
        url,
        "--token",
        FakeGrafana.GOOD,
        "--prometheus-url",
        "http://prometheus:9090",
        "--influx-url",
        "http://influxdb:8086",
    )
    assert code == 0
    assert fake.datasources["arcbeat-prometheus"]["url"] == "http://prometheus:9090"
    assert fake.datasources["arcbeat-influxdb"]["url"] == "http://influxdb:8086"
    assert "pushed 3 dashboards and 2 datasources" in capsys.readouterr().out


async def test_cli_push_reads_the_token_from_a_file(fake_grafana, capsys, tmp_path):
    _fake, url = fake_grafana
    token = tmp_path / "grafana.token"
    token.write_text(FakeGrafana.GOOD + "\n")
    code = await asyncio.to_thread(
        _cli, "dashboards", "push", "--url", url, "--token", "", "--token-file", str(token)
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert FakeGrafana.GOOD not in captured.out + captured.err
    missing = tmp_path / "missing.token"
    code = await asyncio.to_thread(
        _cli, "dashboards", "push", "--url", url, "--token", "", "--token-file", str(missing)
    )
    err = capsys.readouterr().err
    assert code == 2 and str(missing) in err and "GRAFANA_TOKEN_FILE" in err
