"""The load generator (``arcbeat simulate --load``) against a stand-in producer: every record a
fresh, valid heartbeat of the simulated fleet, on its key's partition, in per-partition
batches, and failed batches counted. No Kafka (tests/e2e/test_recovery_e2e.py uses it to
produce a backlog for a real worker)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

from arcbeat.deploy.agents import load as load_module
from arcbeat.deploy.agents.load import load
from arcbeat.deploy.agents.scenarios import Fleet, FleetSpec, fleet_locations
from arcbeat.streams.decide.partitioner import KeyPartitioner
from arcbeat.streams.decide.records import Heartbeat, decode_heartbeat
from arcbeat.streams.settings import Settings

PARTITIONS = (0, 1, 2, 3)


class FakeBatch:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: int | None) -> object | None:
        assert timestamp is None  # the broker stamps them (LogAppendTime)
        if len(self.records) >= self.limit:
            return None  # full: the caller sends it and starts another
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    def __init__(self, options: dict[str, Any], batch_limit: int, failing: set[int]) -> None:
        self.options = options
        self.batch_limit = batch_limit
        self.failing = failing
        self.batches: list[tuple[str, int, list[tuple[bytes, bytes]]]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return set(PARTITIONS)

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_limit)

    async def send_batch(
        self, batch: FakeBatch, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        assert batch.record_count() > 0
        self.batches.append((topic, partition, list(batch.records)))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if partition in self.failing:
            future.set_exception(ConnectionError("broker gone"))
        else:
            future.set_result(None)
        return future


def _patch(
    monkeypatch: pytest.MonkeyPatch, *, batch_limit: int = 7, failing: set[int] | None = None
) -> list[FakeProducer]:
    made: list[FakeProducer] = []

    def make_producer(settings: Settings, **options: Any) -> FakeProducer:
        made.append(FakeProducer(options, batch_limit, failing or set()))
        return made[-1]

    monkeypatch.setattr(load_module, "make_producer", make_producer)
    return made


async def test_every_record_is_a_valid_heartbeat_on_its_keys_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = _patch(monkeypatch)
    settings = Settings()
    result = await load(
        settings,
        40,
        heartbeats_per_machine=3,
        seed=5,
        first_index=10,
        connect_first=True,
        progress=None,
        check=False,
    )
    [producer] = made
    assert producer.started and producer.stopped
    assert (result.topic, result.machines, result.sent, result.errors) == (
        settings.topics.heartbeats,
        40,
        120,
        0,
    )
    assert result.seconds >= 0 and result.rate >= 0

    fleet = Fleet(FleetSpec(machines=50, seed=5, locations=fleet_locations(settings)))
    expected_keys = {fleet.key(m) for m in range(10, 50)}
    partition_of = KeyPartitioner(len(PARTITIONS))
    sequences: dict[str, list[tuple[int | None, str]]] = defaultdict(list)
    for topic, partition, records in producer.batches:
        assert topic == settings.topics.heartbeats
        assert 0 < len(records) <= producer.batch_limit
        for key, value in records:
            verdict = decode_heartbeat(
                value,
                key,
                max_bytes=settings.input.max_message_bytes,
                accepts_region=settings.input.accepts_region,
            )
            assert isinstance(verdict, Heartbeat), verdict
            assert verdict.key == key.decode()
            assert PARTITIONS[partition_of(key)] == partition
            sequences[verdict.key].append((verdict.sequence, verdict.kind))
    assert set(sequences) == expected_keys
    # per machine: round r has sequence r, the first one a connect
    for sent in sequences.values():
        assert sent == [(0, "connect"), (1, "heartbeat"), (2, "heartbeat")]


async def test_producer_options_and_plain_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    made = _patch(monkeypatch, batch_limit=1000)
    result = await load(
        Settings(),
        5,
        progress=None,
        check=False,
        producer_options={"linger_ms": 50},
    )
    [producer] = made
    # batched for throughput, no idempotence; the caller's options win
    assert producer.options == {
        "linger_ms": 50,
        "max_batch_size": 256 * 1024,
        "enable_idempotence": False,
    }
    assert result.sent == 5
    kinds = {
        value.split(b'"kind":"')[1].split(b'"')[0]
        for *_, recs in producer.batches
        for _, value in recs
    }
    assert kinds == {b"heartbeat"}


async def test_a_failed_batch_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    made = _patch(monkeypatch, batch_limit=4, failing={2})
    lines: list[str] = []
    result = await load(Settings(), 60, check=False, progress=lines.append)
    [producer] = made
    failed = [b for b in producer.batches if b[1] == 2]
    assert failed
    assert result.errors == len(failed)
    assert result.sent == 60  # records handed to the producer
    assert producer.stopped
    assert lines and lines[-1].startswith("load: 60 heartbeats from 60 machines")
    assert f"{len(failed)} failed batches" in lines[-1]


@pytest.mark.parametrize(("n", "per_machine"), [(0, 1), (1, 0)])
async def test_nothing_to_send_is_refused(
    monkeypatch: pytest.MonkeyPatch, n: int, per_machine: int
) -> None:
    made = _patch(monkeypatch)
    with pytest.raises(ValueError, match="must be >= 1"):
        await load(Settings(), n, heartbeats_per_machine=per_machine, check=False, progress=None)
    assert made == []
