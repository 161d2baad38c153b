"""`arcbeat history` against the real services: Kafka and InfluxDB 1.6 of the local stack,
plus a private influxd (own ports and folders) that the outage test kills and restarts.

Every test uses its own topic prefix and its own InfluxDB database, and reads what it wrote
back with InfluxQL. These tests fail (never skip) when a service is missing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from arcbeat.deploy.kafka_admin.topics import ensure_topics_async
from arcbeat.deploy.settings import Settings
from arcbeat.deploy.stack import Stack
from arcbeat.exporters.history.exporter import HistoryExporter, history_group_id
from arcbeat.exporters.influx_points import QUERIES
from arcbeat.exporters.sinks import SinkError, V1Sink, V2Sink, make_sink, quote_ident
from tests.support.paths import REPO

pytestmark = pytest.mark.services

PARTITIONS = 3
SUB = "00000000-0000-0000-0000-00000000beef"
BASE = 1_714_564_800  # 2024-05-01T12:00:00Z


# ------------------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso(ts: float) -> str:
    whole = int(ts)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        + f".{round((ts - whole) * 1000):03d}Z"
    )


def rid(i: int) -> str:
    return (
        f"/subscriptions/{SUB}/resourceGroups/RG-{i % 7}"
        f"/providers/Microsoft.HybridCompute/machines/Machine-{i:05d}"
    )


def transitions(start: int, count: int, machines: int = 40) -> list[dict[str, Any]]:
    """StatusChanged records numbered start..start+count-1, in the status records' wire format."""
    out = []
    for n in range(start, start + count):
        m = n % machines
        number = n // machines + 1
        connected = number % 2 == 1
        out.append(
            {
                "type": "StatusChanged",
                "transitionId": f"{rid(m).lower()}#{number}",
                "resourceId": rid(m),
                "subscriptionId": SUB,
                "resourceGroup": f"RG-{m % 7}",
                "machineName": f"Machine-{m:05d}",
                "location": "westeurope" if m % 2 else "westus2",
                "osType": "linux",
                "agentVersion": "1.2.3",
                "tags": {"env": "test"},
                "previousStatus": None
                if number == 1
                else ("Disconnected" if connected else "Connected"),
                "status": "Connected" if connected else "Disconnected",
                "reason": (
                    "onboarded"
                    if number == 1
                    else ("heartbeat_resumed" if connected else "heartbeat_timeout")
                ),
                "changedAt": iso(BASE + n + 0.5),
                "lastHeartbeatAt": iso(BASE + n - 900),
                "detectionDelaySeconds": None if connected else 0.5,
                "flapping": False,
                "massOutage": False,
            }
        )
    return out


def key_of(record: dict[str, Any]) -> bytes:
    if record["type"] == "StatusChanged":
        return str(record["resourceId"]).lower().encode()
    if record["type"].startswith("Scope"):
        return f"scope:{record['scope']}".encode()
    if record["type"] == "PartitionSnapshot":
        return f"partition:{record['partition']}".encode()
    return str(record.get("resourceId", record["type"])).lower().encode()


async def produce(bootstrap: str, topic: str, records: list[dict[str, Any] | bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i, rec in enumerate(records):
            if isinstance(rec, bytes):
                await producer.send(topic, rec, key=f"raw-{i}".encode())
            else:
                await producer.send(topic, orjson.dumps(rec), key=key_of(rec))
        await producer.flush()
    finally:
        await producer.stop()


async def influx_query(url: str, db: str, q: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/query", data={"db": db, "q": q}) as resp,
    ):
        body: dict[str, Any] = await resp.json(content_type=None)
        assert resp.status == 200, body
        return body


async def influx_rows(url: str, db: str, q: str) -> list[list[Any]]:
    body = await influx_query(url, db, q)
    result = body["results"][0]
    assert "error" not in result, f"{q}: {result['error']}"
    rows: list[list[Any]] = []
    for series in result.get("series", []):
        rows.extend(series["values"])
    return rows


async def transition_ids(url: str, db: str) -> list[str]:
    """Every transition_id in the database ([] while it is unreachable or not created yet)."""
    try:
        body = await influx_query(url, db, "SELECT transition_id FROM transitions")
    except (aiohttp.ClientError, OSError):
        return []
    result = body["results"][0]
    if "database not found" in result.get("error", ""):
        return []
    assert "error" not in result, result["error"]
    return [row[1] for series in result.get("series", []) for row in series["values"]]


async def wait_for(
    what: str, check: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.25
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def committed(bootstrap: str, group: str, topics: list[str]) -> dict[TopicPartition, int]:
    """Committed offsets of ``group`` (without joining it) and the end offsets, per partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        return {tp: (await consumer.committed(tp)) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


@contextlib.asynccontextmanager
async def running(exporter: HistoryExporter) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(exporter.run())
    try:
        yield task
    finally:
        exporter.request_stop()
        await asyncio.wait_for(task, 30)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def names() -> tuple[str, str]:
    """A unique topic prefix and InfluxDB database name for one test."""
    tag = uuid.uuid4().hex[:10]
    return f"test-history-{tag}", f"test_history_{tag}"


@pytest.fixture
async def env(stack: Stack, names: tuple[str, str]) -> AsyncIterator[Settings]:
    """Settings for one test: own topics (created, 3 partitions) and own database (dropped)."""
    prefix, db = names
    settings = stack.settings.replace(
        topic_prefix=prefix,
        app_id=prefix,
        influx_api="v1",
        influx_db=db,
        influx_batch_size=50,
        influx_flush_interval=0.2,
        history_port=free_port(),
        partitions=PARTITIONS,
    )
    await ensure_topics_async(settings.kafka.bootstrap, prefix, PARTITIONS)
    yield settings
    with contextlib.suppress(Exception):
        await influx_query(settings.influx.url, db, f"DROP DATABASE {quote_ident(db)}")


class PrivateInfluxd:
    """An influxd of our own (config rendered from deploy/influxdb/influxdb.conf), so the
    outage test can kill and restart it without touching the shared stack."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        template = REPO / "deploy" / "influxdb" / "influxdb.conf"
        conf = string.Template(template.read_text()).substitute(
            rpc_bind=f"127.0.0.1:{free_port()}",
            meta_dir=root / "meta",
            data_dir=root / "data",
            wal_dir=root / "wal",
            http_bind=f"127.0.0.1:{self.http_port}",
        )
        self.conf = root / "influxdb.conf"
        self.conf.write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.root / "influxd.log").open("ab")
        self.proc = subprocess.Popen(
            ["influxd", "-config", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"influxd exited: {self.log_tail()}"
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.http_port), 0.2),
            ):
                return
            time.sleep(0.1)
        raise AssertionError(f"influxd did not listen on {self.url}: {self.log_tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def log_tail(self) -> str:
        return (self.root / "influxd.log").read_text(errors="replace")[-2000:]


@pytest.fixture
def private_influxd() -> Iterator[PrivateInfluxd]:
    assert shutil.which("influxd"), "influxd (Debian package influxdb) is not installed"
    root = Path(tempfile.mkdtemp(prefix="arcbeat-influxd-"))
    server = PrivateInfluxd(root)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------ tests


async def test_exports_every_record_type_and_commits(env: Settings) -> None:
    s = env
    n = 300
    status = transitions(0, n)
    scope_events = [
        {
            "type": "ScopeSilent",
            "scope": "location=westeurope",
            "machines": 25,
            "at": iso(BASE + 10),
        },
        {
            "type": "ScopeRecovered",
            "scope": "location=westeurope",
            "machines": 25,
            "at": iso(BASE + 70),
        },
    ]
    bad: list[dict[str, Any] | bytes] = [b"{not json", orjson.dumps({"type": "Mystery"})]
    snapshots = [
        {
            "type": "PartitionSnapshot",
            "partition": p,
            "at": iso(BASE + 10 * t),
            "scopes": {
                "fleet": {"Connected": 10 + p, "Disconnected": t, "Expired": 0},
                "location=westeurope": {"Connected": 5},
            },
        }
        for t in range(2)
        for p in range(PARTITIONS)
    ]
    windows = [
        {
            "type": "WindowCounts",
            "resourceId": rid(i),
            "subscriptionId": SUB,
            "location": "westeurope",
            "windowStart": iso(BASE),
            "windowEnd": iso(BASE + 3600),
            "received": 12 - i,
            "expected": 12,
        }
        for i in range(5)
    ]
    capacity = {
        "type": "CapacitySnapshot",
        "at": iso(BASE),
        "kind": "resource_groups_per_subscription",
        "scope": f"subscription={SUB}",
        "used": 7,
        "limit": 980,
    }
    await produce(s.kafka.bootstrap, s.topics.status, [*status, *scope_events, *bad])
    await produce(s.kafka.bootstrap, s.topics.fleet, [*snapshots, *windows, capacity])
    total_points = n + 2 + 2 * len(snapshots) + len(windows) + 1

    registry = CollectorRegistry()
    exporter = HistoryExporter(s, make_sink(s.influx), registry=registry)
    async with running(exporter):

        async def all_written() -> bool:
            return sample(registry, "arcbeat_history_points_written_total") >= total_points

        await wait_for("all points written", all_written, 60)
        assert exporter.metrics_port is not None
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{exporter.metrics_port}/metrics") as resp,
        ):
            text = await resp.text()
        assert resp.status == 200
        assert f"arcbeat_history_points_written_total {float(total_points)}" in text
        assert 'arcbeat_history_skipped_total{reason="invalid_json"} 1.0' in text
        assert 'arcbeat_history_skipped_total{reason="unknown_type"} 1.0' in text
        assert "arcbeat_history_buffered_points 0.0" in text
        assert sample(registry, "arcbeat_history_last_write_timestamp_seconds") > time.time() - 60

    # offsets: everything committed, including past the two skipped records
    topics = [s.topics.status, s.topics.fleet]
    assert await committed(s.kafka.bootstrap, history_group_id(s), topics) == await end_offsets(
        s.kafka.bootstrap, topics
    )

    url, db = s.influx.url, s.influx.db
    ids = await transition_ids(url, db)
    assert len(ids) == n
    assert set(ids) == {r["transitionId"] for r in status}
    rows = await influx_rows(
        url,
        db,
        "SELECT machine_name, status, previous_status, reason, detection_delay, flapping, "
        f"mass_outage FROM transitions WHERE transition_id = '{status[45]['transitionId']}'",
    )
    assert [row[1:] for row in rows] == [
        ["Machine-00005", "Disconnected", "Connected", "heartbeat_timeout", 0.5, False, "false"]
    ]
    assert rows[0][0] == "2024-05-01T12:00:45.5Z"
    rows = await influx_rows(
        url,
        db,
        "SELECT sum(connected), sum(disconnected) FROM fleet WHERE scope = 'fleet' "
        f"AND time >= '{iso(BASE)}' AND time < '{iso(BASE + 20)}' GROUP BY time(10s)",
    )
    assert [row[1:] for row in rows] == [[33, 0], [33, 3]]
    rows = await influx_rows(url, db, "SELECT machines, type FROM scope_events")
    assert [row[1:] for row in rows] == [[25, "ScopeSilent"], [25, "ScopeRecovered"]]
    rows = await influx_rows(
        url, db, f"SELECT availability FROM availability WHERE resource_id = '{rid(2).lower()}'"
    )
    assert [row[1] for row in rows] == [10 / 12]
    rows = await influx_rows(url, db, 'SELECT used, "limit", ratio FROM capacity')
    assert [row[1:] for row in rows] == [[7, 980, 7 / 980]]

    # every documented query parses and runs
    for name, query in QUERIES.items():
        q = query.replace("<lower-case resource id>", rid(1).lower())
        await influx_rows(url, db, q.replace("now() - ", f"'{iso(BASE + 10**6)}' - "))
        assert name

    # idempotent re-write: a second exporter (another group) writes everything again
    registry2 = CollectorRegistry()
    again = HistoryExporter(
        s, make_sink(s.influx), registry=registry2, group_id=f"{s.kafka.app_id}-again"
    )
    async with running(again):

        async def rewritten() -> bool:
            return sample(registry2, "arcbeat_history_points_written_total") >= total_points

        await wait_for("the re-write", rewritten, 60)
    assert sorted(await transition_ids(url, db)) == sorted(ids)
    rows = await influx_rows(url, db, "SELECT count(connected) FROM fleet")
    assert rows[0][1] == 2 * len(snapshots)


async def test_maintenance_windows_become_points(env: Settings) -> None:
    """``<prefix>.maintenance`` (read from the beginning, without a group): one point per
    window at its start, the latest value of a window winning; a tombstone writes nothing;
    another exporter (nothing was committed) writes the same points again."""
    s = env
    window = {
        "id": "mw-1",
        "selector": {"location": "westeurope"},
        "start": iso(BASE),
        "end": iso(BASE + 7200),
        "recurrence": None,
        "reason": "patching",
        "createdBy": "alice",
        "createdAt": iso(BASE - 60),
        "endedBy": None,
        "endedAt": None,
    }
    ended = {**window, "endedBy": "bob", "endedAt": iso(BASE + 1800)}
    weekly = {
        **window,
        "id": "mw-2",
        "selector": {"resourceIds": [rid(1)]},
        "start": iso(BASE + 86400),
        "end": iso(BASE + 30 * 86400),
        "recurrence": {"days": ["sat"], "at": "02:00", "duration": 3600.0, "timeZone": "UTC"},
    }
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for value in (window, weekly, ended):
            await producer.send(
                s.topics.maintenance, orjson.dumps(value), key=str(value["id"]).encode()
            )
        await producer.send(s.topics.maintenance, None, key=b"mw-gone")
        await producer.flush()
    finally:
        await producer.stop()

    url, db = s.influx.url, s.influx.db
    query = 'SELECT window_id, reason, ended_by, "start", "end" FROM maintenance'
    for group in (history_group_id(s), f"{s.kafka.app_id}-again"):
        registry = CollectorRegistry()
        exporter = HistoryExporter(s, make_sink(s.influx), registry=registry, group_id=group)
        async with running(exporter):

            async def written(registry: CollectorRegistry = registry) -> bool:
                return sample(registry, "arcbeat_history_points_written_total") >= 3

            await wait_for("the maintenance windows", written, 60)
        rows = await influx_rows(url, db, query)
        assert [row[1:] for row in rows] == [
            ["mw-1", "patching", "bob", float(BASE), float(BASE + 1800)],
            ["mw-2", "patching", "", float(BASE + 86400), float(BASE + 30 * 86400)],
        ]
        assert rows[0][0] == "2024-05-01T12:00:00Z"  # time = start
        assert sample(registry, "arcbeat_history_skipped_total", reason="empty") == 0


async def test_influxdb_outage_loses_nothing(
    env: Settings, private_influxd: PrivateInfluxd
) -> None:
    """Kill influxd, produce 140 transitions over ~6 s, keep it down 20 s (ten times the
    exporter's 2 s backoff cap here, so writes fail and are retried at the cap several times
    with the buffer full and consumption paused), restart it: every transition exactly once."""
    s = env.replace(influx_url=private_influxd.url, influx_batch_size=20, influx_flush_interval=0.1)
    registry = CollectorRegistry()
    exporter = HistoryExporter(
        s, make_sink(s.influx), registry=registry, max_buffered_points=60, backoff_max=2.0
    )
    first, during = transitions(0, 100), transitions(100, 240)
    expected = {r["transitionId"] for r in first + during}
    topics = [s.topics.status, s.topics.fleet]

    async with running(exporter):
        await produce(s.kafka.bootstrap, s.topics.status, list(first))

        async def first_written() -> bool:
            return len(await transition_ids(s.influx.url, s.influx.db)) == len(first)

        await wait_for("the first 100 transitions", first_written, 60)
        private_influxd.kill()
        before = await committed(s.kafka.bootstrap, history_group_id(s), topics)
        assert sum(before.values()) == len(first)

        # InfluxDB down in the middle of the run, long enough for retries at the backoff cap
        outage_end = time.monotonic() + 20
        max_buffered = 0
        paused_seen = False
        for chunk in range(0, len(during), 20):
            await produce(s.kafka.bootstrap, s.topics.status, list(during[chunk : chunk + 20]))
            await asyncio.sleep(0.8)
            max_buffered = max(max_buffered, exporter.buffered_points)
            paused_seen = paused_seen or sample(registry, "arcbeat_history_consumption_paused") == 1
        while time.monotonic() < outage_end:
            await asyncio.sleep(0.5)
            max_buffered = max(max_buffered, exporter.buffered_points)
            paused_seen = paused_seen or sample(registry, "arcbeat_history_consumption_paused") == 1

        assert sample(registry, "arcbeat_history_write_failures_total") >= 3
        assert paused_seen, "the full buffer should have paused consumption"
        assert max_buffered <= 60, f"buffer grew to {max_buffered} points (limit 60)"
        during_outage = await committed(s.kafka.bootstrap, history_group_id(s), topics)
        assert during_outage == before, "offsets must not advance while InfluxDB is down"

        private_influxd.start()

        async def all_there() -> bool:
            return len(await transition_ids(s.influx.url, s.influx.db)) >= len(expected)

        await wait_for("all transitions after the restart", all_there, 90)

        async def drained() -> bool:
            return bool(exporter.buffered_points == 0)

        await wait_for("an empty buffer", drained, 30)

    ids = await transition_ids(s.influx.url, s.influx.db)
    assert len(ids) == len(expected), "duplicates or losses"
    assert set(ids) == expected
    assert sample(registry, "arcbeat_history_consumption_paused") == 0
    assert await committed(s.kafka.bootstrap, history_group_id(s), topics) == await end_offsets(
        s.kafka.bootstrap, topics
    )


async def test_sigkilled_exporter_loses_nothing(env: Settings, tmp_path: Path) -> None:
    """`arcbeat history` killed with SIGKILL mid-stream, then restarted."""
    s = env.replace(influx_batch_size=10, influx_flush_interval=0.05)
    records = transitions(0, 400)
    child_env = {
        **os.environ,
        "ARCBEAT_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
        "ARCBEAT_TOPIC_PREFIX": s.kafka.topic_prefix,
        "ARCBEAT_APP_ID": s.kafka.app_id,
        "ARCBEAT_INFLUX_URL": s.influx.url,
        "ARCBEAT_INFLUX_DB": s.influx.db,
        "ARCBEAT_INFLUX_BATCH_SIZE": "10",
        "ARCBEAT_INFLUX_FLUSH_INTERVAL": "0.05",
        "ARCBEAT_HISTORY_PORT": str(s.influx.history_port),
    }
    argv = [sys.executable, "-m", "arcbeat.deploy.cli", "history"]
    log = tmp_path / "history.log"

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv, env=child_env, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    child = spawn()
    try:
        await produce(s.kafka.bootstrap, s.topics.status, list(records[:200]))

        async def some_written() -> bool:
            assert child.poll() is None, log.read_text()[-3000:]
            return len(await transition_ids(s.influx.url, s.influx.db)) >= 50

        await wait_for("the first writes", some_written, 60, every=0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        await produce(s.kafka.bootstrap, s.topics.status, list(records[200:]))
        child = spawn()

        async def all_there() -> bool:
            assert child.poll() is None, log.read_text()[-3000:]
            return len(await transition_ids(s.influx.url, s.influx.db)) >= len(records)

        await wait_for("all transitions after the restart", all_there, 90)
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    ids = await transition_ids(s.influx.url, s.influx.db)
    assert len(ids) == len(records)
    assert set(ids) == {r["transitionId"] for r in records}
    topics = [s.topics.status, s.topics.fleet]
    assert await committed(s.kafka.bootstrap, history_group_id(s), topics) == await end_offsets(
        s.kafka.bootstrap, topics
    )


async def test_point_refused_by_influxdb_is_skipped_not_blocking(env: Settings) -> None:
    """A field type conflict (HTTP 400) costs that one record, counted; the rest is written."""
    s = env
    # Make `machines` a string field in scope_events: every int write to it now conflicts.
    sink = V1Sink(s.influx.url, s.influx.db)
    await sink.write([f'scope_events,scope=x,type=y machines="oops" {BASE * 10**9}'])
    await sink.close()
    records: list[dict[str, Any] | bytes] = [*transitions(0, 30)]
    records.insert(
        17, {"type": "ScopeSilent", "scope": "fleet", "machines": 99, "at": iso(BASE + 1)}
    )
    await produce(s.kafka.bootstrap, s.topics.status, records)

    registry = CollectorRegistry()
    exporter = HistoryExporter(s, make_sink(s.influx), registry=registry)
    async with running(exporter):

        async def done() -> bool:
            return sample(registry, "arcbeat_history_skipped_total", reason="rejected") == 1 and (
                sample(registry, "arcbeat_history_points_written_total") == 30
            )

        await wait_for("30 points written and 1 refused", done, 60)
    assert len(await transition_ids(s.influx.url, s.influx.db)) == 30
    topics = [s.topics.status, s.topics.fleet]
    assert await committed(s.kafka.bootstrap, history_group_id(s), topics) == await end_offsets(
        s.kafka.bootstrap, topics
    )


async def test_escaping_against_real_influxdb(env: Settings) -> None:
    """Lines built by influx_points read back unchanged from InfluxDB 1.6."""
    s = env
    from arcbeat.exporters.influx_points import format_line

    nasty = ["a b,c=d", 'quote " and \\back\\slash', "ünï 🚀", "x=y", "\\lead", "tab\there"]
    lines = [
        format_line("esc", {"k": value}, {"s": value, "n": i}, (BASE + i) * 10**9)
        for i, value in enumerate(nasty)
    ]
    sink = V1Sink(s.influx.url, s.influx.db)
    await sink.write(lines)
    await sink.close()
    rows = await influx_rows(s.influx.url, s.influx.db, "SELECT k, n, s FROM esc")
    assert [(row[1], row[2], row[3]) for row in rows] == [
        (value, i, value) for i, value in enumerate(nasty)
    ]


# ------------------------------------------------------------------------------ V2 backend


async def test_v2_sink_request_shape() -> None:
    """What V2Sink (influxdb-client async) sends, seen by a loopback HTTP server."""
    seen: list[dict[str, Any]] = []
    status = {"code": 204}

    async def handle(request: web.Request) -> web.Response:
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "auth": request.headers.get("Authorization"),
                "type": request.content_type,
                "body": await request.text(),
            }
        )
        if status["code"] == 204:
            return web.Response(status=204)
        return web.json_response({"code": "x", "message": "nope"}, status=status["code"])

    app = web.Application()
    app.router.add_post("/api/v2/write", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}"
        settings = Settings.load(env={}).replace(
            influx_api="v2",
            influx_url=url,
            influx_db="arcbeat/autogen",
            influx_org="-",
            influx_username="alice",
            influx_password="s3cret",
        )
        assert "s3cret" not in repr(settings)
        sink = make_sink(settings.influx)
        assert isinstance(sink, V2Sink)
        lines = [
            'transitions,status=Connected machine_name="m" 1',
            "fleet,scope=fleet connected=1i 2",
        ]
        await sink.write(lines)
        assert seen == [
            {
                "method": "POST",
                "path": "/api/v2/write",
                "query": {"org": "-", "bucket": "arcbeat/autogen", "precision": "ns"},
                "auth": "Token alice:s3cret",  # InfluxDB 1.8 takes username:password as token
                "type": "text/plain",
                "body": "\n".join(lines),
            }
        ]
        status["code"] = 400
        with pytest.raises(SinkError) as exc:
            await sink.write(lines)
        assert not exc.value.retryable and exc.value.status == 400
        assert "nope" in str(exc.value) and "s3cret" not in str(exc.value)
        status["code"] = 503
        with pytest.raises(SinkError) as exc:
            await sink.write(lines)
        assert exc.value.retryable and exc.value.status == 503
        await sink.close()

        token_sink = V2Sink(url, "bucket", "org", token="tok-123")
        status["code"] = 204
        await token_sink.write(lines[:1])
        assert seen[-1]["auth"] == "Token tok-123"
        await token_sink.close()
    finally:
        await runner.cleanup()


async def test_v2_sink_against_influxdb_16_fails_clearly(stack: Stack) -> None:
    """InfluxDB 1.6 has no /api/v2/write: the error names the URL, the 404 and the fix."""
    url = stack.settings.influx.url
    sink = V2Sink(url, "arcbeat/autogen", "-", token="")
    with pytest.raises(SinkError) as exc:
        await sink.write(["m f=1 1"])
    await sink.close()
    message = str(exc.value)
    assert exc.value.status == 404
    assert f"{url}/api/v2/write?org=-&bucket=arcbeat%2Fautogen&precision=ns" in message
    assert "HTTP 404" in message and "influx_api=v1" in message


async def test_v1_sink_unreachable_is_retryable() -> None:
    sink = V1Sink(f"http://127.0.0.1:{free_port()}", "db", username="bob", password="hunter2")
    with pytest.raises(SinkError) as exc:
        await sink.write(["m f=1 1"])
    await sink.close()
    assert exc.value.retryable
    assert "/write?db=db&precision=ns" in str(exc.value) and "hunter2" not in str(exc.value)


async def test_two_exporters_in_one_group_share_the_work(env: Settings) -> None:
    """A second member joins mid-stream (rebalance): still every transition, offsets at end."""
    s = env.replace(influx_batch_size=10, influx_flush_interval=0.05)
    records = transitions(0, 300)
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    a = HistoryExporter(s, make_sink(s.influx), registry=reg_a, serve_metrics=False)
    b = HistoryExporter(s, make_sink(s.influx), registry=reg_b, serve_metrics=False)
    async with running(a):
        await produce(s.kafka.bootstrap, s.topics.status, list(records[:150]))
        async with running(b):

            async def b_joined() -> bool:
                return bool(b.assignment) and not (a.assignment & b.assignment)

            await wait_for("the second member's assignment", b_joined, 30)
            await produce(s.kafka.bootstrap, s.topics.status, list(records[150:]))

            async def all_there() -> bool:
                return len(await transition_ids(s.influx.url, s.influx.db)) >= len(records)

            await wait_for("all transitions", all_there, 60)

            async def both_idle() -> bool:
                return bool(a.buffered_points == 0 and b.buffered_points == 0)

            await wait_for("empty buffers", both_idle, 30)
            assert sample(reg_b, "arcbeat_history_points_written_total") > 0, "b got no work"
    ids = await transition_ids(s.influx.url, s.influx.db)
    assert len(ids) == len(records) and set(ids) == {r["transitionId"] for r in records}
    topics = [s.topics.status, s.topics.fleet]
    assert await committed(s.kafka.bootstrap, history_group_id(s), topics) == await end_offsets(
        s.kafka.bootstrap, topics
    )


async def test_v1_sink_request_shape_and_database_creation() -> None:
    """Basic auth header (never u=/p= in the URL), ns precision, and CREATE DATABASE on 404."""
    seen: list[tuple[str, str, dict[str, str], str | None, str]] = []
    created: list[str] = []

    async def write(request: web.Request) -> web.Response:
        seen.append(
            (
                request.method,
                request.path,
                dict(request.query),
                request.headers.get("Authorization"),
                await request.text(),
            )
        )
        if not created:
            return web.json_response({"error": 'database not found: "hist"'}, status=404)
        return web.Response(status=204)

    async def query(request: web.Request) -> web.Response:
        created.append(str((await request.post())["q"]))
        return web.json_response({"results": [{"statement_id": 0}]})

    app = web.Application()
    app.router.add_post("/write", write)
    app.router.add_post("/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        sink = V1Sink(f"http://127.0.0.1:{port}", "hist", username="bob", password="hunter2")
        await sink.write(["m f=1 1", "m f=2 2"])
        await sink.close()
    finally:
        await runner.cleanup()
    basic = "Basic " + base64.b64encode(b"bob:hunter2").decode()
    expected = ("POST", "/write", {"db": "hist", "precision": "ns"}, basic, "m f=1 1\nm f=2 2")
    assert seen == [expected, expected]
    assert created == ['CREATE DATABASE "hist"']


async def test_unreachable_kafka_is_a_clear_error() -> None:
    from arcbeat.exporters.history.exporter import HistoryError

    settings = Settings.load(env={}).replace(
        kafka_bootstrap=f"127.0.0.1:{free_port()}", startup_deadline=1.5
    )
    exporter = HistoryExporter(settings, V1Sink("http://127.0.0.1:1", "x"), serve_metrics=False)
    with pytest.raises(
        HistoryError, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+.*ARCBEAT_KAFKA_BOOTSTRAP"
    ):
        await exporter.run()
