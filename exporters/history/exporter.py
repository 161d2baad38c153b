"""The history exporter (``arcbeat history``): ``<prefix>.status`` + ``<prefix>.fleet`` -> InfluxDB,
losing nothing.

It also writes the maintenance windows of ``<prefix>.maintenance`` as ``maintenance`` points
(:mod:`arcbeat.exporters.history.maintenance`) and runs the capacity report
(:mod:`arcbeat.exporters.capacity.task`).

Delivery contract (docs/metrics-alerts-history.md, History in InfluxDB):

- Offsets are committed only for records whose points InfluxDB accepted (and for records
  that were skipped as malformed, after a warning and a metric), never ahead of them. A
  SIGKILL at any moment therefore re-delivers at most the uncommitted tail.
- Every point carries the record's own timestamp, so re-delivery rewrites the same series at
  the same time: an overwrite, not a duplicate.
- When InfluxDB is down, writes are retried with exponential backoff (capped at 30 s) while
  the records wait in a bounded buffer; when the buffer is full, consumption of all assigned
  partitions is paused (the consumer keeps polling, so it stays in its group) until writes
  succeed again. Nothing is dropped.
- When InfluxDB refuses the data itself (HTTP 400, e.g. a field type conflict), the batch is
  split until the bad line is found; that one record is logged with topic/partition/offset,
  counted in ``arcbeat_history_skipped_total{reason="rejected"}`` and passed over.

"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from arcbeat.exporters.capacity.task import CapacityTask
from arcbeat.exporters.history.maintenance import MaintenanceFollower
from arcbeat.exporters.history.writer import Entry, HistoryMetrics, PointWriter
from arcbeat.exporters.influx_points import PointError, value_to_lines
from arcbeat.exporters.settings import Settings
from arcbeat.exporters.sinks import InfluxSink, SinkError
from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.kafka.startup import Deadline, Say, StartupError, retry_start

log = logging.getLogger("arcbeat.exporters.history")


class HistoryError(RuntimeError):
    """The exporter cannot start (Kafka unreachable, port taken); the message says how to fix."""



def history_group_id(settings: Settings) -> str:
    return f"{settings.kafka.app_id}-history"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, exporter: HistoryExporter) -> None:
        self._exporter = exporter

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._exporter._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("history: assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class HistoryExporter:
    """Consumes status and fleet records (and the maintenance windows) and writes them to an
    :class:`InfluxSink`."""

    def __init__(
        self,
        settings: Settings,
        sink: InfluxSink,
        *,
        registry: CollectorRegistry | None = None,
        group_id: str | None = None,
        max_buffered_points: int | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stop_timeout: float = 10.0,
        serve_metrics: bool = True,
        say: Say | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = HistoryMetrics(self.registry)
        self.writer = PointWriter(sink, self.metrics)
        self.group_id = group_id or history_group_id(settings)
        self.topics = (settings.topics.status, settings.topics.fleet)
        self.batch_size = max(1, settings.influx.batch_size)
        self.max_buffered = max_buffered_points or 10 * self.batch_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stop_timeout = stop_timeout
        self.serve_metrics = serve_metrics
        self.metrics_port: int | None = None  # the bound port once serving
        # start-up under a partly down cluster (arcbeat.streams.kafka.startup)
        self.deadline = Deadline(settings.kafka.startup_deadline)
        self.say: Say = say or _say

        self._entries: deque[Entry] = deque()
        self._points = 0  # lines in _entries
        self._lock = asyncio.Lock()  # buffer + flush vs. the rebalance callback
        self._stopping = asyncio.Event()
        self._retry_at = 0.0
        self._backoff = backoff_initial
        self._failing_since: float | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._web: web.AppRunner | None = None
        self.capacity: CapacityTask | None = None
        if settings.capacity.interval > 0:
            self.capacity = CapacityTask(settings, sink, self.registry)
        self.maintenance = MaintenanceFollower(
            settings,
            self.writer,
            self.metrics,
            self._stopping,
            client_id=f"{self.group_id}-maintenance-{id(self):x}",
            batch_size=self.batch_size,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )

    # ---------------------------------------------------------------- lifecycle

    def request_stop(self) -> None:
        """Ask :meth:`run` to flush what it can, commit and return (signal-safe)."""
        self._stopping.set()

    @property
    def buffered_points(self) -> int:
        return self._points

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member currently owns (empty before it joined)."""
        consumer = self._consumer
        return frozenset(consumer.assignment()) if consumer is not None else frozenset()

    def _new_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka.bootstrap,
            group_id=self.group_id,
            client_id=f"{self.group_id}-{id(self):x}",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            **client_options(self.settings.kafka),
        )
        consumer.subscribe(list(self.topics), listener=_Rebalance(self))
        return consumer

    async def _start_consumer(self) -> AIOKafkaConsumer:
        """The started consumer; retriable Kafka errors are retried until startup_deadline."""
        made: list[AIOKafkaConsumer] = []

        async def attempt() -> AIOKafkaConsumer:
            made.append(self._new_consumer())
            await made[-1].start()
            return made[-1]

        async def undo() -> None:
            if made:
                await made.pop().stop()

        try:
            return await retry_start(
                "the status and fleet consumer",
                attempt,
                deadline=self.deadline,
                say=self.say,
                cleanup=undo,
            )
        except (KafkaError, StartupError) as exc:
            raise HistoryError(
                f"history: cannot reach Kafka at {self.settings.kafka.bootstrap} "
                f"(ARCBEAT_KAFKA_BOOTSTRAP): {exc}"
            ) from exc

    async def run(self) -> None:
        """Consume until :meth:`request_stop`; then flush (up to ``stop_timeout``) and close."""
        consumer = await self._start_consumer()
        self._consumer = consumer
        capacity_task: asyncio.Task[None] | None = None
        maintenance_task: asyncio.Task[None] | None = None
        try:
            if self.serve_metrics:
                await self._start_web()
            if self.capacity is not None:
                capacity_task = asyncio.create_task(self.capacity.run(self._stopping))
            maintenance_task = asyncio.create_task(self.maintenance.run())
            log.info(
                "history: %s -> InfluxDB %s (group %s, batch %d, buffer %d)",
                ", ".join(self.topics),
                self.settings.influx.url,
                self.group_id,
                self.batch_size,
                self.max_buffered,
            )
            await self._loop(consumer)
            await self._drain()
        finally:
            self._consumer = None
            for task in (capacity_task, maintenance_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await consumer.stop()
            await self.sink.close()
            if self._web is not None:
                await self._web.cleanup()
                self._web = None

    async def _loop(self, consumer: AIOKafkaConsumer) -> None:
        while not self._stopping.is_set():
            self._backpressure(consumer)
            room = self.max_buffered - self._points
            batches = await consumer.getmany(
                timeout_ms=int(self._poll_wait() * 1000), max_records=max(1, room)
            )
            assigned = consumer.assignment()
            now = time.monotonic()
            for tp, records in batches.items():
                if tp not in assigned:  # fetched just before a revoke: the new owner reads it
                    continue
                for record in records:
                    self._ingest(tp, record, now)
            self.metrics.buffered.set(self._points)
            await self._flush_ready()

    def _poll_wait(self) -> float:
        now = time.monotonic()
        wait = 0.5
        if self._entries:
            due = max(self._retry_at, self._entries[0].at + self.settings.influx.flush_interval)
            wait = min(wait, due - now)
        return max(0.01, wait)

    def _backpressure(self, consumer: AIOKafkaConsumer) -> None:
        full = self._points >= self.max_buffered
        if full:
            to_pause = consumer.assignment() - consumer.paused()
            if to_pause:
                consumer.pause(*to_pause)
                log.warning(
                    "history: buffer full (%d points, limit %d): consumption paused until "
                    "InfluxDB accepts writes again",
                    self._points,
                    self.max_buffered,
                )
        elif consumer.paused():
            consumer.resume(*consumer.paused())
            log.info(
                "history: buffer has room again (%d points): consumption resumed", self._points
            )
        self.metrics.paused.set(1 if full else 0)

    # ---------------------------------------------------------------- records in

    def _ingest(self, tp: TopicPartition, record: ConsumerRecord[Any, Any], now: float) -> None:
        try:
            lines = value_to_lines(record.value)
        except PointError as exc:
            self.writer.skip(tp, record.offset, exc)
            lines = []
        self._entries.append(Entry(tp, record.offset, lines, now))
        self._points += len(lines)

    # ---------------------------------------------------------------- points out

    async def _flush_ready(self) -> None:
        """Write full batches, or an aged partial one, unless a retry is pending."""
        while self._entries and not self._stopping.is_set():
            now = time.monotonic()
            if now < self._retry_at:
                return
            full = self._points >= self.batch_size
            aged = now - self._entries[0].at >= self.settings.influx.flush_interval
            if not (full or aged):
                return
            if not await self._flush_batch():
                return

    async def _drain(self) -> None:
        """On stop: write (and commit) everything buffered, within ``stop_timeout``."""
        deadline = time.monotonic() + self.stop_timeout
        while self._entries and time.monotonic() < deadline:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                continue
            await self._flush_batch()
        if self._entries:
            log.warning(
                "history: stopping with %d points unwritten; their offsets are not committed, "
                "so the next run writes them",
                self._points,
            )

    async def _flush_all_once(self) -> None:
        while self._entries and await self._flush_batch():
            pass

    def _take_batch(self) -> list[Entry]:
        batch: list[Entry] = []
        points = 0
        for entry in self._entries:
            if batch and points + len(entry.lines) > self.batch_size:
                break
            batch.append(entry)
            points += len(entry.lines)
        return batch

    async def _flush_batch(self) -> bool:
        """One batch: write, then commit exactly its offsets. False when the write failed."""
        async with self._lock:
            batch = self._take_batch()
            if not batch:
                return True
            try:
                written = await self.writer.write([(e, line) for e in batch for line in e.lines])
            except SinkError as exc:
                self._write_failed(exc)
                return False
            for _ in batch:
                self._entries.popleft()
            self._points -= sum(len(e.lines) for e in batch)
            self.metrics.buffered.set(self._points)
            self.metrics.written.inc(written)
            self.metrics.last_write.set(time.time())
            if self._failing_since is not None:
                log.info(
                    "history: InfluxDB accepts writes again after %.1f s",
                    time.monotonic() - self._failing_since,
                )
                self._failing_since = None
            self._backoff = self.backoff_initial
            self._retry_at = 0.0
            await self._commit(batch)
            return True

    def _write_failed(self, exc: SinkError) -> None:
        now = time.monotonic()
        self.metrics.failures.inc()
        if self._failing_since is None:
            self._failing_since = now
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self.backoff_max)
        self._retry_at = now + delay
        log.error(
            "history: %s; %d points buffered (limit %d), retrying in %.1f s",
            exc,
            self._points,
            self.max_buffered,
            delay,
        )

    async def _commit(self, batch: Sequence[Entry]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        offsets: dict[TopicPartition, int] = {}
        for entry in batch:
            offsets[entry.tp] = max(offsets.get(entry.tp, -1), entry.offset + 1)
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # The points are written; whoever owns these partitions next re-reads the
            # uncommitted records and rewrites the same points (an overwrite).
            log.warning("history: commit of %s failed: %s", _fmt_offsets(offsets), exc)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before a rebalance: try to write and commit once, then forget revoked partitions."""
        if not revoked:
            return
        if self._entries and time.monotonic() >= self._retry_at:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_all_once(), timeout=15.0)
        async with self._lock:
            kept = deque(e for e in self._entries if e.tp not in revoked)
            dropped = len(self._entries) - len(kept)
            self._entries = kept
            self._points = sum(len(e.lines) for e in kept)
            self.metrics.buffered.set(self._points)
        if dropped:
            log.info(
                "history: %d uncommitted records of revoked partitions left to their next owner",
                dropped,
            )

    # ---------------------------------------------------------------- /metrics

    async def _start_web(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/healthz", self._handle_health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host = self.settings.influx.history_host
        site = web.TCPSite(runner, host, self.settings.influx.history_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise HistoryError(
                f"history: cannot serve /metrics on {host}:"
                f"{self.settings.influx.history_port} (ARCBEAT_HISTORY_HOST, "
                f"ARCBEAT_HISTORY_PORT): {exc}"
            ) from exc
        self._web = runner
        addresses = runner.addresses
        self.metrics_port = int(addresses[0][1]) if addresses else self.settings.influx.history_port
        log.info("history: metrics on http://%s:%s/metrics", host, self.metrics_port)

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _handle_health(self, request: web.Request) -> web.Response:
        since = self._failing_since
        return web.json_response(
            {
                "status": "ok" if since is None else "degraded",
                "bufferedPoints": self._points,
                "maxBufferedPoints": self.max_buffered,
                "influxFailingForSeconds": (
                    0.0 if since is None else round(time.monotonic() - since, 1)
                ),
            }
        )


def _say(line: str) -> None:
    print(f"arcbeat history: {line}", file=sys.stderr, flush=True)


def _fmt_offsets(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in sorted(offsets.items()))
