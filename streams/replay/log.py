"""Reading the logs for ``arcbeat replay``: read-only, no consumer group, no writes.

:func:`plan` looks at the heartbeats topic (its partitions, where each retained log starts
and ends, and how far the workers' group has committed); :func:`replay_partitions` reads a
set of partitions through :class:`arcbeat.streams.replay.partition.PartitionReplay` and the status
topic's partitions of the same numbers (every output goes to its source partition number).
One call per process: the command runs two of them side by side, one per core.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from arcbeat.streams.decide.heartbeat_heads import split_heartbeat
from arcbeat.streams.kafka import ticks
from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.replay.partition import Change, PartitionReplay, PartitionResult, ScopeEvent
from arcbeat.streams.settings import Settings

MIB = 1024 * 1024
Progress = Callable[[int], None]  # records read since the last call


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    partition: int
    start: int  # first retained offset
    end: int  # the last stable offset when the replay began: it reads up to here
    committed: int | None  # the workers' committed offset (None: none yet)


@dataclass
class Recorded:
    """The status topic's records of the same range and partitions."""

    changes: list[Change]
    scope_events: list[ScopeEvent]


def _consumer(settings: Settings, name: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=None,  # read-only: nothing joins the workers' group or commits
        enable_auto_commit=False,
        isolation_level="read_committed",  # what the workers read
        max_partition_fetch_bytes=8 * MIB,
        fetch_max_bytes=64 * MIB,
        client_id=f"{settings.kafka.app_id}-replay-{name}",
        **client_options(settings.kafka),
    )


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[int]:
    """The topic's partitions (a consumer knows them only for topics it subscribed)."""
    described = await admin.describe_topics([topic])
    for t in described:
        if t.get("topic") == topic and not t.get("error_code"):
            return sorted(int(p["partition"]) for p in t.get("partitions", []))
    return []


async def plan(settings: Settings) -> list[PartitionPlan]:
    """Each heartbeats partition's retained stretch and the workers' committed offset."""
    topic = settings.topics.heartbeats
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap, **client_options(settings.kafka)
    )
    await admin.start()
    try:
        parts = await _partitions(admin, topic)
        if not parts:
            raise LookupError(
                f"topic {topic} not found at {settings.kafka.bootstrap}: check "
                "ARCBEAT_TOPIC_PREFIX and ARCBEAT_KAFKA_BOOTSTRAP"
            )
        tps = [TopicPartition(topic, p) for p in parts]
        committed = await admin.list_consumer_group_offsets(settings.kafka.app_id, partitions=tps)
    finally:
        await admin.close()
    consumer = _consumer(settings, "plan")
    await consumer.start()
    try:
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    out = []
    for tp in tps:
        om = committed.get(tp)
        c = om.offset if om is not None and om.offset >= 0 else None
        out.append(PartitionPlan(tp.partition, starts[tp], ends[tp], c))
    return out


async def _read(
    consumer: AIOKafkaConsumer,
    bounds: dict[TopicPartition, tuple[int, int]],
    on_batch: Callable[[TopicPartition, list[Any]], bool],
) -> None:
    """Read each partition from its start to its end offset; ``on_batch`` returning False
    ends that partition early."""
    open_ = {tp for tp, (start, end) in bounds.items() if end > start}
    if not open_:
        return
    consumer.assign(list(open_))
    for tp in open_:
        consumer.seek(tp, bounds[tp][0])
    while open_:
        batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
        for tp, records in batch.items():
            if tp not in open_:
                continue
            end = bounds[tp][1]
            if not on_batch(tp, [r for r in records if r.offset < end]):
                open_.discard(tp)
                consumer.pause(tp)
        for tp in list(open_):
            if await consumer.position(tp) >= bounds[tp][1]:
                open_.discard(tp)
                consumer.pause(tp)


async def _replay(
    settings: Settings,
    plans: Sequence[PartitionPlan],
    *,
    since: float,
    until: float,
    tick_keys: Sequence[bytes],
    progress: Progress,
) -> list[PartitionResult]:
    topic = settings.topics.heartbeats
    replays = {
        p.partition: PartitionReplay(
            settings, p.partition, since=since, until=until, tick_keys=tick_keys
        )
        for p in plans
    }
    consumer = _consumer(settings, "heartbeats")
    await consumer.start()

    limit = until * 1000.0

    def on_batch(tp: TopicPartition, records: list[Any]) -> bool:
        rp = replays[tp.partition]
        feed, fast, p = rp.feed, rp.fast, tp.partition
        result = rp.result
        if records and records[-1].timestamp < limit and fast is not None:
            # the common case inline: a plain heartbeat of a known machine
            plain = 0
            for r in records:
                if r.headers:
                    feed(r.offset, r.key, r.value, r.timestamp, r.headers)
                    continue
                parts = split_heartbeat(r.value)  # once, for both paths
                if fast(p, r.key, r.value, r.timestamp / 1000.0, parts):
                    plain += 1
                else:
                    feed(r.offset, r.key, r.value, r.timestamp, r.headers, parts)
            result.records += plain
            result.heartbeats += plain
            last = records[-1]
            result.last_offset, result.last_at = last.offset, last.timestamp / 1000.0
            if result.first_offset < 0:
                result.first_offset = records[0].offset
            progress(len(records))
            return True
        for r in records:
            if r.timestamp >= limit:
                progress(0)
                return False  # past the range: nothing after it is reported
            feed(r.offset, r.key, r.value, r.timestamp, r.headers)
        progress(len(records))
        return True

    try:
        await _read(
            consumer,
            {TopicPartition(topic, p.partition): (p.start, p.end) for p in plans},
            on_batch,
        )
    finally:
        await consumer.stop()
    return [replays[p.partition].result for p in plans]


async def read_recorded(
    settings: Settings, partitions: Sequence[int], *, since: float, until: float
) -> Recorded:
    """The status topic's StatusChanged and scope records decided in [since, until)."""
    topic = settings.topics.status
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap, **client_options(settings.kafka)
    )
    await admin.start()
    try:
        known = set(await _partitions(admin, topic))
    finally:
        await admin.close()
    consumer = _consumer(settings, "status")
    await consumer.start()
    out = Recorded([], [])
    try:
        tps = [TopicPartition(topic, p) for p in partitions if p in known]
        if not tps:
            return out
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)

        def on_batch(tp: TopicPartition, records: list[Any]) -> bool:
            for r in records:
                if r.value is None:
                    continue
                try:
                    rec = orjson.loads(r.value)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(rec, dict):
                    continue
                kind = rec.get("type")
                if kind == "StatusChanged":
                    c = Change.from_record(rec, tp.partition)
                    if since <= c.decided_at < until:
                        out.changes.append(c)
                elif kind in (
                    "ScopeSilent",
                    "ScopeRecovered",
                    "ScopeDegraded",
                    "ScopeDegradationCleared",
                ):
                    ev = ScopeEvent.from_record(rec)
                    if since <= ev.at < until:
                        out.scope_events.append(ev)
            return True

        await _read(consumer, {tp: (starts[tp], ends[tp]) for tp in tps}, on_batch)
    finally:
        await consumer.stop()
    return out


def replay_partitions(
    settings: Settings,
    plans: Sequence[PartitionPlan],
    *,
    since: float,
    until: float,
    tick_keys: Sequence[bytes] = (),
    progress: Progress = lambda n: None,
    recorded: bool = True,
) -> tuple[list[PartitionResult], Recorded | None]:
    """Replay these partitions (and read their recorded transitions): one process's share."""

    async def go() -> tuple[list[PartitionResult], Recorded | None]:
        results = await _replay(
            settings, plans, since=since, until=until, tick_keys=tick_keys, progress=progress
        )
        rec = None
        if recorded:
            rec = await read_recorded(
                settings, [p.partition for p in plans], since=since, until=until
            )
        return results, rec

    return asyncio.run(go())


async def recorded_settings(
    settings: Settings,
    plans: Sequence[PartitionPlan],
    tick_keys: Sequence[bytes] = (),
    *,
    limit: int = 200_000,
) -> dict[str, Any] | None:
    """The deciding settings of the first tick of the log that records them (None: no tick in
    the first ``limit`` records of the largest partition records them)."""
    candidates = sorted((p for p in plans if p.end > p.start), key=lambda p: p.start - p.end)
    if not candidates:
        return None
    p = candidates[0]
    tp = TopicPartition(settings.topics.heartbeats, p.partition)
    found: dict[str, Any] | None = None
    seen = 0

    def on_batch(_: TopicPartition, records: list[Any]) -> bool:
        nonlocal found, seen
        for r in records:
            seen += 1
            if r.headers and any(h[0] == ticks.TICK_HEADER for h in r.headers):
                tick = ticks.decode(r.value, r.headers, tick_keys)
                if tick is not None and tick.settings is not None:
                    found = tick.settings
                    return False
        return seen < limit

    consumer = _consumer(settings, "settings")
    await consumer.start()
    try:
        await _read(consumer, {tp: (p.start, p.end)}, on_batch)
    finally:
        await consumer.stop()
    return found
