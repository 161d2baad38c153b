"""The maintenance windows of ``<prefix>.maintenance`` as InfluxDB ``maintenance`` points.

A consumer without a consumer group reads the one-partition compacted topic from the beginning
on every start and then follows it. Nothing is committed: a restart rewrites the same points
(one per window, at its start time: an overwrite). A failed write is retried with backoff
while reading waits, a value that cannot become a point is logged and counted like a status
record, and a tombstone (a deleted window) writes nothing (its point stays as history).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from arcbeat.exporters.history.writer import Entry, HistoryMetrics, PointWriter
from arcbeat.exporters.influx_points import PointError, decode, maintenance_points
from arcbeat.exporters.sinks import SinkError
from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.settings import Settings

log = logging.getLogger("arcbeat.exporters.history")



class MaintenanceFollower:
    """Follows ``<prefix>.maintenance`` and writes its windows until ``stopping`` is set."""

    def __init__(
        self,
        settings: Settings,
        writer: PointWriter,
        metrics: HistoryMetrics,
        stopping: asyncio.Event,
        *,
        client_id: str,
        batch_size: int,
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.metrics = metrics
        self.client_id = client_id
        self.batch_size = batch_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._stopping = stopping

    async def run(self) -> None:
        """Read ``<prefix>.maintenance`` from the beginning and write its windows, until stop.

        Its own consumer without a group (nothing to commit, see the module docstring). If
        the topic does not exist yet, or Kafka refuses, it says so and tries again.
        """
        topic = self.settings.topics.maintenance
        while not self._stopping.is_set():
            consumer = AIOKafkaConsumer(
                topic,
                bootstrap_servers=self.settings.kafka.bootstrap,
                group_id=None,
                client_id=self.client_id,
                enable_auto_commit=False,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
                **client_options(self.settings.kafka),
            )
            try:
                await consumer.start()
                while not self._stopping.is_set():
                    batches = await consumer.getmany(timeout_ms=500, max_records=self.batch_size)
                    for records in batches.values():
                        await self.write_windows(records)
            except KafkaError as exc:
                # read again from the beginning: the points already written are overwritten
                log.warning(
                    "history: cannot read maintenance windows from %s: %s; is the topic "
                    "created (`arcbeat topics`)? Retrying in 30 s",
                    topic,
                    exc,
                )
            finally:
                await consumer.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 30.0)

    async def write_windows(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Write the ``maintenance`` points of ``records``; a failed write is retried with
        backoff until it succeeds or the exporter stops."""
        now = time.monotonic()
        lines: list[tuple[Entry, str]] = []
        for record in records:
            if not record.value:  # a deleted window: its point stays as history
                continue
            tp = TopicPartition(record.topic, record.partition)
            try:
                points = maintenance_points(decode(record.value))
            except PointError as exc:
                self.writer.skip(tp, record.offset, exc)
                continue
            entry = Entry(tp, record.offset, points, now)
            lines.extend((entry, line) for line in points)
        backoff = self.backoff_initial
        while lines and not self._stopping.is_set():
            try:
                written = await self.writer.write(lines)
            except SinkError as exc:
                self.metrics.failures.inc()
                log.error("history: maintenance windows: %s; retrying in %.1f s", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            self.metrics.written.inc(written)
            self.metrics.last_write.set(time.time())
            return
