"""Capacity end to end, against the real stack (Kafka + InfluxDB of `arcbeat stack`):

one ``arcbeat worker`` subprocess (own topic prefix, app id, data folder and web port) fed 60
hand-made heartbeats, then

- ``GET /capacity`` (fleet-wide and ``local=1``) counts what was sent;
- ``arcbeat capacity --json`` equals :func:`build_report` over the same machines, computed
  here independently from what the test sent, with small limits so scopes cross 80 % / 95 %;
- ``arcbeat history`` (own InfluxDB database, free port, ``capacity_interval`` 2 s) serves
  ``arcbeat_capacity_*`` on its /metrics and writes aligned ``capacity`` points; when the
  worker is gone it counts the failed fetches and keeps running.

Every process started here is killed at the end; the database is dropped. Fails (never skips)
when Kafka or InfluxDB is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from arcbeat.deploy.aio import run_sync
from arcbeat.deploy.settings import Settings
from arcbeat.deploy.stack import Stack
from arcbeat.exporters.capacity.model import (
    MACHINES_PER_RESOURCE_GROUP,
    RESOURCE_GROUPS_PER_SUBSCRIPTION,
    TAGS_PER_MACHINE,
    TENANT_OBJECTS,
    CapacityLimits,
    MachineSummary,
)
from arcbeat.exporters.capacity.report import build_report
from arcbeat.exporters.capacity.to_json import report_to_dict
from arcbeat.exporters.sinks import quote_ident
from arcbeat.streams.decide.records import heartbeat_payload
from tests.support.paths import REPO

pytestmark = pytest.mark.services

T = TypeVar("T")
PARTITIONS = 3
SUB_A = "0000000a-0000-4000-8000-00000000000a"  # 10 resource groups: at its limit of 10
SUB_B = "0000000b-0000-4000-8000-00000000000b"  # 8 resource groups: 80 %
LIMITS = {
    "limit_resource_groups_per_subscription": 10,
    "limit_machines_per_resource_group": 5,
    "limit_tags_per_machine": 5,
    "limit_tenant_objects": 70,
}


# ------------------------------------------------------------------------------ the fleet


@dataclass(frozen=True)
class Sent:
    sub: str
    rg: str
    name: str
    location: str
    tags: int
    os_name: str
    os_version: str
    agent: str

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.sub}/resourceGroups/{self.rg}"
            f"/providers/Microsoft.HybridCompute/machines/{self.name}"
        )

    def summary(self) -> MachineSummary:
        return MachineSummary(
            self.sub, self.rg, self.location, self.tags, self.os_name, self.os_version, self.agent
        )


def fleet() -> list[Sent]:
    """60 machines. SUB_A: rg-0 has 5 machines (100 % of 5, spelled two ways), rg-1 has 4
    (80 %), rg-2..rg-9 one each; SUB_B: 8 groups of 5 (100 % each) and 3 more in rg-b7."""
    oses = [("Ubuntu", "18.04"), ("Windows Server 2008 R2", "6.1"), ("Ubuntu", "22.04"), ("", "")]
    out: list[Sent] = []

    def add(sub: str, rg: str) -> None:
        i = len(out)
        os_name, os_version = oses[i % len(oses)]
        out.append(
            Sent(
                sub,
                rg,
                f"vm-{i:03d}",
                "westeurope" if i % 3 else "westus2",
                5 if i == 7 else i % 4,  # one machine at the tag limit
                os_name,
                os_version,
                "1.3.0" if i % 5 else "1.2.0",
            )
        )

    for n in range(5):
        add(SUB_A, "RG-0" if n % 2 else "rg-0")  # case-insensitive: one resource group
    for _ in range(4):
        add(SUB_A, "rg-1")
    for g in range(2, 10):
        add(SUB_A, f"rg-{g}")
    for g in range(8):
        for _ in range(5):
            add(SUB_B, f"rg-b{g}")
    for _ in range(3):
        add(SUB_B, "rg-b7")
    assert len(out) == 60
    return out


# ------------------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    every: float = 0.5,
    on_timeout: Callable[[], str] = lambda: "",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{on_timeout()}")
        time.sleep(every)


def http_get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            status, body = int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        status, body = int(exc.code), exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def influx_query(settings: Settings, q: str) -> dict[str, Any]:
    data = urllib.parse.urlencode({"db": settings.influx.db, "q": q, "epoch": "ns"}).encode()
    with urllib.request.urlopen(f"{settings.influx.url}/query", data=data, timeout=15) as r:
        body: dict[str, Any] = json.loads(r.read())
    return body


def influx_rows(settings: Settings, q: str) -> list[list[Any]] | None:
    """Rows of ``q`` (None while the database does not exist yet)."""
    result = influx_query(settings, q)["results"][0]
    if "database not found" in result.get("error", ""):
        return None
    assert "error" not in result, f"{q}: {result['error']}"
    return [row for series in result.get("series", []) for row in series["values"]]


class Proc:
    """A subprocess with its output in a log file; killed by :meth:`kill`."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], root: Path) -> None:
        self.name = name
        self.log = root / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "arcbeat.deploy.cli", *args],
                env=dict(env),
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # signals reach this process only
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return f"--- {self.name} log ---\n{text[-chars:]}"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def produce(settings: Settings, machines: list[Sent]) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
        await producer.start()
        try:
            now = time.time()
            for m in machines:
                value = heartbeat_payload(
                    m.resource_id,
                    location=m.location,
                    os_type="windows" if m.os_name.startswith("Windows") else "linux",
                    os_name=m.os_name,
                    os_version=m.os_version,
                    agent_version=m.agent,
                    tags={f"tag{t}": "x" for t in range(m.tags)},
                    sent_at=now,
                )
                # the default partitioner (murmur2) puts the key where the worker expects it
                await producer.send(
                    settings.topics.heartbeats, value, key=m.resource_id.lower().encode()
                )
            await producer.flush()
        finally:
            await producer.stop()

    run_sync(go)


def metric_samples(text: str, name: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[(s.labels.get("kind", ""), s.labels.get("scope", ""))] = s.value
    return out


# ------------------------------------------------------------------------------ fixture


@dataclass
class Deployment:
    settings: Settings
    env: dict[str, str]
    root: Path
    procs: list[Proc]

    def start(self, name: str, *args: str, **env: str) -> Proc:
        proc = Proc(name, list(args), {**self.env, **env}, self.root)
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs)


@pytest.fixture
def deployment(stack: Stack, tmp_path: Path) -> Iterator[Deployment]:
    tag = uuid.uuid4().hex[:10]
    prefix = f"test-capacity-{tag}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCBEAT_")}
    env.update(
        {
            "ARCBEAT_CONFIG": str(tmp_path / "no-arcbeat.toml"),
            "ARCBEAT_KAFKA_BOOTSTRAP": stack.settings.kafka.bootstrap,
            "ARCBEAT_INFLUX_URL": stack.settings.influx.url,
            "ARCBEAT_INFLUX_API": "v1",
            "ARCBEAT_INFLUX_DB": f"test_capacity_{tag}",
            "ARCBEAT_TOPIC_PREFIX": prefix,
            "ARCBEAT_APP_ID": prefix,
            "ARCBEAT_PARTITIONS": str(PARTITIONS),
            "ARCBEAT_DATA_DIR": str(tmp_path / "data"),
            "ARCBEAT_STATE_DIR": str(REPO / "state"),
            "ARCBEAT_WEB_PORT": str(free_port()),
            "ARCBEAT_HISTORY_PORT": str(free_port()),
            "ARCBEAT_SESSION_TIMEOUT": "10",
            "ARCBEAT_CAPACITY_INTERVAL": "2",
            "ARCBEAT_INFLUX_FLUSH_INTERVAL": "0.2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({"ARCBEAT_" + k.upper(): str(v) for k, v in LIMITS.items()})
    settings = Settings.load(env=env)
    dep = Deployment(settings, env, tmp_path, [])
    try:
        yield dep
    finally:
        for p in dep.procs:
            p.kill()
        with contextlib.suppress(Exception):
            influx_query(settings, f"DROP DATABASE {quote_ident(settings.influx.db)}")


# ------------------------------------------------------------------------------ test


def test_capacity_from_worker_counts_to_cli_metrics_and_influxdb(deployment: Deployment) -> None:
    dep, s = deployment, deployment.settings
    base = f"http://{s.worker.web_host}:{s.worker.web_port}"
    machines = fleet()

    worker = dep.start("worker", "worker", "--loglevel", "info")

    def owns_all() -> bool | None:
        assert worker.alive(), f"worker exited with {worker.proc.returncode}\n{worker.tail()}"
        with contextlib.suppress(OSError):
            status, body = http_get(f"{base}/readyz")
            if status == 200 and len(body["partitions"]) == PARTITIONS:
                return True
        return None

    wait_for("the worker to own every partition", owns_all, 120, on_timeout=worker.tail)
    produce(s, machines)

    def counted() -> dict[str, Any] | None:
        status, body = http_get(f"{base}/capacity")
        return body if status == 200 and body["machines"] == len(machines) else None

    summary = wait_for("the worker to count 60 machines", counted, 60, on_timeout=worker.tail)
    assert summary["workers"] == 1
    assert summary["topicPrefix"] == s.kafka.topic_prefix
    assert summary["partitions"] == list(range(PARTITIONS))
    assert summary["partitionsTotal"] == PARTITIONS
    assert summary["resourceGroups"][SUB_A]["rg-0"] == 5  # RG-0 and rg-0 are one group
    assert len(summary["resourceGroups"][SUB_A]) == 10
    assert len(summary["resourceGroups"][SUB_B]) == 8
    assert sum(summary["locations"].values()) == 60
    status, local = http_get(f"{base}/capacity?local=1")
    assert status == 200
    assert {k: local[k] for k in ("machines", "resourceGroups", "tagCounts")} == {
        k: summary[k] for k in ("machines", "resourceGroups", "tagCounts")
    }
    status, body = http_get(f"{base}/capacity?limit=5")
    assert status == 400
    assert "unknown query parameter" in body["error"]

    # ---- arcbeat capacity --json: the report over what was sent, computed independently
    cli = subprocess.run(
        [sys.executable, "-m", "arcbeat.deploy.cli", "capacity", "--json", "--url", base],
        env=dep.env,
        cwd=dep.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    got = json.loads(cli.stdout)
    expected = report_to_dict(
        build_report(
            [m.summary() for m in machines],
            CapacityLimits(**{k.removeprefix("limit_"): v for k, v in LIMITS.items()}),
            regions=s.input.regions,
            now=time.time(),
        )
    )
    for doc in (got, expected):
        doc.pop("generatedAt")
    assert got == expected
    checks = {(c["kind"], c["scope"]): c for c in got["checks"]}
    assert (
        checks[(RESOURCE_GROUPS_PER_SUBSCRIPTION, f"subscription={SUB_A}")]["level"] == "critical"
    )
    assert checks[(RESOURCE_GROUPS_PER_SUBSCRIPTION, f"subscription={SUB_B}")]["level"] == "warning"
    assert (
        checks[(MACHINES_PER_RESOURCE_GROUP, f"resource_group={SUB_A}/rg-1")]["level"] == "warning"
    )
    assert checks[(MACHINES_PER_RESOURCE_GROUP, f"resource_group={SUB_B}/rg-b7")]["level"] == "over"
    assert checks[(TAGS_PER_MACHINE, "tenant")]["ratio"] == 1.0
    assert checks[(TENANT_OBJECTS, "tenant")]["level"] == "warning"  # 60 of 70
    assert got["tags"]["machinesAtLimit"] == 1
    assert got["unsupportedOs"]["machines"] == 30  # Windows Server 2008 R2 and Ubuntu 22.04
    assert got["unsupportedOs"]["unknown"] == 15
    assert got["agentVersions"]["latest"] == "1.3.0"

    # ---- arcbeat history: capacity gauges on its /metrics, points in InfluxDB
    history = dep.start("history", "history")
    metrics_url = f"http://{s.worker.web_host}:{s.influx.history_port}/metrics"

    def scrape() -> str | None:
        assert history.alive(), f"history exited\n{history.tail()}"
        with contextlib.suppress(OSError):
            status, text = http_get(metrics_url)
            if status == 200 and "arcbeat_capacity_use_ratio{" in text:
                return str(text)
        return None

    text = wait_for("arcbeat_capacity_use_ratio on /metrics", scrape, 60, on_timeout=dep.logs)
    ratios = metric_samples(text, "arcbeat_capacity_use_ratio")
    assert ratios[(MACHINES_PER_RESOURCE_GROUP, f"resource_group={SUB_A}/rg-0")] == 1.0
    assert ratios[(RESOURCE_GROUPS_PER_SUBSCRIPTION, f"subscription={SUB_B}")] == 0.8
    assert ratios[(TENANT_OBJECTS, "tenant")] == pytest.approx(60 / 70)
    assert metric_samples(text, "arcbeat_capacity_limit")[(TAGS_PER_MACHINE, "tenant")] == 5

    scope = f"resource_group={SUB_A}/rg-1"
    query = (
        'SELECT used, "limit", ratio FROM capacity '
        f"WHERE kind = '{MACHINES_PER_RESOURCE_GROUP}' AND scope = '{scope}'"
    )

    def two_points() -> list[list[Any]] | None:
        rows = influx_rows(s, query)
        return rows if rows is not None and len(rows) >= 2 else None

    rows = wait_for("two capacity rounds in InfluxDB", two_points, 30, on_timeout=dep.logs)
    assert all(row[1:] == [4, 5, 0.8] for row in rows)
    times = [row[0] for row in rows]
    assert all(t % 2_000_000_000 == 0 for t in times), times  # aligned to capacity_interval
    assert len(set(times)) == len(times)
    every_scope = influx_rows(s, "SELECT count(used) FROM capacity GROUP BY kind, scope")
    assert every_scope is not None and len(every_scope) == len(got["checks"])

    # ---- workers unreachable: counted, logged, the exporter keeps running
    worker.kill()

    def failures() -> float | None:
        assert history.alive(), f"history exited\n{history.tail()}"
        _, text = http_get(metrics_url)
        value = next(
            (
                s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "arcbeat_capacity_fetch_failures_total"
            ),
            0.0,
        )
        return value if value >= 2 else None

    wait_for("counted capacity fetch failures", failures, 30, on_timeout=history.tail)
    assert "no capacity report this round" in history.log.read_text()
    status, text = http_get(metrics_url)
    assert metric_samples(text, "arcbeat_capacity_use_ratio")  # the last good report stays
    history.stop()
    assert history.proc.returncode == 0, history.tail()
