"""Topics of one bench run: created clean under a unique prefix, deleted at the end."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from arcbeat.deploy.kafka_admin.topics import ensure_topics_async
from arcbeat.streams.kafka.checkpoint import Pointer
from arcbeat.streams.settings import Settings


def run_prefix(base: str = "bench") -> str:
    """``bench-<time>-<random>``: unique per run, valid as a topic prefix and an app id."""
    return f"{base}-{time.strftime('%H%M%S')}-{secrets.token_hex(3)}"


def create_deployment_topics(settings: Settings) -> None:
    """``<prefix>.heartbeats`` (LogAppendTime) and the output topics, as the stack makes them."""
    asyncio.run(
        ensure_topics_async(
            settings.kafka.bootstrap, settings.kafka.topic_prefix, settings.kafka.partitions
        )
    )


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap, client_id="arcbeat-bench"
    )
    await admin.start()
    return admin


@dataclass(frozen=True, slots=True)
class Committed:
    """A partition's committed offset and the checkpoint its metadata points to."""

    offset: int  # -1: nothing committed
    pointer: Pointer | None


def committed_offsets(settings: Settings, partitions: int) -> dict[int, Committed]:
    """The worker group's committed offsets of the heartbeats partitions, with the pointer
    to each partition's latest checkpoint (stored as the offset's metadata)."""

    async def go() -> dict[int, Committed]:
        admin = await _admin(settings)
        try:
            tps = [TopicPartition(settings.topics.heartbeats, p) for p in range(partitions)]
            got = await admin.list_consumer_group_offsets(settings.kafka.app_id, partitions=tps)
        finally:
            await admin.close()
        out = {}
        for tp in tps:
            om = got.get(tp)
            out[tp.partition] = Committed(
                om.offset if om is not None else -1,
                Pointer.decode(om.metadata if om is not None else None),
            )
        return out

    return asyncio.run(go())


def delete_topics_with_prefix(settings: Settings, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; returns their names."""
    if len(prefix) < 8:
        raise ValueError(f"refusing to delete topics by a prefix this short: {prefix!r}")

    async def go() -> list[str]:
        admin = await _admin(settings)
        try:
            names = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
            if names:
                with contextlib.suppress(Exception):
                    await admin.delete_topics(names)
            return names
        finally:
            await admin.close()

    return asyncio.run(go())
