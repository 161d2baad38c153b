"""Taking partitions over: each assigned partition's producer (fencing the previous owner),
its committed offset and checkpoint, the state restored (or kept, when given back unchanged)
and the log replayed from the checkpoint, with its outputs suppressed, up to the committed
offset. Retried until it succeeds (the broker may be restarting)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiokafka import TopicPartition

from arcbeat.streams.kafka import checkpoint_store
from arcbeat.streams.kafka.checkpoint import Pointer
from arcbeat.streams.kafka.heap import freeze
from arcbeat.streams.kafka.heartbeat_clients import partition_producer
from arcbeat.streams.kafka.owned import Owned
from arcbeat.streams.kafka.scopes import ScopeBoard
from arcbeat.streams.kafka.transactions import close_producer

if TYPE_CHECKING:
    from arcbeat.streams.kafka.batch import HeartbeatLoop

log = logging.getLogger("arcbeat.batch")


class Recovery:
    """The recovery of a loop's assigned partitions, one task at a time."""

    def __init__(self, loop: HeartbeatLoop) -> None:
        self.loop = loop
        self.task: asyncio.Task[None] | None = None

    async def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def later(self, tps: list[TopicPartition]) -> None:
        """Recover these partitions after any recovery under way, retrying on failure."""
        previous, loop = self.task, self.loop

        async def go() -> None:
            if previous is not None and not previous.done():
                await asyncio.gather(previous, return_exceptions=True)
            delay = 0.5
            while not loop.stopping:
                try:
                    await self._recover(tps)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # e.g. the broker is restarting: try again
                    log.warning(
                        "recovering partitions %s failed (%s: %s); trying again in %.1fs",
                        sorted(tp.partition for tp in tps), type(exc).__name__, exc, delay,
                    )  # fmt: skip
                    for tp in tps:
                        o = loop.owned.get(tp.partition)
                        if o is not None:
                            await close_producer(o)
                            o.state = "recovering"
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)

        self.task = asyncio.create_task(go(), name="arcbeat-recovery")

    async def _recover(self, tps: list[TopicPartition]) -> None:
        loop = self.loop
        consumer, admin, engine = loop.consumer, loop.admin, loop.engine
        if consumer is None or admin is None:
            return
        t0 = time.monotonic()
        owned = [loop.owned[tp.partition] for tp in tps if tp.partition in loop.owned]
        if not owned:
            return
        await asyncio.gather(*(self._start_producer(o) for o in owned))
        committed = await admin.list_consumer_group_offsets(
            loop.group, partitions=[o.tp for o in owned]
        )
        await loop.board.ready.wait()
        await loop.board.sync()  # the previous owners' last committed scope writes
        # Each partition's state after recovery; set only at the end, under the lock: until
        # then the loop neither processes nor commits the partition, and its producer is this
        # task's alone.
        target: dict[int, str] = {}
        reads: list[tuple[Owned, Pointer, int | None]] = []
        for o in owned:
            om = committed.get(o.tp)
            c = om.offset if om is not None and om.offset >= 0 else None
            pointer = Pointer.decode(om.metadata if om is not None else None)
            parked = loop.parked.pop(o.p, None)
            o.published = loop.board.published_counts(o.p)
            if parked is not None and c is not None and parked.position == c:
                # given back unchanged: keep the state in memory
                engine.partitions[o.p] = parked.idx
                o.pointer, o.position, o.committed = pointer, c, c
                o.checkpoint_at = time.monotonic()
                consumer.seek(o.tp, c)
                target[o.p] = "live"
            elif pointer is not None:
                reads.append((o, pointer, c))
            else:
                # no checkpoint yet: rebuild from the start of the log
                engine.reset(o.p)
                await consumer.seek_to_beginning(o.tp)
                o.position = await consumer.position(o.tp)
                o.committed = c if c is not None else -1
                o.replay_until = c or 0
                target[o.p] = "replaying" if o.position < o.replay_until else "live"
        if reads:
            target.update(await self._restore(reads))
        for o in owned:
            loop.board.write(o.p, *ScopeBoard.owner_record(o.p, loop.url()))
        await self._publish_owners(owned)
        async with loop.lock:
            mine = [o for o in owned if loop.owned.get(o.p) is o]
            for o in mine:
                o.state = target[o.p]
            consumer.resume(*[o.tp for o in mine])
        freeze()
        log.info(
            "recovered partitions %s in %.2fs (%d machines)",
            sorted(o.p for o in owned),
            time.monotonic() - t0,
            sum(len(i.machines) for i in engine.partitions.values()),
        )

    async def _start_producer(self, o: Owned) -> None:
        loop = self.loop
        producer = partition_producer(loop.settings, loop.worker_id, o.p)
        await producer.start()  # fences the partition's previous owner
        o.producer = producer

    async def _restore(self, reads: list[tuple[Owned, Pointer, int | None]]) -> dict[int, str]:
        """Restore the partitions' checkpoints; returns each partition's state to go on in."""
        loop = self.loop
        consumer = loop.consumer
        if consumer is None:
            return {}
        got = await checkpoint_store.read(
            loop.settings, loop.worker_id, loop.ckpt_topic, {o.p: ptr for o, ptr, _ in reads}
        )
        target: dict[int, str] = {}
        for o, ptr, c in reads:
            await checkpoint_store.install(loop.engine, o.p, got.pop(o.p))
            o.pointer = ptr
            o.checkpoint_at = time.monotonic()
            o.position = ptr.offset
            o.committed = c if c is not None else ptr.offset
            o.replay_until = c if c is not None else ptr.offset
            consumer.seek(o.tp, ptr.offset)
            target[o.p] = "replaying" if o.position < o.replay_until else "live"
        return target

    async def _publish_owners(self, owned: list[Owned]) -> None:
        """Tell every worker who owns these partitions (API queries are routed by it)."""
        producer = next((o.producer for o in owned if o.producer is not None), None)
        if producer is None:
            return
        board = self.loop.board
        url = self.loop.url()
        # outside any transaction of the partition: a one-record transaction of its own
        async with producer.transaction():
            for o in owned:
                key, value = ScopeBoard.owner_record(o.p, url)
                await producer.send(board.topic, value, key=key.encode(), partition=0)
        for o in owned:
            board.committed_partition(o.p)
