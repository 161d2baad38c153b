"""The local stack: real processes (Kafka, Prometheus, Alertmanager, InfluxDB) on loopback.

Tests that need the services use the session fixture ``stack`` (conftest), which starts the
stack if needed and fails when a service cannot start. Process management (failure messages,
stale pid files, SIGKILL of a stubborn process group) is exercised with tiny shell services.
The `down` test runs a second stack in its own state folder on other ports, so the shared
stack stays up for everyone else.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from arcbeat.deploy import processes
from arcbeat.deploy.commands import stack as stack_command
from arcbeat.deploy.commands.stack import format_status
from arcbeat.deploy.kafka_admin import KafkaAdminError
from arcbeat.deploy.kafka_admin.topics import HEARTBEAT_TOPIC_MAX_BYTES, topic_specs
from arcbeat.deploy.services import (
    Service,
    StatePaths,
    ensure_jars,
    package_dir,
    port_open,
    render_prometheus_config,
)
from arcbeat.deploy.settings import Settings
from arcbeat.deploy.stack import Stack, StackError
from tests.support.paths import REPO

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
LOG_APPEND_TIME = 1


def _get(url: str) -> tuple[int, bytes]:
    try:
        with _HTTP.open(url, timeout=10) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with _HTTP.open(req, timeout=10) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _influx_query(base: str, q: str, db: str | None = None) -> dict[str, object]:
    form = {"q": q} if db is None else {"q": q, "db": db}
    status, body = _post(
        f"{base}/query", urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
    )
    assert status == 200, body
    result: dict[str, object] = json.loads(body)
    return result


@pytest.fixture
async def prefix(stack: Stack) -> AsyncIterator[str]:
    """A unique topic prefix; its topics are deleted afterwards (the shared broker stays tidy)."""
    name = f"test-stack-{uuid.uuid4().hex[:10]}"
    yield name
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.settings.kafka.bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(f"{name}.")]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


# -- pure logic ------------------------------------------------------------------------------


def test_topic_specs_names_and_configs() -> None:
    specs = {s.name: s for s in topic_specs("p", 3)}
    assert list(specs) == [
        "p.heartbeats",
        "p.status",
        "p.heartbeats.dlq",
        "p.fleet",
        "p.maintenance",
    ]
    hb = specs["p.heartbeats"]
    assert hb.configs["message.timestamp.type"] == "LogAppendTime"
    # far above the worker's own limit, so the worker (not the broker) rejects big messages
    assert int(hb.configs["max.message.bytes"]) >= 100 * Settings().input.max_message_bytes
    maintenance = specs.pop("p.maintenance")
    assert all(s.partitions == 3 for s in specs.values())
    # every worker reads all windows: one partition whatever ARCBEAT_PARTITIONS says, compacted
    # and rolled often enough that compaction runs
    assert (maintenance.partitions, maintenance.partitions_setting) == (1, "")
    assert maintenance.configs["cleanup.policy"] == "compact"
    assert int(maintenance.configs["segment.ms"]) <= 60 * 60 * 1000
    with pytest.raises(KafkaAdminError, match="partitions"):
        topic_specs("p", 0)


def test_render_prometheus_config_makes_rules_absolute_and_moves_ports(tmp_path: Path) -> None:
    text = (REPO / "deploy" / "prometheus" / "prometheus.yml").read_text()
    out = render_prometheus_config(text, tmp_path, 29090, 29093)
    assert f"- {tmp_path}/rules/*.yml" in out
    assert '"127.0.0.1:29093"' in out and '"127.0.0.1:9093"' not in out
    assert '"127.0.0.1:29090"' in out and '"127.0.0.1:9090"' not in out
    assert '"127.0.0.1:6066"' in out  # worker targets untouched
    with pytest.raises(StackError, match=r"prometheus\.yml"):
        render_prometheus_config("global: {}\n", tmp_path, 1, 2)


def test_non_loopback_url_is_refused(tmp_path: Path) -> None:
    settings = Settings().replace(
        state_dir=str(tmp_path), influx_url="http://influx.example.com:8086"
    )
    with pytest.raises(StackError, match=r"influx_url .*loopback"):
        _ = Stack(settings).service("influxdb").ports


def test_two_services_on_one_port_are_refused(tmp_path: Path) -> None:
    settings = Settings().replace(state_dir=str(tmp_path), kafka_controller_port=9093)
    with pytest.raises(StackError, match="port 9093 to both kafka and alertmanager"):
        Stack(settings).up()


def test_format_status_table(tmp_path: Path) -> None:
    stack = Stack(Settings().replace(state_dir=str(tmp_path)))
    statuses = stack.status()  # nothing runs in an empty state folder
    assert {s.running for s in statuses.values()} == {False}
    table = format_status(statuses, tmp_path)
    assert table.splitlines()[0].split()[:4] == ["SERVICE", "PID", "ADDRESS", "HEALTHY"]
    assert "kafka" in table and str(tmp_path) in table


def test_cli_status_and_down_on_an_empty_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="arcbeat")
    stack_command.register(parser.add_subparsers(dest="command", required=True))
    monkeypatch.setenv("ARCBEAT_STATE_DIR", str(tmp_path / "state"))
    args = parser.parse_args(["stack", "status", "--json"])
    assert args.func(args) == 1  # nothing healthy
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"kafka", "prometheus", "alertmanager", "influxdb"}
    assert not any(s["running"] for s in report.values())
    args = parser.parse_args(["stack", "down"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.count("not running") == 4
    monkeypatch.setenv("ARCBEAT_INFLUX_URL", "http://db.example.com:8086")
    args = parser.parse_args(["stack", "status"])
    assert args.func(args) == 1
    assert "stack status: error: setting influx_url" in capsys.readouterr().err


# -- process management with tiny shell services ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ShellService(Service):
    """A stand-in service: a shell script whose $0 is the marker."""

    name = "fake"
    start_timeout = 2.0
    stop_timeout = 1.0

    def __init__(self, settings: Settings, paths: StatePaths, script: str, healthy: bool) -> None:
        super().__init__(settings, paths)
        self.script = script
        self.is_healthy = healthy
        self.port = _free_port()

    @property
    def ports(self) -> list[int]:
        return [self.port]

    @property
    def marker(self) -> str:
        return str(self.paths.root / "fake-service-marker")

    def argv(self) -> list[str]:
        return ["sh", "-c", self.script, self.marker]

    def check(self) -> str | None:
        return None if self.is_healthy else "the fake service never gets healthy"


def _fake_stack(tmp_path: Path, script: str, healthy: bool) -> tuple[Stack, ShellService]:
    stack = Stack(Settings().replace(state_dir=str(tmp_path / "state")))
    fake = ShellService(stack.settings, stack.paths, script, healthy)
    stack.services = [fake]
    return stack, fake


def test_service_that_exits_fails_with_its_log(tmp_path: Path) -> None:
    stack, fake = _fake_stack(tmp_path, "echo boom-from-fake; exit 3", healthy=False)
    with pytest.raises(StackError) as err:
        stack.up()
    message = str(err.value)
    assert message.startswith("fake: exited before becoming healthy (exit code 3)")
    assert str(fake.log) in message and "boom-from-fake" in message
    assert not fake.pid_file.exists()


def test_service_never_healthy_is_stopped_and_reported(tmp_path: Path) -> None:
    stack, fake = _fake_stack(tmp_path, "echo waiting-forever; exec sleep 60", healthy=False)
    with pytest.raises(StackError, match=r"fake: not healthy within 2 s .*never gets healthy"):
        stack.up()
    assert processes.find(fake.marker) == []
    assert not fake.pid_file.exists()


def test_up_is_idempotent_and_down_kills_a_stubborn_group(tmp_path: Path) -> None:
    # Ignores SIGTERM, and so does its child (ignored signals survive exec).
    stack, fake = _fake_stack(tmp_path, "trap '' TERM; sleep 300 & wait", healthy=True)
    messages: list[str] = []
    try:
        # A stale pid file naming a live process that is not ours (this test) is cleared.
        fake.pid_file.parent.mkdir(parents=True)
        fake.pid_file.write_text(f"{os.getpid()}\n")
        first = stack.up(messages.append)["fake"]
        assert any("stale pid file" in m for m in messages)
        assert first.healthy and first.pid not in (None, os.getpid())
        assert first.pid is not None
        assert stack.up(messages.append)["fake"].pid == first.pid
        assert any("already running" in m for m in messages)
        time.sleep(0.3)  # let sh start its child
        group = processes.group_members(first.pid)
        assert len(group) >= 2  # sh and sleep
        assert stack.down(messages.append) == ["fake"]
        assert any("killed after SIGTERM timed out" in m for m in messages)
        assert processes.group_members(first.pid) == []
        assert not any(processes.alive(pid) for pid in group)
        assert not fake.pid_file.exists()
        assert stack.down() == []  # nothing left to stop
    finally:
        stack.down()


# -- the real stack --------------------------------------------------------------------------


@pytest.mark.services
def test_status_reports_every_service_healthy(stack: Stack) -> None:
    statuses = stack.status()
    assert list(statuses) == ["kafka", "prometheus", "alertmanager", "influxdb"]
    for s in statuses.values():
        assert s.running and s.healthy, s
        assert s.pid is not None and processes.alive(s.pid)
        assert s.log.parent == stack.state_dir / "logs"
    kafka_port = stack.settings.kafka.bootstrap.rsplit(":", 1)[1]
    assert statuses["kafka"].address == f"127.0.0.1:{kafka_port}"


@pytest.mark.services
def test_up_twice_reuses_the_running_services(stack: Stack) -> None:
    before = {n: s.pid for n, s in stack.status().items()}
    messages: list[str] = []
    after = Stack(stack.settings).up(messages.append)
    assert {n: s.pid for n, s in after.items()} == before
    assert sum("already running" in m for m in messages) == 4


@pytest.mark.services
def test_jar_cache_is_reused_and_has_the_slf4j2_api(stack: Stack) -> None:
    messages: list[str] = []
    ensure_jars(stack.paths, messages.append)
    assert messages == []  # cache hit: no Maven run
    pom = (package_dir() / "kafka" / "pom.xml").read_bytes()
    stamp = (stack.paths.jars / ".pom.sha256").read_text().strip()
    assert stamp == hashlib.sha256(pom).hexdigest()
    jars = {p.name for p in stack.paths.jars.glob("*.jar")}
    assert "kafka_2.13-4.1.1.jar" in jars
    # log4j-slf4j2-impl needs the SLF4J 2 API; with 1.7 the broker would log nothing
    assert [j for j in jars if j.startswith("slf4j-api-")] == ["slf4j-api-2.0.16.jar"]
    assert (stack.paths.root / "kafka" / "logs" / "server.log").stat().st_size > 0


@pytest.mark.services
def test_health_endpoints_answer(stack: Stack) -> None:
    prometheus = stack.service("prometheus").address
    alertmanager = stack.service("alertmanager").address
    influx = stack.service("influxdb").address
    assert _get(f"http://{prometheus}/-/ready")[0] == 200
    assert _get(f"http://{alertmanager}/-/ready")[0] == 200
    assert _get(f"http://{influx}/ping")[0] == 204


@pytest.mark.services
def test_prometheus_runs_the_packaged_config(stack: Stack) -> None:
    prometheus = stack.service("prometheus").address
    status, body = _get(f"http://{prometheus}/api/v1/status/config")
    assert status == 200
    config = json.loads(body)["data"]["yaml"]
    assert "job_name: arcbeat\n" in config and "job_name: arcbeat-history" in config
    assert "/prometheus/rules/*.yml" in config
    alertmanager = stack.service("alertmanager").address
    deadline = time.monotonic() + 20
    active: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        active = json.loads(_get(f"http://{prometheus}/api/v1/alertmanagers")[1])["data"][
            "activeAlertmanagers"
        ]
        if active:
            break
        time.sleep(0.5)
    assert [a["url"] for a in active] == [f"http://{alertmanager}/api/v2/alerts"]


@pytest.mark.services
def test_influx_write_and_query_round_trip(stack: Stack) -> None:
    base = f"http://{stack.service('influxdb').address}"
    databases = _influx_query(base, "SHOW DATABASES")
    names = [row[0] for row in databases["results"][0]["series"][0]["values"]]  # type: ignore[index]
    assert stack.settings.influx.db in names
    db = f"arcbeat_stack_test_{uuid.uuid4().hex[:8]}"
    _influx_query(base, f'CREATE DATABASE "{db}"')
    try:
        line = f"stack_test,machine=m1 value=42i,ok=true {int(time.time())}"
        status, body = _post(f"{base}/write?db={db}&precision=s", line.encode(), "text/plain")
        assert status == 204, body
        result = _influx_query(base, "SELECT value, ok FROM stack_test WHERE machine='m1'", db)
        series = result["results"][0]["series"][0]  # type: ignore[index]
        assert series["columns"] == ["time", "value", "ok"]
        assert [row[1:] for row in series["values"]] == [[42, True]]
    finally:
        _influx_query(base, f'DROP DATABASE "{db}"')


@pytest.mark.services
async def test_topics_are_created_once_with_their_configs(stack: Stack, prefix: str) -> None:
    assert set(stack.ensure_topics(prefix, 2).values()) == {"created"}
    assert set(stack.ensure_topics(prefix, 2).values()) == {"exists"}
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.settings.kafka.bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{prefix}.heartbeats")]
        )
        configs = {c[0]: c[1] for c in response.resources[0][4]}
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{prefix}.maintenance")]
        )
        maintenance = {c[0]: c[1] for c in response.resources[0][4]}
        names = [f"{prefix}.{n}" for n in ("status", "fleet", "maintenance")]
        topics = await admin.describe_topics(names)
    finally:
        await admin.close()
    assert configs["message.timestamp.type"] == "LogAppendTime"
    assert int(configs["max.message.bytes"]) == HEARTBEAT_TOPIC_MAX_BYTES
    assert maintenance["cleanup.policy"] == "compact"
    partitions = {t["topic"]: len(t["partitions"]) for t in topics}
    assert partitions == dict(zip(names, [2, 2, 1], strict=True))


@pytest.mark.services
async def test_produce_consume_round_trip_stamps_broker_time(stack: Stack, prefix: str) -> None:
    stack.ensure_topics(prefix, 1)
    topic = f"{prefix}.heartbeats"
    bootstrap = stack.settings.kafka.bootstrap
    create_time = int(time.time() * 1000) - 3_600_000  # an agent clock one hour behind
    big = b"x" * (64 * 1024)  # above the worker's limit, still accepted by the topic
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        before = time.time() * 1000
        meta = await producer.send_and_wait(
            topic, b'{"hello":1}', key=b"m1", timestamp_ms=create_time
        )
        await producer.send_and_wait(topic, big, key=b"m2")
        after = time.time() * 1000
    finally:
        await producer.stop()
    assert meta.timestamp_type == LOG_APPEND_TIME
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        first = await asyncio.wait_for(consumer.getone(), 30)
        second = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert (first.key, first.value) == (b"m1", b'{"hello":1}')
    assert first.timestamp_type == LOG_APPEND_TIME
    assert first.timestamp != create_time
    assert before - 2000 <= first.timestamp <= after + 2000  # the broker's clock, not the agent's
    assert second.value == big


@pytest.mark.services
def test_second_stack_starts_and_down_leaves_no_process(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A full stack in its own state folder on other ports: up, a port clash, down, nothing left."""
    state = tmp_path_factory.mktemp("second-stack")
    # Share the jar cache (same POM hash), so nothing is downloaded.
    (state / "jars").symlink_to(stack.paths.jars, target_is_directory=True)
    settings = stack.settings.replace(
        state_dir=str(state),
        kafka_bootstrap="127.0.0.1:29092",
        kafka_controller_port=29192,
        prometheus_url="http://127.0.0.1:29090",
        alertmanager_url="http://127.0.0.1:29093",
        influx_url="http://127.0.0.1:29086",
        influx_rpc_port=29089,
    )
    second = Stack(settings)
    ports = [p for svc in second.services for p in svc.ports]
    assert not any(port_open(p) for p in ports), "ports of the second stack are taken"
    try:
        # InfluxDB's port is taken by a stranger: up names the service and the port.
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", 29086))
            squatter.listen()
            with pytest.raises(StackError, match=r"influxdb: port\(s\) 29086 .* already in use"):
                second.up()
        statuses = second.up()
        assert all(s.healthy for s in statuses.values()), statuses
        pids = [s.pid for s in statuses.values() if s.pid is not None]
        assert len(pids) == 4
        assert set(second.ensure_topics("second", 1).values()) == {"created"}
        assert sorted(second.down()) == ["alertmanager", "influxdb", "kafka", "prometheus"]
        assert not any(processes.alive(pid) for pid in pids)
        assert not any(processes.group_members(pid) for pid in pids)
        left = [
            pid
            for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
            if str(state) in processes.cmdline(pid) and processes.alive(pid)
        ]
        assert left == []
        assert not any(port_open(p) for p in ports)
        assert not list((state / "pids").glob("*.pid"))
        assert not any(s.running for s in second.status().values())
    finally:
        second.down()
    assert stack.status()["kafka"].healthy  # the shared stack was not touched
