"""The capacity report of the history exporter (docs/metrics-alerts-history.md, Capacity
planning).

Every ``capacity_interval`` (0 = off) the exporter asks a worker for the fleet's
``GET /capacity`` counts (``capacity_source_url``, default the local worker), builds the
capacity report with its growth history (pre-filled from InfluxDB's ``capacity`` measurement,
one sample per hour per scope), writes ``capacity`` points at a time aligned to the interval (a
re-write is an overwrite) and serves the ``arcbeat_capacity_*`` gauges on its own
``/metrics``. One process computes them for the whole fleet, which is what the alert rules'
``max by (kind, scope)`` expects. Unreachable workers, a rebalance (partitions missing) or a
worker of another deployment are logged, counted in ``arcbeat_capacity_fetch_failures_total``
and retried next interval; the last good report stays exported
(``arcbeat_capacity_last_report_timestamp_seconds`` tells its age).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from arcbeat.exporters.capacity.collector import CapacityCollector
from arcbeat.exporters.capacity.forecast import (
    HISTORY_QUERY,
    HISTORY_SAMPLES,
    CapacityHistory,
    history_from_influxql,
    history_step,
)
from arcbeat.exporters.capacity.model import CapacityLimits, CapacityReport
from arcbeat.exporters.capacity.report import build_report_from_summary
from arcbeat.exporters.influx_points import capacity_line
from arcbeat.exporters.settings import Settings
from arcbeat.exporters.sinks import InfluxSink, SinkError
from arcbeat.streams.decide.fleet_summary import FleetSummary, SummaryError
from arcbeat.streams.settings import SettingsError, read_secret

# the history exporter runs this task: its log lines are the exporter's
log = logging.getLogger("arcbeat.exporters.history")


def capacity_url(settings: Settings) -> str:
    """Where the capacity task reads the fleet's counts (a worker's ``GET /capacity``)."""
    base = (
        settings.capacity.source_url
        or f"http://{settings.worker.web_host}:{settings.worker.web_port}"
    )
    base = base.rstrip("/")
    return base if base.endswith("/capacity") else f"{base}/capacity"


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
        self.headers = self._auth()  # sent to the workers only, never to InfluxDB
        self.interval = settings.capacity.interval
        self.limits = CapacityLimits.from_settings(settings.capacity)
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

    def _auth(self) -> dict[str, str]:
        """The Authorization header of the capacity fetch (capacity_token_file), if any."""
        path = self.settings.capacity.token_file
        if not path:
            return {}
        token = read_secret("", path, "capacity_token")
        if not token:
            raise SettingsError(
                f"setting capacity_token_file (ARCBEAT_CAPACITY_TOKEN_FILE): {path} is empty; "
                "put a read-role API token on its first line"
            )
        return {"Authorization": f"Bearer {token}"}

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
            regions=self.settings.input.regions,
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
            async with http.get(self.url, headers=self.headers) as resp:
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
        if prefix is not None and prefix != self.settings.kafka.topic_prefix:
            raise _CapacityFetchError(
                f"the worker at {self.url} serves topic prefix {prefix!r}, this exporter "
                f"{self.settings.kafka.topic_prefix!r}: point ARCBEAT_CAPACITY_SOURCE_URL at a "
                "worker of this deployment"
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
        if s.influx.api == "v2" and s.influx.token:
            headers["Authorization"] = f"Token {s.influx.token}"
        elif s.influx.username:
            auth = aiohttp.BasicAuth(s.influx.username, s.influx.password)
            headers["Authorization"] = auth.encode()
        params = {"db": s.influx.db, "epoch": "s", "q": HISTORY_QUERY}
        url = f"{s.influx.url.rstrip('/')}/query"
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
                f"{s.influx.db!r}): {type(exc).__name__}: {exc}; forecasts start from new "
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
        size = max(1, self.settings.influx.batch_size)
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
