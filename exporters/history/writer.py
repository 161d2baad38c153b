"""How the history exporter writes points: the buffered entries, the ``arcbeat_history_*``
metrics, and the writer that singles out a line InfluxDB refuses."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge

from arcbeat.exporters.influx_points import REASON_REJECTED, PointError
from arcbeat.exporters.sinks import InfluxSink, SinkError

log = logging.getLogger("arcbeat.exporters.history")


@dataclass(slots=True)
class Entry:
    """One consumed record and the lines it became (none if it was skipped)."""

    tp: TopicPartition
    offset: int
    lines: list[str]
    at: float  # monotonic time it entered the buffer


class HistoryMetrics:
    """The ``arcbeat_history_*`` metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter(
            "arcbeat_history_points_written_total",
            "Points InfluxDB accepted.",
            registry=registry,
        )
        self.failures = Counter(
            "arcbeat_history_write_failures_total",
            "Failed InfluxDB write attempts (each retried; nothing is dropped).",
            registry=registry,
        )
        self.buffered = Gauge(
            "arcbeat_history_buffered_points",
            "Points consumed from Kafka and not yet written to InfluxDB.",
            registry=registry,
        )
        self.last_write = Gauge(
            "arcbeat_history_last_write_timestamp_seconds",
            "Unix time of the last successful InfluxDB write.",
            registry=registry,
        )
        self.skipped = Counter(
            "arcbeat_history_skipped_total",
            "Records that could not become points (logged with topic/partition/offset; "
            "they stay in Kafka).",
            ["reason"],
            registry=registry,
        )
        self.paused = Gauge(
            "arcbeat_history_consumption_paused",
            "1 while consumption is paused because the buffer is full (InfluxDB down).",
            registry=registry,
        )


class PointWriter:
    """Writes lines to the sink. When InfluxDB refuses the data itself (HTTP 400, e.g. a field
    type conflict), the batch is split until the refused line is found; that one is logged
    with its record's topic/partition/offset, counted and passed over."""

    def __init__(self, sink: InfluxSink, metrics: HistoryMetrics) -> None:
        self.sink = sink
        self.metrics = metrics

    async def write(self, lines: Sequence[tuple[Entry, str]]) -> int:
        """Write lines; split on data errors to single out the refused line. Returns points
        written. Raises SinkError only for retryable failures."""
        if not lines:
            return 0
        try:
            await self.sink.write([line for _, line in lines])
            return len(lines)
        except SinkError as exc:
            if exc.retryable:
                raise
            if len(lines) == 1:
                entry = lines[0][0]
                self.metrics.skipped.labels(reason=REASON_REJECTED).inc()
                log.warning(
                    "history: InfluxDB refused a point of %s[%d]@%d, skipping it: %s",
                    entry.tp.topic,
                    entry.tp.partition,
                    entry.offset,
                    exc,
                )
                return 0
            half = len(lines) // 2
            return await self.write(lines[:half]) + await self.write(lines[half:])

    def skip(self, tp: TopicPartition, offset: int, exc: PointError) -> None:
        """Count and log a record that cannot become points (it stays in Kafka)."""
        self.metrics.skipped.labels(reason=exc.reason).inc()
        log.warning(
            "history: skipping %s[%d]@%d (reason=%s): %s; the record stays in Kafka",
            tp.topic,
            tp.partition,
            offset,
            exc.reason,
            exc.detail,
        )
