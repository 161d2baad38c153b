"""Heartbeats as fast as the producer goes (``arcbeat simulate --load``): a fixed number of
fresh, valid heartbeats of a simulated fleet, for load runs and backlogs."""

from __future__ import annotations

import asyncio
import time
from array import array
from dataclasses import dataclass
from typing import Any

from arcbeat.deploy.agents.payloads import PayloadFactory
from arcbeat.deploy.agents.producer import check_topic, make_producer
from arcbeat.deploy.agents.running import Progress
from arcbeat.deploy.agents.scenarios import Fleet, FleetSpec, fleet_locations
from arcbeat.streams.decide.partitioner import KeyPartitioner
from arcbeat.streams.decide.timestamps import rfc3339
from arcbeat.streams.settings import Settings


@dataclass(frozen=True, slots=True)
class LoadResult:
    topic: str
    machines: int
    sent: int
    errors: int
    seconds: float  # from the first send to the last acknowledgement

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


async def load(
    settings: Settings,
    n: int,
    *,
    heartbeats_per_machine: int = 1,
    topic: str | None = None,
    seed: int = 0,
    first_index: int = 0,
    connect_first: bool = False,
    progress: Progress | None = None,
    progress_every: float = 5.0,
    check: bool = True,
    producer_options: dict[str, Any] | None = None,
) -> LoadResult:
    """Produce ``n * heartbeats_per_machine`` heartbeats as fast as the producer goes.

    Round r sends machines ``first_index .. first_index+n-1`` a heartbeat with sequence r, so
    every message is a fresh, valid heartbeat (sentAt is the send time, refreshed every 1,000
    messages). Keys and partitions are computed once per machine, before the clock starts;
    records go out in per-partition batches (aiokafka's batch API), which is several times
    faster than one ``send()`` per message.
    """
    if n < 1 or heartbeats_per_machine < 1:
        raise ValueError("load: n and heartbeats_per_machine must be >= 1")
    spec = FleetSpec(machines=first_index + n, seed=seed, locations=fleet_locations(settings))
    fleet = Fleet(spec)
    factory = PayloadFactory(fleet)
    target = topic or settings.topics.heartbeats
    if check:
        await check_topic(settings, target)
    options = {"linger_ms": 20, "max_batch_size": 256 * 1024, "enable_idempotence": False}
    producer = make_producer(settings, **{**options, **(producer_options or {})})
    await producer.start()
    errors = 0
    sent = 0
    total = n * heartbeats_per_machine
    pending: list[asyncio.Future[Any]] = []
    try:
        partitions = sorted(await producer.partitions_for(target))
        partitioner = KeyPartitioner(len(partitions))
        machines = range(first_index, first_index + n)
        part_of = array("H", (partitions[partitioner(fleet.key(m).encode())] for m in machines))
        builders: dict[int, Any] = {}
        started = time.time()
        mark = (started, 0)
        next_progress = started + progress_every
        for r in range(heartbeats_per_machine):
            kind = "connect" if connect_first and r == 0 else "heartbeat"
            for j, m in enumerate(machines):
                if sent % 1000 == 0:
                    now = time.time()
                    stamp = rfc3339(now).encode()
                    if progress is not None and now >= next_progress:
                        rate = (sent - mark[1]) / (now - mark[0])
                        progress(f"load: {sent}/{total} sent ({rate:,.0f}/s)")
                        mark, next_progress = (now, sent), now + progress_every
                body, key = factory.payload(m, kind, stamp, r)
                p = part_of[j]
                batch = builders.get(p)
                if batch is None:
                    batch = builders[p] = producer.create_batch()
                if batch.append(key=key, value=body, timestamp=None) is None:
                    pending.append(await producer.send_batch(batch, target, partition=p))
                    batch = builders[p] = producer.create_batch()
                    batch.append(key=key, value=body, timestamp=None)
                sent += 1
        for p, batch in builders.items():
            if batch.record_count():
                pending.append(await producer.send_batch(batch, target, partition=p))
        for outcome in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(outcome, BaseException):
                errors += 1
        seconds = time.time() - started
    finally:
        await producer.stop()
    result = LoadResult(target, n, sent, errors, seconds)
    if progress is not None:
        progress(
            f"load: {sent} heartbeats from {n} machines in {seconds:.2f}s "
            f"= {result.rate:,.0f}/s, {errors} failed batches"
        )
    return result
