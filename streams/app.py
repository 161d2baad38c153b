"""The Faust application object, configured from :class:`Settings`."""

from __future__ import annotations

import socket
from pathlib import Path

import faust
from arcbeat.streams.kafka_client import faust_credentials
from arcbeat.streams.settings import Settings
from faust.transport.producer import ProducerBuffer


def create_app(settings: Settings, *, worker_id: str = "0") -> faust.App:
    # The status, DLQ and fleet outputs are sent to the *source* partition, so under
    # exactly-once they join the transaction of the heartbeat partition that caused them.
    if settings.processing_guarantee == "exactly_once":
        from arcbeat.streams.transactions import install_source_partition_transactions

        install_source_partition_transactions()
    # Table writes are queued in faust's ProducerBuffer; past 100 queued messages every event
    # waits for the queue to drain one message at a time (each wait an asyncio.wait_for), which
    # caps a worker at a few hundred events/s. aiokafka batches the sends itself.
    ProducerBuffer.max_messages = settings.producer_buffer
    datadir = Path(settings.data_dir) / f"worker-{worker_id}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        **faust_credentials(settings),  # TLS/SASL when configured (empty for PLAINTEXT)
        store="memory://",
        processing_guarantee=settings.processing_guarantee,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        topic_disable_leader=True,
        key_serializer="raw",
        value_serializer="raw",
        # bind where told; advertise a name other workers can reach (for key routing)
        web_host=socket.gethostname()
        if settings.web_host in ("0.0.0.0", "::")
        else settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        datadir=str(datadir),
        consumer_auto_offset_reset="earliest",
        # Short commits bound the Connected latency under exactly-once (outputs are
        # visible to read_committed readers only once their transaction commits).
        broker_commit_interval=settings.commit_interval,
        broker_commit_every=10_000,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        stream_buffer_maxsize=16_384,
        producer_max_request_size=4 * 1024 * 1024,
        producer_linger_ms=round(settings.producer_linger * 1000),
        table_standby_replicas=0,
        table_cleanup_interval=max(1.0, min(30.0, settings.window / 4)),
        stream_wait_empty=False,
    )
