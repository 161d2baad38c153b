"""Ceilings: how fast plain consumers read the same records (aiokafka in Python, kcat in C)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from arcbeat.streams.settings import Settings


@dataclass(frozen=True, slots=True)
class ConsumeFigures:
    tool: str
    records: int
    seconds: float
    detail: str = ""

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: off for tp, off in ends.items()}


async def aiokafka_rate(
    settings: Settings, topic: str, ends: dict[int, int], *, isolation_level: str
) -> ConsumeFigures:
    """A plain ``getmany`` loop from the beginning to ``ends``: no decoding, no state."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
        max_partition_fetch_bytes=1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(ends) if ends[p] > 0]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp: ends[tp.partition] for tp in tps}
        n = 0
        started = time.monotonic()
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, msgs in batches.items():
                n += len(msgs)
                if tp in remaining and msgs and msgs[-1].offset + 1 >= remaining[tp]:
                    del remaining[tp]
            if time.monotonic() - started > 600:
                raise TimeoutError(f"aiokafka consumer: {remaining} still unread after 600s")
        seconds = time.monotonic() - started
    finally:
        await consumer.stop()
    return ConsumeFigures("aiokafka getmany", n, seconds, f"isolation_level={isolation_level}")


def kcat_rate(settings: Settings, topic: str, records: int) -> ConsumeFigures | None:
    """``kcat -C -e -o beginning -q`` to /dev/null; None when kcat is not installed."""
    exe = shutil.which("kcat") or shutil.which("kafkacat")
    if exe is None:
        return None
    cmd = [exe, "-C", "-b", settings.kafka.bootstrap, "-t", topic, "-e", "-o", "beginning", "-q"]
    started = time.monotonic()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.decode(errors='replace')}")
    return ConsumeFigures("kcat", records, seconds, " ".join(cmd[1:]))


def run_raw(
    settings: Settings, topic: str, isolation_level: str
) -> tuple[dict[int, int], ConsumeFigures, ConsumeFigures | None]:
    ends = asyncio.run(end_offsets(settings, topic))
    aio = asyncio.run(aiokafka_rate(settings, topic, ends, isolation_level=isolation_level))
    kc = kcat_rate(settings, topic, sum(ends.values()))
    return ends, aio, kc


async def read_to_end(settings: Settings, topic: str) -> tuple[int, int, float]:
    """Read every partition of ``topic`` from the beginning to its end, read_committed, as a
    worker reads the shared scope state: (offsets read over, records, seconds). Positions,
    not record offsets, tell the end: transaction markers take offsets but carry no record."""
    ends = await end_offsets(settings, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(ends) if ends[p] > 0]
        if not tps:
            return 0, 0, 0.0
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        n = 0
        started = time.monotonic()
        remaining = set(tps)
        while remaining:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            n += sum(len(msgs) for msgs in batches.values())
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp.partition]:
                    remaining.discard(tp)
            if time.monotonic() - started > 600:
                raise TimeoutError(f"{topic}: {remaining} still unread after 600s")
        seconds = time.monotonic() - started
    finally:
        await consumer.stop()
    return sum(ends.values()), n, seconds
