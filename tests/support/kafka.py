"""Reading a topic back, and deleting a run's topics on the shared broker."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from arcbeat.deploy.aio import run_sync


def delete_topics(bootstrap: str, prefixes: tuple[str, ...]) -> list[str]:
    """Delete the topics whose names start with one of ``prefixes``."""

    async def go() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(prefixes)]
            if names:
                await admin.delete_topics(names)
            return names
        finally:
            await admin.close()

    names: list[str] = run_sync(go)
    return names


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    partition: int
    offset: int
    timestamp: float  # seconds
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def read_topic(
    bootstrap: str, topic: str, *, committed: bool = True, timeout: float = 60.0
) -> list[KafkaRecord]:
    """Every record of ``topic`` up to its end now (the last stable offset when committed)."""

    async def go() -> list[KafkaRecord]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed" if committed else "read_uncommitted",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        try:
            metadata = await consumer._client.fetch_all_metadata()
            parts = metadata.partitions_for_topic(topic)
            if not parts:
                raise AssertionError(f"topic {topic} does not exist on {bootstrap}")
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out: list[KafkaRecord] = []
            deadline = time.monotonic() + timeout
            while True:
                behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                if not behind:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"reading {topic}: still behind on {behind}")
                batches = await consumer.getmany(*behind, timeout_ms=500)
                for tp, records in batches.items():
                    for r in records:
                        if r.offset >= ends[tp]:
                            continue
                        out.append(
                            KafkaRecord(
                                tp.partition,
                                r.offset,
                                r.timestamp / 1000.0,
                                r.key,
                                r.value,
                                tuple((k, bytes(v)) for k, v in (r.headers or ())),
                            )
                        )
            out.sort(key=lambda r: (r.partition, r.offset))
            return out
        finally:
            await consumer.stop()

    records: list[KafkaRecord] = run_sync(go)
    return records


@dataclass(frozen=True)
class JsonRecord:
    """A record whose value is a JSON object."""

    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]
    timestamp: float


def read_committed(
    bootstrap: str, topic: str, partitions: int, *, timeout: float = 60.0
) -> list[JsonRecord]:
    """Every committed record of ``topic`` up to its last stable offset, as JSON values."""

    async def run() -> list[JsonRecord]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        out: list[JsonRecord] = []
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)  # the LSO under read_committed
            deadline = time.monotonic() + timeout

            async def behind() -> bool:
                return any([await consumer.position(tp) < ends[tp] for tp in tps])

            while await behind():
                if time.monotonic() > deadline:
                    raise AssertionError(f"reading {topic}: not at {ends} after {timeout:g}s")
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, records in batch.items():
                    for r in records:
                        if r.offset < ends[tp] and r.value:
                            value = json.loads(r.value)
                            out.append(
                                JsonRecord(tp.partition, r.offset, r.key, value, r.timestamp / 1e3)
                            )
        finally:
            await consumer.stop()
        return out

    return asyncio.run(run())
