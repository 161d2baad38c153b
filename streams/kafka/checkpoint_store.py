"""Checkpoints on their compacted topic: a partition's state written chunk by chunk in its
transaction, and read back and installed on recovery (the records' format:
:mod:`.checkpoint`)."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer, TopicPartition

from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.kafka import checkpoint
from arcbeat.streams.kafka.checkpoint import Pointer
from arcbeat.streams.kafka.heap import freeze_young
from arcbeat.streams.kafka.heartbeat_clients import checkpoint_reader
from arcbeat.streams.kafka.owned import Owned
from arcbeat.streams.settings import Settings

log = logging.getLogger("arcbeat.batch")


async def write(engine: Engine, o: Owned, producer: AIOKafkaProducer, topic: str) -> Pointer:
    """Write partition ``o``'s state at its position; the previous checkpoint's records are
    deleted (compaction removes them)."""
    idx = engine.partitions.get(o.p)
    if idx is None:
        idx = engine.index_for(o.p)
    t0 = time.monotonic()
    old = o.pointer
    cid = (old.id + 1) if old is not None else 1
    futures = []
    # chunk by chunk, letting the event loop run in between (the lock keeps idx still)
    for n, value in enumerate(checkpoint.encoding(idx, o.p, o.position)):
        futures.append(
            await producer.send(topic, value, key=checkpoint.record_key(o.p, cid, n), partition=o.p)
        )
        await asyncio.sleep(0)
    if old is not None:
        for n in range(old.records):
            await producer.send(
                topic, None, key=checkpoint.record_key(o.p, old.id, n), partition=o.p
            )
    first = await futures[0]
    log.info(
        "partition %d: checkpoint %d at offset %d (%d machines, %d records, %.2fs)",
        o.p, cid, o.position, len(idx.machines), len(futures), time.monotonic() - t0,
    )  # fmt: skip
    return Pointer(o.position, first.offset, len(futures), cid)


async def read(
    settings: Settings, worker_id: str, topic: str, pointers: dict[int, Pointer]
) -> dict[int, list[bytes]]:
    """The records of each partition's checkpoint (by its pointer), in order."""
    reader = checkpoint_reader(settings, worker_id)
    await reader.start()
    got: dict[int, list[bytes]] = {p: [] for p in pointers}
    try:
        tps = {p: TopicPartition(topic, p) for p in pointers}
        reader.assign(list(tps.values()))
        for p, ptr in pointers.items():
            reader.seek(tps[p], ptr.first)
        open_ = set(pointers)
        while open_:
            batch = await reader.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                p = tp.partition
                if p not in open_:
                    continue
                ptr = pointers[p]
                prefix = f"{p}:{ptr.id}:".encode()
                for r in records:
                    if r.key is not None and r.key.startswith(prefix) and r.value:
                        got[p].append(r.value)
                if len(got[p]) >= ptr.records:
                    open_.discard(p)
                    reader.pause(tp)
    finally:
        await reader.stop()
    return {p: records[: pointers[p].records] for p, records in got.items()}


async def install(engine: Engine, p: int, records: list[bytes]) -> None:
    """Decode and restore one partition's checkpoint a chunk at a time, letting the event
    loop run between chunks (a million machines take seconds of CPU). Each step's machines
    are frozen at once: unfrozen, a million restored machines cost full collections of up to
    0.5 s in the middle of the restore."""
    restored: checkpoint.Restored | None = None
    for got in checkpoint.decoding(records):
        restored = got
        freeze_young()
        await asyncio.sleep(0)
    if restored is None:
        raise ValueError(f"checkpoint of partition {p}: nothing decoded")
    records.clear()  # the decoded slots hold what they need
    for _ in checkpoint.restoring(engine, p, restored):
        freeze_young()
        await asyncio.sleep(0)
