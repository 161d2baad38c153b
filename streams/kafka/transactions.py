"""Each owned partition's transaction: its outputs (status, DLQ, fleet), its scope board
writes, any checkpoint and its consumed offset commit together, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from arcbeat.streams.kafka.checkpoint import Pointer
from arcbeat.streams.kafka.owned import Owned

# a partition whose state did not move since its latest checkpoint (only ticks that looked at
# no machine: a held, silent fleet) is checkpointed this many checkpoint_intervals apart, not
# one: the checkpoint would repeat the last one, and a restart replays only ticks
QUIET_CHECKPOINTS = 10

SEND_STEP = 2000  # records sent between two turns of the event loop

# a partition whose latest tick emitted this many records is in a burst of decisions (a held
# location released, say): its checkpoint waits, as when it is behind
BURST_RECORDS = 100

WriteCheckpoint = Callable[[Owned, AIOKafkaProducer], Awaitable[Pointer]]


async def flush(o: Owned, board_topic: str) -> None:
    """Send the partition's pending records in its open transaction (begun when needed).

    One ``send`` a record: it joins the partition's lingering batch. (A batch of one's own,
    ``send_batch``, waits until the partition's previous batch has left, up to the producer's
    linger with the lock held: a worker behind on released machines fell further behind.)"""
    producer = o.producer
    if producer is None:
        o.sends.clear()
        return
    if not o.in_txn:
        await producer.begin_transaction()
        o.in_txn = True
    for n, (topic, key, value) in enumerate(o.sends, 1):
        # outputs go to the source partition number; the scope state has one partition
        partition = 0 if topic == board_topic else o.p
        await producer.send(topic, value, key=key, partition=partition)
        if n % SEND_STEP == 0:
            # a send that finds room in a batch never suspends: a released location's
            # 30,000 records would hold the event loop for a second
            await asyncio.sleep(0)
    o.sends.clear()


@dataclass(frozen=True, slots=True)
class Sealed:
    """A partition's transaction with everything it commits sent: what the commit writes as
    the partition's offset, and the checkpoint written in it (None: none)."""

    position: int
    meta: str  # the offset's metadata: the pointer to the partition's latest checkpoint
    written: Pointer | None


async def seal(o: Owned, board_topic: str, write_checkpoint: WriteCheckpoint | None) -> Sealed:
    """The part of a commit that reads the partition's state (the caller holds the loop's
    lock): its pending records sent, a checkpoint written when asked, its position taken.
    What is processed after it belongs to the next transaction."""
    producer = o.producer
    if producer is None:
        raise RuntimeError(f"partition {o.p} has no producer")
    if o.sends:
        await flush(o, board_topic)
    if not o.in_txn:
        await producer.begin_transaction()
        o.in_txn = True
    pointer = o.pointer
    written = None
    if write_checkpoint is not None:
        pointer = written = await write_checkpoint(o, producer)
    o.quiet = True  # until a heartbeat or a tick that moves the state
    return Sealed(o.position, pointer.encode() if pointer is not None else "", written)


async def finish(producer: AIOKafkaProducer, o: Owned, sealed: Sealed, group: str) -> Sealed:
    """The rest of a commit, which only waits on Kafka (the loop may process meanwhile): the
    sealed position as the consumed offset, then the commit itself. Kafka's errors (fenced,
    failed) are the caller's."""
    await producer.send_offsets_to_transaction({o.tp: (sealed.position, sealed.meta)}, group)
    await producer.commit_transaction()
    return sealed


def committed(o: Owned, sealed: Sealed) -> None:
    """The sealed transaction committed."""
    o.in_txn = False
    o.committed = sealed.position
    o.committed_at = time.monotonic()


def checkpoint_due(
    live: list[Owned], every: float, behind: Callable[[Owned], bool] = lambda o: False
) -> Owned | None:
    """At most one partition's checkpoint per commit: the one waiting longest.

    A partition that is behind (``behind``: it has not read what was in the log a tick ago),
    or in a burst (its latest tick emitted ``BURST_RECORDS`` or more), waits, up to one more
    ``every``: a checkpoint stops the loop for 0.3-0.5 s at 80,000 machines, and a release of
    a held location changes every partition's state at once, for as long as the release
    lasts (twelve checkpoints inside one 1,000,000-machine release when only being behind
    deferred them)."""
    now = time.monotonic()
    due = [o for o in live if o.pointer is None or now - o.checkpoint_at >= every]
    for o in [o for o in due if o.pointer is not None and not o.changed]:
        if now - o.written_at < every * QUIET_CHECKPOINTS:
            o.checkpoint_at = now  # it would repeat the latest one: skipped, turn kept
            due.remove(o)
    due = [
        o
        for o in due
        if not (
            now - o.checkpoint_at < 2 * every and (o.tick_records >= BURST_RECORDS or behind(o))
        )
    ]
    return min(due, key=lambda o: o.checkpoint_at) if due else None


async def close_producer(o: Owned) -> None:
    producer, o.producer = o.producer, None
    o.in_txn = False
    if producer is not None:
        with contextlib.suppress(Exception):
            await producer.stop()
