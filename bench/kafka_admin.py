"""Topics of one bench run: created clean under a unique prefix, deleted at the end."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from arcbeat.deploy.topics import ensure_topics_async
from arcbeat.streams.settings import Settings


def run_prefix(base: str = "bench") -> str:
    """``bench-<time>-<random>``: unique per run, valid as topic prefix and Faust app id."""
    return f"{base}-{time.strftime('%H%M%S')}-{secrets.token_hex(3)}"


def create_deployment_topics(settings: Settings) -> None:
    """``<prefix>.heartbeats`` (LogAppendTime) and the output topics, as the stack makes them."""
    asyncio.run(
        ensure_topics_async(settings.kafka_bootstrap, settings.topic_prefix, settings.partitions)
    )


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="arcbeat-bench"
    )
    await admin.start()
    return admin


def create_compacted(settings: Settings, names: Iterable[str]) -> None:
    """Changelog-like topics (compacted, ``settings.partitions`` partitions)."""

    async def go() -> None:
        admin = await _admin(settings)
        try:
            await admin.create_topics(
                [
                    NewTopic(n, settings.partitions, 1, topic_configs={"cleanup.policy": "compact"})
                    for n in names
                ]
            )
        finally:
            await admin.close()

    asyncio.run(go())


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
