"""The worker (``arcbeat worker``): the one place a worker is composed. The Faust app hosting
it, the heartbeat pipeline, the HTTP API over the pipeline's fleet view, the Prometheus
metrics and the topics it needs.

The composition lives here (not in streams/) so that streams never imports exporters.
"""

from __future__ import annotations

import asyncio
import copy
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import faust
from aiohttp import web as aioweb
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from arcbeat.deploy.kafka_admin.topics import (
    Replication,
    TopicSpec,
    ensure_specs_async,
    topic_specs,
)
from arcbeat.exporters.metrics import OfflineMachine, WorkerCollector, WorkerSnapshot
from arcbeat.streams.api.web import WorkerAPI
from arcbeat.streams.app import create_app
from arcbeat.streams.decide.maintenance import Window
from arcbeat.streams.decide.output_records import CountKey
from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.kafka.live_fleet import LiveFleet
from arcbeat.streams.kafka.pipeline import Pipeline
from arcbeat.streams.kafka.startup import Deadline
from arcbeat.streams.settings import Settings

# machines decoded between two yields to the event loop while a scrape's snapshot is built
SCRAPE_STEP = 500


async def snapshot_of(pipe: Pipeline, max_machine_series: int) -> WorkerSnapshot:
    """What a scrape shows, built on the event loop in steps of :data:`SCRAPE_STEP` decodes.

    Counts come from the engine's indexes (by status, location, scope; the flapping and the
    held machines), so their cost grows with locations x statuses, not with machines; so do
    the Disconnected machines in maintenance while the windows in force select by location
    and subscription. Only the per-machine series (at most ``max_machine_series``) and, while
    a window selecting by resource group, tags or ids is in force, the Disconnected machines
    are decoded one by one. Every value is a
    copy: the collector may render it in another thread while the worker goes on.
    """
    engine = pipe.engine
    wall = time.time()
    book = pipe.maintenance.book
    offline_total = engine.disconnected_count()
    flapping = engine.flapping_count(engine.stats.last_event_at)  # from the flap index

    # read at scrape time, so that the label drops, and the machine pages, the moment its
    # window ends
    windows = book.active(wall)
    in_maintenance = _covered_by_location(windows, engine.counts()) if windows else Counter()
    if in_maintenance is None:
        in_maintenance = await _covered_by_decoding(pipe, wall)

    offline: list[OfflineMachine] = []
    for n, key in enumerate(list(islice(engine.disconnected_keys(), max_machine_series)), 1):
        if n % SCRAPE_STEP == 0:
            await asyncio.sleep(0)
        m = engine.machine(key)
        if m is None:
            continue
        i = m.info
        window = (
            book.window_for(
                i.resource_id, i.subscription_id, i.resource_group, i.location, i.tags, wall
            )
            if windows
            else None
        )
        # ids are case-insensitive: lower-cased labels keep one series/group per machine
        offline.append(
            OfflineMachine(
                key,
                i.subscription_id.lower(),
                i.resource_group.lower(),
                i.machine_name,
                i.location,
                m.state.last_heartbeat_at,
                window or "",
            )
        )

    return WorkerSnapshot(
        stats=copy.deepcopy(engine.stats),
        counts=engine.counts(),
        lag=pipe.lag(),
        verdicts=dict(pipe.verdicts()),
        held_by_scope=engine.held_by_scope(),  # from the held index: O(locations)
        offline=iter(offline),
        offline_total=offline_total,
        flapping=flapping,
        maintenance_offline=in_maintenance,
        maintenance_active=len(windows),
        late_by_location=engine.late_by_location(),
        delivery_delay=copy.deepcopy(engine.early.by_location()),
        degraded=list(pipe.degraded()),
    )


def _covered_by_location(windows: list[Window], counts: Counter[CountKey]) -> Counter[str] | None:
    """Disconnected machines covered by the windows in force, by location, from the engine's
    counts (by status, location, os type, subscription): no machine is decoded. None when a
    window selects by more than location and subscription (resource group, tags, ids)."""
    selectors = [w.selector for w in windows]
    if any(s.resource_ids or s.resource_group is not None or s.tags for s in selectors):
        return None
    out: Counter[str] = Counter()
    for (status, location, _os, sub), n in counts.items():
        if status == "Disconnected" and n and any(
            s.matches("", sub, "", location, {}) for s in selectors
        ):
            out[location] += n
    return out


async def _covered_by_decoding(pipe: Pipeline, wall: float) -> Counter[str]:
    """:func:`_covered_by_location` for windows that select by resource group, tags or ids:
    each Disconnected machine is decoded, in steps of :data:`SCRAPE_STEP`."""
    engine, book = pipe.engine, pipe.maintenance.book
    out: Counter[str] = Counter()
    for n, key in enumerate(list(engine.disconnected_keys()), 1):
        if n % SCRAPE_STEP == 0:
            await asyncio.sleep(0)
        m = engine.machine(key)
        if m is None:
            continue  # changed meanwhile
        i = m.info
        if book.window_for(
            i.resource_id, i.subscription_id, i.resource_group, i.location, i.tags, wall
        ):
            out[i.location] += 1
    return out


class Scrapes:
    """/metrics: one scrape at a time. Its snapshot is built on the event loop in steps, then
    rendered in a thread (formatting 10,000 per-machine series takes 0.1-0.2 s, too long to
    hold the event loop)."""

    def __init__(self, pipe: Pipeline, max_machine_series: int) -> None:
        self.pipe = pipe
        self.max_machine_series = max_machine_series
        self._snapshot: WorkerSnapshot | None = None
        self._lock = asyncio.Lock()
        # no auto_describe: it would collect (and so take a snapshot) at registration
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(WorkerCollector(self.current, max_machine_series=max_machine_series))

    def current(self) -> WorkerSnapshot:
        if self._snapshot is None:
            raise RuntimeError("a worker's metrics are rendered by Scrapes.render only")
        return self._snapshot

    async def render(self) -> bytes:
        async with self._lock:
            self._snapshot = await snapshot_of(self.pipe, self.max_machine_series)
            try:
                return await asyncio.to_thread(generate_latest, self.registry)
            finally:
                self._snapshot = None


def internal_specs(settings: Settings) -> list[TopicSpec]:
    """The worker's own topics: checkpoints (one partition per heartbeats partition) and the
    shared scope state (one partition, read whole by every worker). Both are compacted and
    roll segments often, so that replaced checkpoints and the scope state's superseded values
    (partition 0's owner writes one a tick) are cleaned soon: a worker start reads what is
    left, which must not grow with uptime."""
    return [
        TopicSpec(
            settings.topics.checkpoints,
            settings.kafka.partitions,
            {
                "cleanup.policy": "compact",
                "max.message.bytes": str(16 * 1024 * 1024),
                "segment.bytes": str(64 * 1024 * 1024),
                "segment.ms": str(15 * 60 * 1000),
                "min.cleanable.dirty.ratio": "0.2",
                "delete.retention.ms": str(60 * 60 * 1000),
            },
        ),
        TopicSpec(
            settings.topics.scopes,
            1,
            {
                "cleanup.policy": "compact",
                # a partition's early-warning sample is one record, growing with the
                # (subscription, location) parts it holds: 8 MiB, the producers' request size
                "max.message.bytes": str(8 * 1024 * 1024),
                "segment.ms": str(10 * 60 * 1000),
                "min.cleanable.dirty.ratio": "0.1",
                "delete.retention.ms": str(60 * 60 * 1000),
            },
            partitions_setting="",
        ),
    ]


async def declare_topics(pipe: Pipeline) -> None:
    """Make sure the deployment's topics and the worker's own topics exist, with the
    partitions and replication of the settings (a mismatch stops the worker with the topic
    named; too little replication on a multi-broker cluster is a warning on stderr).

    Runs with the worker's own credentials: on a secured broker the worker may create its
    ``<app_id>-*`` topics, while the deployment's topics are an admin's (``arcbeat stack up``).
    """
    s = pipe.settings
    internal = internal_specs(s)
    options = client_options(s.kafka)
    specs = topic_specs(s.kafka.topic_prefix, s.kafka.partitions) + internal
    await ensure_specs_async(
        s.kafka.bootstrap,
        specs,
        # each attempt short: a request stuck on a broker that just died is retried
        # (arcbeat.streams.kafka.startup) rather than waited for
        timeout=15.0,
        options=options,
        replication=Replication.of(s),
        warn=lambda m: print(f"arcbeat worker: warning: {m}", file=sys.stderr, flush=True),
    )


def worker_number(settings: Settings, option: int | None) -> tuple[int, bool]:
    """(the worker's number, whether its web port is web_port + number).

    ``arcbeat worker --id N`` runs worker N beside others on one host (port base + N);
    without it, the ``worker_id`` setting (a StatefulSet pod's name) names a worker with a
    host of its own, which keeps web_port; neither: worker 0."""
    if option is not None:
        return option, True
    ordinal = settings.worker.ordinal
    return (ordinal, False) if ordinal is not None else (0, True)


@dataclass
class Worker:
    """One worker: the Faust app that hosts it (process, web server, timers), the heartbeat
    pipeline, the HTTP API over its fleet view, and /metrics. Built here and nowhere else."""

    settings: Settings
    number: int
    app: faust.App
    pipeline: Pipeline
    api: WorkerAPI
    scrapes: Scrapes

    @classmethod
    def build(
        cls,
        settings: Settings,
        number: int = 0,
        *,
        offset_port: bool = True,
        deadline: Deadline | None = None,
    ) -> Worker:
        """A SettingsError when the settings would leave a routable listener open."""
        if offset_port:  # several workers on one host: web port = base + number
            settings = settings.replace(web_port=settings.worker.web_port + number)
        app = create_app(settings, worker_id=str(number))
        pipe = Pipeline(settings, app, worker_id=str(number), deadline=deadline)
        scrapes = Scrapes(pipe, settings.worker.max_machine_series)
        web: Any = app.web  # faust's aiohttp driver: its Application is web_app
        api = WorkerAPI(LiveFleet(pipe), settings)
        api.register(web.web_app)
        # only arcbeat's own series: faust's sensors would describe faust's per-event path,
        # which the worker does not use (the batch loop reads Kafka itself)
        web.web_app.router.add_get("/metrics", _metrics_page(scrapes))
        return cls(settings, number, app, pipe, api, scrapes)

    async def declare_topics(self) -> None:
        await declare_topics(self.pipeline)

    def run(self, loglevel: str) -> None:
        """Run until stopped; the process then exits (faust's worker ends it)."""
        # redirect_stdouts=False: faust would otherwise turn stdout lines (the command's
        # --print-transitions) into WARNING log records on stderr
        host = faust.Worker(self.app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
        # faust's terminal spinner sets the root logger to DEBUG so that every record spins
        # it: every aiokafka/faust debug record is then built and filtered, per message
        # (~30x slower)
        host.spinner = None
        host.execute_from_commandline()


def _metrics_page(
    scrapes: Scrapes,
) -> Callable[[aioweb.Request], Awaitable[aioweb.Response]]:
    async def metrics(request: aioweb.Request) -> aioweb.Response:
        body = await scrapes.render()
        return aioweb.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics
