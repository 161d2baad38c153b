"""Benchmark input: a fleet's heartbeats encoded before the clock starts, produced in batches.

The records are the simulator's (:class:`~arcbeat.streams.simulate.PayloadFactory`, the same
fleet shape, keys and partitioning as ``arcbeat simulate``), built up front so the producer
only copies bytes; the same records are then read by the worker and the raw consumers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from arcbeat.streams.records import rfc3339
from arcbeat.streams.scenarios import Fleet, FleetSpec
from arcbeat.streams.settings import Settings
from arcbeat.streams.partitioner import KeyPartitioner
from arcbeat.streams.simulate import PayloadFactory, fleet_locations, make_producer

Progress = Callable[[str], None]
Record = tuple[bytes, bytes, int | None]  # key, value, timestamp in ms (None: now)


@dataclass(slots=True)
class Encoded:
    """Records grouped by partition, in send order."""

    by_partition: dict[int, list[Record]] = field(default_factory=dict)
    count: int = 0
    bytes: int = 0

    def add(self, p: int, key: bytes, value: bytes, ts_ms: int | None = None) -> None:
        self.by_partition.setdefault(p, []).append((key, value, ts_ms))
        self.count += 1
        self.bytes += len(key) + len(value)

    def clear(self) -> None:
        self.by_partition.clear()


class FleetEncoder:
    """Keys, partitions and bodies of fleet machines ``0..n-1``."""

    def __init__(self, settings: Settings, n: int, *, seed: int = 0) -> None:
        self.fleet = Fleet(FleetSpec(machines=n, seed=seed, locations=fleet_locations(settings)))
        self.factory = PayloadFactory(self.fleet)
        self.partitioner = KeyPartitioner(settings.partitions)
        self._partition: dict[int, int] = {}

    def partition(self, m: int) -> int:
        p = self._partition.get(m)
        if p is None:
            p = self._partition[m] = self.partitioner(self.fleet.key(m).encode())
        return p

    def body(self, m: int, kind: str, sent_at: float | bytes, seq: int) -> tuple[bytes, bytes]:
        stamp = sent_at if isinstance(sent_at, bytes) else rfc3339(sent_at).encode()
        return self.factory.payload(m, kind, stamp, seq)

    def encode(
        self,
        machines: Iterable[int],
        *,
        rounds: int = 1,
        first_kind: str = "connect",
        sent_at: float | None = None,
        timestamp: float | None = None,
        into: Encoded | None = None,
    ) -> Encoded:
        """Round r: every machine once, sequence r (round 0 is ``first_kind``)."""
        out = into if into is not None else Encoded()
        stamp = rfc3339(time.time() if sent_at is None else sent_at).encode()
        ts_ms = None if timestamp is None else int(timestamp * 1000)
        ms = list(machines)
        for r in range(rounds):
            kind = first_kind if r == 0 else "heartbeat"
            for m in ms:
                body, key = self.factory.payload(m, kind, stamp, r)
                out.add(self.partition(m), key, body, ts_ms)
        return out


@dataclass(frozen=True, slots=True)
class ProduceFigures:
    records: int
    bytes: int
    seconds: float
    failed_batches: int

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


async def produce(
    settings: Settings,
    topic: str,
    encoded: Encoded,
    *,
    progress: Progress | None = None,
    label: str = "load",
    progress_every: float = 5.0,
) -> ProduceFigures:
    """Send every record, partition batches interleaved, and wait for every acknowledgement."""
    producer = make_producer(
        settings, linger_ms=20, max_batch_size=512 * 1024, enable_idempotence=False, acks=1
    )
    await producer.start()
    pending: list[asyncio.Future[Any]] = []
    sent = 0
    try:
        started = time.monotonic()
        next_say = started + progress_every
        cursors = {p: 0 for p in encoded.by_partition}
        while cursors:
            for p in list(cursors):
                records = encoded.by_partition[p]
                i = cursors[p]
                batch = producer.create_batch()
                while i < len(records):
                    key, value, ts = records[i]
                    if batch.append(key=key, value=value, timestamp=ts) is None:
                        break
                    i += 1
                pending.append(await producer.send_batch(batch, topic, partition=p))
                sent += batch.record_count()
                if i >= len(records):
                    del cursors[p]
                else:
                    cursors[p] = i
            now = time.monotonic()
            if progress is not None and now >= next_say:
                progress(f"{label}: {sent:,}/{encoded.count:,} sent")
                next_say = now + progress_every
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        seconds = time.monotonic() - started
    finally:
        await producer.stop()
    failed = sum(1 for o in outcomes if isinstance(o, BaseException))
    figures = ProduceFigures(encoded.count, encoded.bytes, seconds, failed)
    if progress is not None:
        progress(
            f"{label}: {encoded.count:,} records ({encoded.bytes / 1e6:,.0f} MB) in "
            f"{seconds:.1f}s = {figures.rate:,.0f}/s, {failed} failed batches"
        )
    if failed:
        raise RuntimeError(f"{label}: {failed} batches were not acknowledged by the broker")
    return figures
