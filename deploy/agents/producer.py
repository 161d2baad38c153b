"""The Kafka producer of the simulated fleet, and the check that its topic exists."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.settings import Settings


async def stop_quietly(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(Exception):
        await producer.stop()


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka.bootstrap,
        "client_id": "arcbeat-simulate",
        "acks": "all",
        "enable_idempotence": True,  # retries must not duplicate ground-truth heartbeats
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "request_timeout_ms": 30_000,
        **client_options(settings.kafka),
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def check_topic(settings: Settings, topic: str) -> None:
    """Fail clearly when ``topic`` is missing (the broker would auto-create it without
    LogAppendTime, and arrival times would silently become the agents' clocks)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap,
        client_id="arcbeat-simulate",
        **client_options(settings.kafka),
    )
    try:
        await asyncio.wait_for(admin.start(), 30)
        topics = await admin.list_topics()
    except Exception as exc:
        raise ConnectionError(
            f"cannot reach Kafka at {settings.kafka.bootstrap}: {exc!r}; "
            "start it with `arcbeat stack up` or set ARCBEAT_KAFKA_BOOTSTRAP"
        ) from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    if topic not in topics:
        raise ConnectionError(
            f"topic {topic!r} does not exist on {settings.kafka.bootstrap}; create the topics "
            f"of prefix {settings.kafka.topic_prefix!r} first (`ARCBEAT_TOPIC_PREFIX="
            f"{settings.kafka.topic_prefix} arcbeat stack up`)"
        )
