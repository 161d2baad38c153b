"""The Kafka clients of the heartbeat path: the group's consumer (static membership), each
owned partition's transactional producer, and the reader of checkpoints."""

from __future__ import annotations

import socket

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.settings import Settings

MIB = 1024 * 1024


def instance_id(settings: Settings, worker_id: str) -> str:
    """Static group membership: a worker started again under the same id takes its
    partitions back at once, without waiting for the session timeout (KIP-345)."""
    w = settings.worker
    if w.instance_id:
        return w.instance_id
    if w.ordinal is not None:  # a host of its own per worker (a StatefulSet pod): no host name
        return f"{settings.kafka.app_id}-worker-{w.ordinal}"
    return f"{settings.kafka.app_id}-{socket.gethostname()}-{worker_id}"


def heartbeats_consumer(settings: Settings, worker_id: str) -> AIOKafkaConsumer:
    """The group's consumer of the heartbeats topic: committed reads only, offsets committed
    with each partition's transaction."""
    s = settings
    session_ms = round(s.worker.session_timeout * 1000)
    return AIOKafkaConsumer(
        bootstrap_servers=s.kafka.bootstrap,
        group_id=s.kafka.app_id,
        group_instance_id=instance_id(s, worker_id),
        client_id=f"{s.kafka.app_id}-worker-{worker_id}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=min(3000, session_ms // 3),
        max_partition_fetch_bytes=4 * MIB,
        **client_options(s.kafka),
    )


def partition_producer(settings: Settings, worker_id: str, p: int) -> AIOKafkaProducer:
    """Partition ``p``'s transactional producer (``<app_id>-hb-<p>``): starting it fences the
    partition's previous owner, whose open transaction is aborted."""
    s = settings
    return AIOKafkaProducer(
        bootstrap_servers=s.kafka.bootstrap,
        transactional_id=f"{s.kafka.app_id}-hb-{p}",
        enable_idempotence=True,
        acks="all",
        linger_ms=round(s.worker.producer_linger * 1000),
        # big batches: a backlog of onboardings makes one status record per heartbeat, and
        # a send waits whenever its partition's batch is full (16 KiB by default)
        max_batch_size=1 * MIB,
        max_request_size=8 * MIB,
        client_id=f"{s.kafka.app_id}-worker-{worker_id}-p{p}",
        **client_options(s.kafka),
    )


def checkpoint_reader(settings: Settings, worker_id: str) -> AIOKafkaConsumer:
    """A consumer of no group, for reading checkpoints (large fetches)."""
    s = settings
    return AIOKafkaConsumer(
        bootstrap_servers=s.kafka.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=16 * MIB,
        fetch_max_bytes=64 * MIB,
        client_id=f"{s.kafka.app_id}-worker-{worker_id}-restore",
        **client_options(s.kafka),
    )
