"""The worker (``arcbeat worker``): the stream processor composed with its HTTP API, its
Prometheus metrics and its topics.

Wiring lives here (not in streams/) so that streams never imports exporters.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CollectorRegistry

from arcbeat.deploy.kafka_admin.topics import (
    Replication,
    TopicSpec,
    ensure_specs_async,
    topic_specs,
)
from arcbeat.exporters.metrics import OfflineMachine, WorkerCollector, WorkerSnapshot
from arcbeat.streams.batch import checkpoints_topic
from arcbeat.streams.kafka_client import client_options
from arcbeat.streams.machines import MachineInfo
from arcbeat.streams.scopes import scopes_topic
from arcbeat.streams.settings import Settings
from arcbeat.streams.startup import Deadline
from arcbeat.streams.status import is_flapping
from arcbeat.streams.web import WorkerAPI
from arcbeat.streams.worker import Pipeline


def snapshot_of(pipe: Pipeline) -> WorkerSnapshot:
    engine = pipe.engine
    disconnected = list(engine.disconnected_keys())
    wall = time.time()
    book = pipe.maintenance.book
    active = len(book.active(wall))

    def planned(info: MachineInfo) -> str:
        """The window covering the machine now ("" when none): read at scrape time, so the
        label drops, and the machine pages, the moment its window ends."""
        if not active:
            return ""
        i = info
        found = book.window_for(
            i.resource_id, i.subscription_id, i.resource_group, i.location, i.tags, wall
        )
        return found or ""

    def offline() -> Iterator[OfflineMachine]:
        for key in disconnected:
            m = engine.machine(key)
            if m is not None:
                i = m.info
                # ids are case-insensitive: lower-cased labels keep one series/group per machine
                yield OfflineMachine(
                    key,
                    i.subscription_id.lower(),
                    i.resource_group.lower(),
                    i.machine_name,
                    i.location,
                    m.state.last_heartbeat_at,
                    covering.get(key, ""),
                )

    flapping = 0
    in_maintenance: Counter[str] = Counter()
    covering: dict[str, str] = {}  # offline machine -> its window (looked up once, below)
    now = engine.stats.last_event_at
    held = engine.held_by_scope()  # from the held index: O(locations), not O(held)
    # flapping machines have had transitions this window: the disconnected set and recent
    # transitions are where they are; scanning only Disconnected keeps scrape cost bounded
    for key in disconnected:
        m = engine.machine(key)
        if m is None:
            continue
        if is_flapping(m.state, now, engine.timing):
            flapping += 1
        window = planned(m.info)
        if window:
            covering[key] = window
            in_maintenance[m.info.location] += 1
    return WorkerSnapshot(
        stats=engine.stats,
        counts=engine.counts(),
        lag=pipe.lag(),
        verdicts=pipe.verdicts(),
        held_by_scope=held,
        offline=offline(),
        offline_total=len(disconnected),
        flapping=flapping,
        maintenance_offline=in_maintenance,
        maintenance_active=active,
        late_by_location=engine.late_by_location(),
        delivery_delay=engine.early.by_location(),
        degraded=pipe.degraded(),
    )


def internal_specs(settings: Settings) -> list[TopicSpec]:
    """The worker's own topics: checkpoints (one partition per heartbeats partition) and the
    shared scope state (one partition, read whole by every worker). Both are compacted and
    roll segments often, so that replaced checkpoints and the scope state's superseded values
    (partition 0's owner writes one a tick) are cleaned soon: a worker start reads what is
    left, which must not grow with uptime."""
    return [
        TopicSpec(
            checkpoints_topic(settings),
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
            scopes_topic(settings),
            1,
            {
                "cleanup.policy": "compact",
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
        # (arcbeat.streams.startup) rather than waited for
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


def build_worker(
    settings: Settings,
    worker_id: int = 0,
    *,
    offset_port: bool = True,
    deadline: Deadline | None = None,
) -> Pipeline:
    if offset_port:
        settings = settings.replace(web_port=settings.worker.web_port + worker_id)
    pipe = Pipeline(settings, worker_id=str(worker_id), deadline=deadline)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(
        WorkerCollector(
            lambda: snapshot_of(pipe), max_machine_series=settings.worker.max_machine_series
        )
    )
    # /metrics serves this registry (faust's sensors would describe faust's own event path,
    # which the worker does not use)
    setup_prometheus_sensors(pipe.app, "/metrics", registry, name_prefix="arcbeat_faust")
    web: Any = pipe.app.web  # the aiohttp driver: its Application is web_app
    WorkerAPI(pipe).register(web.web_app)
    return pipe
