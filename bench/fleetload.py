"""Benchmark input: a fleet's heartbeats encoded before the clock starts, produced in batches.

The records are the simulator's (:class:`~arcbeat.deploy.agents.payloads.PayloadFactory`, the same
fleet shape, keys and partitioning as ``arcbeat simulate``), built up front so the producer
only copies bytes; the same records are then read by the worker and the raw consumers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from arcbeat.deploy.agents.payloads import PayloadFactory
from arcbeat.deploy.agents.producer import make_producer
from arcbeat.deploy.agents.scenarios import Fleet, FleetSpec, fleet_locations
from arcbeat.streams.decide.partitioner import KeyPartitioner
from arcbeat.streams.decide.timestamps import rfc3339
from arcbeat.streams.settings import Settings

Progress = Callable[[str], None]
Headers = list[tuple[str, bytes]]
# key (None: no key), value, timestamp in ms (None: now), headers (None: none)
Record = tuple[bytes | None, bytes, int | None, Headers | None]

TICK_HEADER = "arcbeat-tick"
# a tick as a worker writes it, minus its worker id (the worker reads only the verdicts and
# decidedAt): no scope verdict, no decision taken yet
TICK_VALUE = orjson.dumps({"type": "tick", "worker": "bench", "verdicts": {}, "decidedAt": 0.0})


@dataclass(slots=True)
class Encoded:
    """Records grouped by partition, in send order."""

    by_partition: dict[int, list[Record]] = field(default_factory=dict)
    count: int = 0
    size: int = 0  # bytes of keys and values

    def add(
        self,
        p: int,
        key: bytes | None,
        value: bytes,
        ts_ms: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        self.by_partition.setdefault(p, []).append((key, value, ts_ms, headers))
        self.count += 1
        self.size += len(key or b"") + len(value)

    def clear(self) -> None:
        self.by_partition.clear()


class FleetEncoder:
    """Keys, partitions and bodies of fleet machines ``0..n-1``."""

    def __init__(self, settings: Settings, n: int, *, seed: int = 0) -> None:
        self.fleet = Fleet(FleetSpec(machines=n, seed=seed, locations=fleet_locations(settings)))
        self.factory = PayloadFactory(self.fleet)
        self.partitioner = KeyPartitioner(settings.kafka.partitions)
        self._partition: dict[int, int] = {}

    def partition(self, m: int) -> int:
        p = self._partition.get(m)
        if p is None:
            p = self._partition[m] = self.partitioner(self.fleet.key(m).encode())
        return p

    def body(self, m: int, kind: str, sent_at: float | bytes, seq: int) -> tuple[bytes, bytes]:
        stamp = sent_at if isinstance(sent_at, bytes) else rfc3339(sent_at).encode()
        body, key = self.factory.payload(m, kind, stamp, seq)
        return bytes(body), bytes(key)

    def encode(
        self,
        machines: Iterable[int],
        *,
        rounds: int = 1,
        first_kind: str = "connect",
        first_sequence: int = 0,
        sent_at: float | None = None,
        timestamp: float | None = None,
        block: int | None = None,
        into: Encoded | None = None,
    ) -> Encoded:
        """Round r sends every machine once with sequence ``first_sequence + r`` (round 0 is
        ``first_kind``, the others heartbeats).

        With ``block``, rounds are interleaved per block of machines (block 1 rounds 0..r-1,
        then block 2, ...), so any stretch of the log has the same mix of first and repeat
        heartbeats.
        """
        out = into if into is not None else Encoded()
        stamp = rfc3339(time.time() if sent_at is None else sent_at).encode()
        ts_ms = None if timestamp is None else int(timestamp * 1000)
        ms = list(machines)
        step = block or max(1, len(ms))
        for b in range(0, len(ms), step):
            chunk = ms[b : b + step]
            for r in range(rounds):
                kind = first_kind if r == 0 else "heartbeat"
                for m in chunk:
                    body, key = self.factory.payload(m, kind, stamp, first_sequence + r)
                    out.add(self.partition(m), key, body, ts_ms)
        return out


def tick_chunks(partitions: int, per_partition: int, chunk: int = 100_000) -> Iterator[Encoded]:
    """``per_partition`` tick records for every partition (the control records a worker
    appends every check_interval), ``chunk`` records a time, partitions interleaved."""
    headers: Headers = [(TICK_HEADER, b"1")]
    per_chunk = max(1, chunk // max(1, partitions))
    for start in range(0, per_partition, per_chunk):
        out = Encoded()
        for p in range(partitions):
            for _ in range(min(per_chunk, per_partition - start)):
                out.add(p, None, TICK_VALUE, None, headers)
        yield out


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
    return await produce_many(
        settings,
        [(topic, encoded)],
        progress=progress,
        label=label,
        progress_every=progress_every,
        total=encoded.count,
    )


async def produce_many(
    settings: Settings,
    parts: Iterable[tuple[str, Encoded]],
    *,
    progress: Progress | None = None,
    label: str = "load",
    progress_every: float = 5.0,
    total: int | None = None,
) -> ProduceFigures:
    """:func:`produce` for a stream of (topic, records) chunks, through one producer.

    Chunks may be generated lazily (a million machines' state is never all in memory).
    """
    producer = make_producer(
        settings, linger_ms=20, max_batch_size=512 * 1024, enable_idempotence=False, acks=1
    )
    await producer.start()
    pending: list[asyncio.Future[Any]] = []
    sent = nbytes = failed = 0
    of = f"/{total:,}" if total else ""
    try:
        started = time.monotonic()
        next_say = started + progress_every
        for topic, encoded in parts:
            cursors = {p: 0 for p in encoded.by_partition}
            nbytes += encoded.size
            while cursors:
                for p in list(cursors):
                    records = encoded.by_partition[p]
                    i = cursors[p]
                    batch = producer.create_batch()
                    while i < len(records):
                        key, value, ts, headers = records[i]
                        if (
                            batch.append(key=key, value=value, timestamp=ts, headers=headers or [])
                            is None
                        ):
                            break
                        i += 1
                    if batch.record_count() == 0:
                        raise ValueError(f"{label}: a record of {topic} does not fit in a batch")
                    pending.append(await producer.send_batch(batch, topic, partition=p))
                    sent += batch.record_count()
                    if i >= len(records):
                        del cursors[p]
                    else:
                        cursors[p] = i
                now = time.monotonic()
                if progress is not None and now >= next_say:
                    progress(f"{label}: {sent:,}{of} records sent")
                    next_say = now + progress_every
            encoded.clear()
            if len(pending) > 2000:  # keep the list short on long loads
                done = await asyncio.gather(*pending, return_exceptions=True)
                failed += sum(1 for o in done if isinstance(o, BaseException))
                pending.clear()
        done = await asyncio.gather(*pending, return_exceptions=True)
        failed += sum(1 for o in done if isinstance(o, BaseException))
        seconds = time.monotonic() - started
    finally:
        await producer.stop()
    figures = ProduceFigures(sent, nbytes, seconds, failed)
    if progress is not None:
        progress(
            f"{label}: {sent:,} records ({nbytes / 1e6:,.0f} MB) in "
            f"{seconds:.1f}s = {figures.rate:,.0f}/s"
        )
    if failed:
        raise RuntimeError(f"{label}: {failed} batches were not acknowledged by the broker")
    return figures
