"""The history exporter (``arcbeat history``): ``<prefix>.status`` + ``<prefix>.fleet`` -> InfluxDB,
losing nothing.

It also writes the maintenance windows of ``<prefix>.maintenance`` as ``maintenance`` points
(see :meth:`HistoryExporter._follow_maintenance`).

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

Maintenance windows: a second consumer, without a consumer group, reads the one-partition
compacted ``<prefix>.maintenance`` topic from the beginning on every start and then follows
it. Nothing is committed: a restart rewrites the same points (one per window, at its start
time: an overwrite). A failed write is retried with the same backoff while reading waits, a
value that cannot become a point is logged and counted like a status record, and a tombstone
(a deleted window) writes nothing (its point stays as history).

Capacity (docs/metrics-alerts-history.md, Capacity planning): every ``capacity_interval``
(0 = off) the exporter asks a worker for the fleet's ``GET /capacity`` counts
(``capacity_source_url``, default the local worker), builds the capacity report with its growth
history (pre-filled from InfluxDB's ``capacity`` measurement, one sample per hour per scope),
writes ``capacity`` points at a time aligned to the interval (a re-write is an overwrite) and
serves the ``arcbeat_capacity_*`` gauges on its own ``/metrics``. One process computes them for
the whole fleet, which is what the alert rules' ``max by (kind, scope)`` expects. Unreachable
workers, a rebalance (partitions missing) or a worker of another deployment are logged, counted
in ``arcbeat_capacity_fetch_failures_total`` and retried next interval; the last good report
stays exported (``arcbeat_capacity_last_report_timestamp_seconds`` tells its age).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from arcbeat.exporters.capacity import (
    HISTORY_QUERY,
    HISTORY_SAMPLES,
    CapacityCollector,
    CapacityHistory,
    CapacityLimits,
    CapacityReport,
    build_report_from_summary,
    history_from_influxql,
    history_step,
)
from arcbeat.exporters.influx_points import (
    REASON_REJECTED,
    PointError,
    capacity_line,
    decode,
    maintenance_points,
    value_to_lines,
)
from arcbeat.exporters.sinks import InfluxSink, SinkError
from arcbeat.streams.fleet_summary import FleetSummary, SummaryError
from arcbeat.streams.kafka_client import client_options
from arcbeat.streams.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "CapacityTask",
    "HistoryError",
    "HistoryExporter",
    "fleet_topic",
    "history_group_id",
    "maintenance_topic",
]


class HistoryError(RuntimeError):
    """The exporter cannot start (Kafka unreachable, port taken); the message says how to fix."""


def fleet_topic(settings: Settings) -> str:
    return f"{settings.topic_prefix}.fleet"


def maintenance_topic(settings: Settings) -> str:
    return f"{settings.topic_prefix}.maintenance"


def history_group_id(settings: Settings) -> str:
    return f"{settings.app_id}-history"


def capacity_url(settings: Settings) -> str:
    """Where the capacity task reads the fleet's counts (a worker's ``GET /capacity``)."""
    base = settings.capacity_source_url or f"http://{settings.web_host}:{settings.web_port}"
    base = base.rstrip("/")
    return base if base.endswith("/capacity") else f"{base}/capacity"


@dataclass(slots=True)
class _Entry:
    """One consumed record and the lines it became (none if it was skipped)."""

    tp: TopicPartition
    offset: int
    lines: list[str]
    at: float  # monotonic time it entered the buffer


class _Metrics:
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


class _CapacityFetchError(Exception):
    """This round has no usable fleet counts; the message says why and how to fix."""


class CapacityTask:
    """The periodic capacity report of the history exporter (see the module docstring)."""

    # Repeated identical failures are logged again only this often (seconds).
    REPEAT_WARNING_EVERY = 600.0

    def __init__(self, settings: Settings, sink: InfluxSink, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.sink = sink
        self.url = capacity_url(settings)
        self.interval = settings.capacity_interval
        self.limits = CapacityLimits.from_settings(settings)
        self.history = CapacityHistory(max_samples=HISTORY_SAMPLES)
        self.report: CapacityReport | None = None
        self._history_loaded = False
        self._warned: dict[str, tuple[str, float]] = {}  # kind -> last message, when
        registry.register(CapacityCollector(lambda: self.report))
        self.fetch_failures = Counter(
            "arcbeat_capacity_fetch_failures_total",
            "Capacity rounds without usable fleet counts (workers unreachable, rebalancing, "
            "or another deployment's worker); the last good report stays exported.",
            registry=registry,
        )
        self.write_failures = Counter(
            "arcbeat_capacity_write_failures_total",
            "Capacity rounds whose InfluxDB capacity points could not be written.",
            registry=registry,
        )
        self.last_report = Gauge(
            "arcbeat_capacity_last_report_timestamp_seconds",
            "Unix time of the capacity report the arcbeat_capacity_* gauges show.",
            registry=registry,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        log.info(
            "history: capacity report every %gs from %s (limits: %s)",
            self.interval,
            self.url,
            self.limits,
        )
        timeout = aiohttp.ClientTimeout(total=max(15.0, min(60.0, self.interval)))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not stopping.is_set():
                started = time.monotonic()
                try:
                    await self.round(http)
                except Exception:  # a bug in one round must not end the exporter
                    log.exception("history: capacity round failed")
                wait = max(0.0, self.interval - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), wait)

    async def round(self, http: aiohttp.ClientSession) -> CapacityReport | None:
        """One report: fetch, build, record, write. None when the workers gave no counts."""
        if not self._history_loaded:
            await self._load_history(http)
        try:
            summary = await self._fetch(http)
        except _CapacityFetchError as exc:
            self.fetch_failures.inc()
            self._warn("fetch", f"history: no capacity report this round: {exc}")
            return None
        if self._warned.pop("fetch", None) is not None:
            log.info("history: capacity counts available again from %s", self.url)
        now = time.time()
        # Pure but CPU-bound for a large tenant (a forecast per scope): off the event loop.
        report = await asyncio.to_thread(
            build_report_from_summary,
            summary,
            self.limits,
            regions=self.settings.regions,
            history=self.history,
            now=now,
        )
        self.history.record(report, at=history_step(now))
        self.report = report
        self.last_report.set(now)
        await self._write(report)
        return report

    async def _fetch(self, http: aiohttp.ClientSession) -> FleetSummary:
        try:
            async with http.get(self.url) as resp:
                if resp.status != 200:
                    detail = (await resp.text(errors="replace")).strip()[:300]
                    raise _CapacityFetchError(f"{self.url} answered HTTP {resp.status}: {detail}")
                data = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise _CapacityFetchError(
                f"cannot read {self.url}: {type(exc).__name__}: {exc or 'timeout'}. Is "
                "`arcbeat worker` running? Set ARCBEAT_CAPACITY_SOURCE_URL to a worker's "
                "base URL (or ARCBEAT_CAPACITY_INTERVAL=0 to switch capacity reports off)"
            ) from exc
        prefix = data.get("topicPrefix") if isinstance(data, dict) else None
        if prefix is not None and prefix != self.settings.topic_prefix:
            raise _CapacityFetchError(
                f"the worker at {self.url} serves topic prefix {prefix!r}, this exporter "
                f"{self.settings.topic_prefix!r}: point ARCBEAT_CAPACITY_SOURCE_URL at a worker "
                "of this deployment"
            )
        try:
            summary = FleetSummary.from_dict(data, source=self.url)
        except SummaryError as exc:
            raise _CapacityFetchError(str(exc)) from exc
        if not summary.complete:
            missing = ", ".join(map(str, summary.missing_partitions))
            raise _CapacityFetchError(
                f"the workers' counts cover {len(summary.partitions)} of "
                f"{summary.partitions_total} partitions (missing {missing}): a worker is "
                "starting or rebalancing; partial counts would read as a shrinking fleet"
            )
        return summary

    async def _load_history(self, http: aiohttp.ClientSession) -> None:
        """Pre-fill the growth history from InfluxDB once (retried each round until it works)."""
        s = self.settings
        headers: dict[str, str] = {}
        if s.influx_api == "v2" and s.influx_token:
            headers["Authorization"] = f"Token {s.influx_token}"
        elif s.influx_username:
            auth = aiohttp.BasicAuth(s.influx_username, s.influx_password)
            headers["Authorization"] = auth.encode()
        params = {"db": s.influx_db, "epoch": "s", "q": HISTORY_QUERY}
        url = f"{s.influx_url.rstrip('/')}/query"
        try:
            async with http.get(url, params=params, headers=headers) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200 and not isinstance(body, dict):
                    raise ValueError(f"HTTP {resp.status}")
            added = history_from_influxql(body, self.history)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            self._warn(
                "history",
                f"history: capacity growth history not loaded from {url} (database "
                f"{s.influx_db!r}): {type(exc).__name__}: {exc}; forecasts start from new "
                "reports, retrying next round",
            )
            return
        self._history_loaded = True
        log.info(
            "history: capacity growth history: %d hourly samples of %d scopes",
            added,
            len(self.history),
        )

    async def _write(self, report: CapacityReport) -> None:
        step_ns = max(1, round(self.interval * 1e9))
        at_ns = int(report.generated_at * 1e9) // step_ns * step_ns  # aligned: idempotent
        lines = [capacity_line(u.kind, u.scope, u.used, u.limit, at_ns) for u in report.checks]
        size = max(1, self.settings.influx_batch_size)
        try:
            for i in range(0, len(lines), size):
                await self.sink.write(lines[i : i + size])
        except SinkError as exc:
            # The next round writes a newer snapshot: a failed one is a gap, not a loss.
            self.write_failures.inc()
            self._warn("write", f"history: capacity points not written this round: {exc}")
            return
        self._warned.pop("write", None)

    def _warn(self, kind: str, message: str) -> None:
        """Log a warning; the same one again only every REPEAT_WARNING_EVERY seconds."""
        now = time.monotonic()
        last = self._warned.get(kind)
        if last is None or last[0] != message or now - last[1] >= self.REPEAT_WARNING_EVERY:
            log.warning("%s", message)
            self._warned[kind] = (message, now)
        else:
            log.debug("%s", message)


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
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = _Metrics(self.registry)
        self.group_id = group_id or history_group_id(settings)
        self.topics = (settings.status_topic, fleet_topic(settings))
        self.batch_size = max(1, settings.influx_batch_size)
        self.max_buffered = max_buffered_points or 10 * self.batch_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stop_timeout = stop_timeout
        self.serve_metrics = serve_metrics
        self.metrics_port: int | None = None  # the bound port once serving

        self._entries: deque[_Entry] = deque()
        self._points = 0  # lines in _entries
        self._lock = asyncio.Lock()  # buffer + flush vs. the rebalance callback
        self._stopping = asyncio.Event()
        self._retry_at = 0.0
        self._backoff = backoff_initial
        self._failing_since: float | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._web: web.AppRunner | None = None
        self.capacity: CapacityTask | None = None
        if settings.capacity_interval > 0:
            self.capacity = CapacityTask(settings, sink, self.registry)

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

    async def run(self) -> None:
        """Consume until :meth:`request_stop`; then flush (up to ``stop_timeout``) and close."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group_id,
            client_id=f"{self.group_id}-{id(self):x}",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            **client_options(self.settings),
        )
        consumer.subscribe(list(self.topics), listener=_Rebalance(self))
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            raise HistoryError(
                f"history: cannot reach Kafka at {self.settings.kafka_bootstrap} "
                f"(ARCBEAT_KAFKA_BOOTSTRAP): {exc}"
            ) from exc
        self._consumer = consumer
        capacity_task: asyncio.Task[None] | None = None
        maintenance_task: asyncio.Task[None] | None = None
        try:
            if self.serve_metrics:
                await self._start_web()
            if self.capacity is not None:
                capacity_task = asyncio.create_task(self.capacity.run(self._stopping))
            maintenance_task = asyncio.create_task(self._follow_maintenance())
            log.info(
                "history: %s -> InfluxDB %s (group %s, batch %d, buffer %d)",
                ", ".join(self.topics),
                self.settings.influx_url,
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
            due = max(self._retry_at, self._entries[0].at + self.settings.influx_flush_interval)
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

    # ---------------------------------------------------------------- maintenance windows

    async def _follow_maintenance(self) -> None:
        """Read ``<prefix>.maintenance`` from the beginning and write its windows, until stop.

        Its own consumer without a group (nothing to commit, see the module docstring). If
        the topic does not exist yet, or Kafka refuses, it says so and tries again.
        """
        topic = maintenance_topic(self.settings)
        while not self._stopping.is_set():
            consumer = AIOKafkaConsumer(
                topic,
                bootstrap_servers=self.settings.kafka_bootstrap,
                group_id=None,
                client_id=f"{self.group_id}-maintenance-{id(self):x}",
                enable_auto_commit=False,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
                **client_options(self.settings),
            )
            try:
                await consumer.start()
                while not self._stopping.is_set():
                    batches = await consumer.getmany(timeout_ms=500, max_records=self.batch_size)
                    for records in batches.values():
                        await self._write_windows(records)
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

    async def _write_windows(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Write the ``maintenance`` points of ``records``; a failed write is retried with
        backoff until it succeeds or the exporter stops."""
        now = time.monotonic()
        lines: list[tuple[_Entry, str]] = []
        for record in records:
            if not record.value:  # a deleted window: its point stays as history
                continue
            tp = TopicPartition(record.topic, record.partition)
            try:
                points = maintenance_points(decode(record.value))
            except PointError as exc:
                self._skip(tp, record.offset, exc)
                continue
            entry = _Entry(tp, record.offset, points, now)
            lines.extend((entry, line) for line in points)
        backoff = self.backoff_initial
        while lines and not self._stopping.is_set():
            try:
                written = await self._write(lines)
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

    # ---------------------------------------------------------------- records in

    def _ingest(self, tp: TopicPartition, record: ConsumerRecord[Any, Any], now: float) -> None:
        try:
            lines = value_to_lines(record.value)
        except PointError as exc:
            self._skip(tp, record.offset, exc)
            lines = []
        self._entries.append(_Entry(tp, record.offset, lines, now))
        self._points += len(lines)

    def _skip(self, tp: TopicPartition, offset: int, exc: PointError) -> None:
        self.metrics.skipped.labels(reason=exc.reason).inc()
        log.warning(
            "history: skipping %s[%d]@%d (reason=%s): %s; the record stays in Kafka",
            tp.topic,
            tp.partition,
            offset,
            exc.reason,
            exc.detail,
        )

    # ---------------------------------------------------------------- points out

    async def _flush_ready(self) -> None:
        """Write full batches, or an aged partial one, unless a retry is pending."""
        while self._entries and not self._stopping.is_set():
            now = time.monotonic()
            if now < self._retry_at:
                return
            full = self._points >= self.batch_size
            aged = now - self._entries[0].at >= self.settings.influx_flush_interval
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

    def _take_batch(self) -> list[_Entry]:
        batch: list[_Entry] = []
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
                written = await self._write([(e, line) for e in batch for line in e.lines])
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

    async def _write(self, lines: Sequence[tuple[_Entry, str]]) -> int:
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
            return await self._write(lines[:half]) + await self._write(lines[half:])

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

    async def _commit(self, batch: Sequence[_Entry]) -> None:
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
        site = web.TCPSite(runner, self.settings.web_host, self.settings.history_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise HistoryError(
                f"history: cannot serve /metrics on {self.settings.web_host}:"
                f"{self.settings.history_port} (ARCBEAT_HISTORY_PORT): {exc}"
            ) from exc
        self._web = runner
        addresses = runner.addresses
        self.metrics_port = int(addresses[0][1]) if addresses else self.settings.history_port
        log.info(
            "history: metrics on http://%s:%s/metrics", self.settings.web_host, self.metrics_port
        )

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


def _fmt_offsets(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in sorted(offsets.items()))
