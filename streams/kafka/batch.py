"""The heartbeat path: one consumer, batches per partition, one transaction per partition.

Records of the heartbeats topic are read in batches (``getmany``) and fed to the
:class:`Engine` in one pass over plain in-memory state. A heartbeat that changes nothing
durable costs no framework event, no table write and no changelog record; what it changed
is recovered from the heartbeats log itself, which the broker already keeps.

Exactly-once: each owned partition has its own transactional producer
(``<app_id>-hb-<p>``), so the next owner of a partition fences the previous one. Every
``commit_interval`` a partition's outputs (status, DLQ, fleet), its shared scope writes,
any checkpoint, and its consumed offset commit in one transaction (:mod:`.transactions`).
The committed offset carries a pointer to the partition's latest checkpoint (offset
metadata), so a new owner restores the checkpoint and replays the log from the checkpoint's
offset up to the committed offset with its outputs suppressed (they were committed already):
decisions are a function of the log, so the replay rebuilds the exact state that produced
them (:mod:`.recovery`). A tick's effects beyond the engine are in :mod:`.tick_effects`,
readiness in :mod:`.readiness`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ConsumerStoppedError, KafkaError, ProducerFenced

from arcbeat.streams.decide.early_warning import EarlyBoard
from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.heartbeat_heads import split_heartbeat
from arcbeat.streams.decide.output_records import Emit
from arcbeat.streams.kafka import checkpoint_store, ticks, transactions
from arcbeat.streams.kafka.checkpoint import Pointer
from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.kafka.heap import GrowthFreeze, freeze
from arcbeat.streams.kafka.heartbeat_clients import heartbeats_consumer, instance_id
from arcbeat.streams.kafka.leave_group import leave_as_static_member
from arcbeat.streams.kafka.owned import Owned, Parked
from arcbeat.streams.kafka.readiness import LogEnds
from arcbeat.streams.kafka.recovery import Recovery
from arcbeat.streams.kafka.scopes import ScopeBoard
from arcbeat.streams.kafka.tick_effects import DECIDER_PARTITION, TickEffects
from arcbeat.streams.kafka.ticks import TICK_HEADER
from arcbeat.streams.settings import Settings

log = logging.getLogger("arcbeat.batch")

MAX_RECORDS = 20_000  # per getmany: bounds the time between commits under a backlog
# the longest the loop works without letting other tasks run (timers, the HTTP API, Kafka's
# own coroutines): a long batch, checkpoint or restore yields after about this much
STEP_SECONDS = 0.05
LAG_PROBE = 0.1  # how often the event loop's lag is measured
LAG_WARN = 0.25  # a lag this long is logged: the API, timers and Kafka's heartbeats waited
# a partition that read only ticks deciding nothing since its latest commit, and has nothing to
# send, commits its offset this often, not each commit_interval: the transaction would carry
# no output, and a crash replays a few quiet ticks (nothing is lost: they decide nothing)
QUIET_COMMIT = 10.0


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: HeartbeatLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self.loop.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self.loop.assigned(assigned)


class HeartbeatLoop:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        board: ScopeBoard,
        *,
        worker_id: str,
        url: Callable[[], str],
    ) -> None:
        self.settings = settings
        self.tick_keys = ticks.read_keys(settings.identity.tick_key_file)
        self.engine = engine
        self.board = board
        self.worker_id = worker_id
        self.url = url
        self.group = settings.kafka.app_id
        self.topic = settings.topics.heartbeats
        self.ckpt_topic = settings.topics.checkpoints
        self.out_topics = {
            "status": settings.topics.status,
            "dlq": settings.topics.dlq,
            "fleet": settings.topics.fleet,
        }
        self.owned: dict[int, Owned] = {}
        self.early = EarlyBoard(settings)  # early warning's share of the scope board
        self.ticks = TickEffects(engine, board, self.early, self.tick_keys)
        self.parked: dict[int, Parked] = {}
        self.ends = LogEnds(settings.worker.ready_max_lag)
        self.on_emit: list[Callable[[Emit], None]] = []
        self.started = False
        self.last_loop_at = time.monotonic()
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.admin: AIOKafkaAdminClient | None = None
        self.recovery = Recovery(self)
        self._lag_probe: asyncio.Task[None] | None = None
        self._last_commit = time.monotonic()
        # when the current step of the loop should yield (shared by the partitions of a batch)
        self._step_end = 0.0
        self._growth = GrowthFreeze()
        self.stopping = False

    # ---- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.admin = AIOKafkaAdminClient(
            bootstrap_servers=s.kafka.bootstrap, **client_options(s.kafka)
        )
        await self.admin.start()
        self.consumer = heartbeats_consumer(s, self.worker_id)
        self.consumer.subscribe([self.topic], listener=_Listener(self))
        await self.consumer.start()
        self.started = True
        self._lag_probe = asyncio.create_task(self._probe_lag(), name="arcbeat-loop-lag")

    async def _probe_lag(self) -> None:
        """How late the event loop runs a timer: the length of the longest synchronous step
        (a tick, a batch, a restore chunk, a scrape), exported for the bench and dashboards."""
        stats = self.engine.stats
        while not self.stopping:
            t0 = time.perf_counter()
            await asyncio.sleep(LAG_PROBE)
            lag = max(0.0, time.perf_counter() - t0 - LAG_PROBE)
            stats.loop_lag.observe(lag)
            if lag > stats.loop_lag_max:
                stats.loop_lag_max = lag
            if lag >= LAG_WARN:
                log.warning("the event loop was blocked for %.2fs", lag)

    async def discard(self) -> None:
        """Close the clients of a start that failed (a retry starts new ones)."""
        consumer, self.consumer = self.consumer, None
        admin, self.admin = self.admin, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    async def stop(self) -> None:
        self.stopping = True
        if self._lag_probe is not None:
            self._lag_probe.cancel()
            await asyncio.gather(self._lag_probe, return_exceptions=True)
        await self.recovery.cancel()
        async with self.lock:
            await self._commit_all(final=True)
            for o in list(self.owned.values()):
                await transactions.close_producer(o)
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            # a planned stop hands the partitions over now, not after the session timeout
            if await leave_as_static_member(
                consumer, self.group, instance_id(self.settings, self.worker_id)
            ):
                log.info("left consumer group %s", self.group)
            await consumer.stop()
        if self.admin is not None:
            admin, self.admin = self.admin, None
            await admin.close()

    async def run(self) -> None:
        consumer = self.consumer
        if consumer is None:
            raise RuntimeError("start the heartbeat loop first")
        interval = self.settings.worker.commit_interval
        while not self.stopping:
            try:
                batch = await consumer.getmany(timeout_ms=100, max_records=MAX_RECORDS)
            except ConsumerStoppedError:
                # stop() stopped the consumer: a planned stop, unless nothing asked for one
                self.last_loop_at = time.monotonic()
                return
            self.last_loop_at = time.monotonic()
            self._step_end = time.perf_counter() + STEP_SECONDS
            async with self.lock:
                await self._settle()
                wall = time.time()
                for tp, records in batch.items():
                    o = self.owned.get(tp.partition)
                    if o is None or o.state == "recovering":
                        continue  # revoked meanwhile, or fetched before the pause took
                    await self._process(o, records, wall)
                    if o.sends and o.committing is None:
                        try:
                            await transactions.flush(o, self.board.topic)
                        except ProducerFenced:
                            log.warning("partition %d: another worker took it over", o.p)
                            await self._lose(o)
                        except KafkaError as exc:
                            await self._rewind(o, f"sending its outputs failed ({exc})")
                if batch:
                    # new machines (a fleet onboarding): frozen as they come, or the full
                    # collections over them grow with the fleet
                    self._growth.seen(self.engine.machine_count())
                if time.monotonic() - self._last_commit >= interval:
                    await self._commit_all()

    # ---- processing ---------------------------------------------------------------------

    async def _process(
        self, o: Owned, records: list[ConsumerRecord[Any, Any]], wall: float
    ) -> None:
        """Feed one partition's records to the engine; yields to the event loop every
        ``STEP_SECONDS`` (the lock stays held: nothing else processes or commits meanwhile)."""
        engine = self.engine
        handle = engine.handle_message
        # the common case first, without the general entry's checks and keywords
        fast = engine.fast_heartbeat if engine.takes_fast_path() else None
        split = split_heartbeat
        p, topic, replay_until = o.p, self.topic, o.replay_until
        sends = o.sends
        emits_tick = True  # look at the clock first: an earlier partition may have used it up
        clock = time.perf_counter
        beats = False
        for n, r in enumerate(records):
            # every 256 records, and after every tick (a tick may release thousands)
            if (emits_tick or n & 255 == 255) and clock() >= self._step_end:
                await asyncio.sleep(0)
                if self.owned.get(p) is not o:
                    return  # lost meanwhile (it cannot be: the lock is held; be safe)
                self._step_end = clock() + STEP_SECONDS
                wall = time.time()
            emits_tick = False
            off = r.offset
            if off < o.position:
                continue  # already processed (a fetch from before a seek)
            headers = r.headers
            replay = off < replay_until
            if headers and any(h[0] == TICK_HEADER for h in headers):
                # the time it is now: earlier partitions' ticks of the batch may have taken long
                emits = await self.ticks.apply(o, r, time.time(), replay, self._pause)
                o.tick_records = len(emits)
                emits_tick = True
            else:
                value = r.value
                parts = split(value)  # once: the fast path and the general one share it
                if (
                    fast is not None
                    and not headers
                    and fast(p, r.key, value, r.timestamp / 1000.0, parts)
                ):
                    o.position = off + 1
                    beats = True
                    continue
                beats = True
                if replay:
                    engine.replaying = True
                emits, _ = handle(
                    p, off, r.key, value, r.timestamp / 1000.0,
                    topic=topic, wall_now=wall, headers=headers, parts=parts,
                )  # fmt: skip
                engine.replaying = False
            o.position = off + 1
            if emits and not replay:
                for e in emits:
                    sends.append((self.out_topics[e.topic], e.key, e.value))
                    for cb in self.on_emit:
                        cb(e)
        if beats:
            o.changed = True
            o.quiet = False
        if o.state == "replaying" and o.position >= replay_until:
            o.state = "live"
            # checkpoint it soon (the oldest first, one a commit): a worker that crashes again
            # before checkpoint_interval then replays from here, not from the same old
            # checkpoint with ever more log after it
            o.checkpoint_at = 0.0
            log.info("partition %d: replayed up to offset %d, live", p, replay_until)

    async def _pause(self) -> None:
        """Between the steps of a long tick: let the event loop run once the step time is
        used up (the lock stays held)."""
        if time.perf_counter() >= self._step_end:
            await asyncio.sleep(0)
            self._step_end = time.perf_counter() + STEP_SECONDS

    # ---- commits ------------------------------------------------------------------------

    async def _commit_all(self, *, final: bool = False) -> None:
        """A round of commits. Each due partition's transaction is sealed (its records sent, a
        checkpoint written when due, its position taken) with the loop paused, then commits in
        the background while the loop goes on (:meth:`_settle` applies the outcome): waiting
        for Kafka's acknowledgements and round trips no longer stops processing.
        ``final``: every commit finishes before it returns (a stop)."""
        self._last_commit = time.monotonic()
        await self._settle(wait=final)
        live = [
            o
            for o in self.owned.values()
            if o.state == "live" and o.producer is not None and o.committing is None
        ]
        now = time.monotonic()
        due = [
            o
            for o in live
            if o.in_txn
            or o.sends
            or (
                o.position > o.committed
                and (final or not o.quiet or now - o.committed_at >= QUIET_COMMIT)
            )
        ]
        ckpt = None if final else self._checkpoint_due(live)
        if ckpt is not None and ckpt not in due:
            due.append(ckpt)
        if not due:
            return
        if final:
            await asyncio.gather(*(self._commit(o, False) for o in due))
            return
        t0 = time.perf_counter()
        await asyncio.gather(*(self._commit(o, o is ckpt, wait=False) for o in due))
        self.engine.stats.commit_seconds.observe(time.perf_counter() - t0)

    def _checkpoint_due(self, live: list[Owned]) -> Owned | None:
        return transactions.checkpoint_due(
            live, self.settings.worker.checkpoint_interval, self.ends.behind
        )

    async def _commit(self, o: Owned, with_checkpoint: bool, *, wait: bool = True) -> None:
        """Seal the partition's transaction and commit it: at once (revoked, stopping), or in
        the background (``wait`` False: :meth:`_settle` applies the outcome)."""
        producer = o.producer
        if producer is None:
            return
        try:
            sealed = await transactions.seal(
                o, self.board.topic, self._write_checkpoint if with_checkpoint else None
            )
            if sealed.written is not None:
                o.changed = False  # the checkpoint holds the state as it is now
            self.board.seal(o.p)
            if not wait:
                o.committing = asyncio.create_task(
                    transactions.finish(producer, o, sealed, self.group),
                    name=f"arcbeat-commit-{o.p}",
                )
                return
            await transactions.finish(producer, o, sealed, self.group)
        except KafkaError as exc:
            await self._commit_failed(o, exc)
            return
        self._committed(o, sealed)

    async def _settle(self, *, wait: bool = False) -> None:
        """Apply the background commits that are done (every one, when ``wait``). The lock is
        held."""
        for o in list(self.owned.values()):
            task = o.committing
            if task is None or not (wait or task.done()):
                continue
            try:
                sealed = await asyncio.shield(task)
            except KafkaError as exc:
                o.committing = None
                await self._commit_failed(o, exc)
                continue
            o.committing = None
            self._committed(o, sealed)

    async def _commit_failed(self, o: Owned, exc: KafkaError) -> None:
        """The partition is lost (fenced: another worker took it over) or recovered from Kafka
        (what it processed since its last commit was aborted)."""
        if isinstance(exc, ProducerFenced):
            log.warning("partition %d: another worker took it over (fenced)", o.p)
            await self._lose(o)
        else:
            await self._rewind(o, f"its commit failed ({exc})")

    def _committed(self, o: Owned, sealed: transactions.Sealed) -> None:
        if o.producer is None or self.owned.get(o.p) is not o:
            return  # lost meanwhile
        transactions.committed(o, sealed)
        self.board.committed_sealed(o.p)
        if sealed.written is not None:
            o.pointer = sealed.written
            o.checkpoint_at = o.written_at = time.monotonic()
            freeze()

    async def _write_checkpoint(self, o: Owned, producer: AIOKafkaProducer) -> Pointer:
        return await checkpoint_store.write(self.engine, o, producer, self.ckpt_topic)

    # ---- assignment ---------------------------------------------------------------------

    async def revoked(self, tps: Sequence[TopicPartition]) -> None:
        await self.recovery.cancel()
        async with self.lock:
            await self._settle(wait=True)
            mine = [self.owned[tp.partition] for tp in tps if tp.partition in self.owned]
            live = [o for o in mine if o.state == "live"]
            await asyncio.gather(*(self._commit(o, False) for o in live))
            for o in mine:
                idx = self.engine.partitions.pop(o.p, None)
                if idx is not None and o.state == "live" and o.committed == o.position:
                    self.parked[o.p] = Parked(idx, o.position)
                await self._lose(o)

    async def assigned(self, tps: Sequence[TopicPartition]) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        mine = [tp for tp in tps if tp.topic == self.topic]
        for tp in mine:
            self.owned[tp.partition] = Owned(tp.partition, tp)
        if mine:
            consumer.pause(*mine)
            self.recovery.later(mine)
        log.info("assigned heartbeats partitions %s", sorted(tp.partition for tp in mine))

    async def _rewind(self, o: Owned, why: str) -> None:
        """Forget what was processed since the last commit (it was aborted) and recover the
        partition from Kafka, as a new owner would."""
        log.warning("partition %d: %s; recovering it from Kafka", o.p, why)
        await self._lose(o)
        consumer = self.consumer
        if consumer is None or self.stopping or o.tp not in consumer.assignment():
            return
        self.owned[o.p] = Owned(o.p, o.tp)
        consumer.pause(o.tp)
        self.recovery.later([o.tp])

    async def _lose(self, o: Owned) -> None:
        task, o.committing = o.committing, None
        if task is not None:  # its producer closes: the commit cannot succeed any more
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if o.p == DECIDER_PARTITION:
            self.early.lost()
        self.owned.pop(o.p, None)
        self.engine.release(o.p)
        self.board.forget(o.p)
        await transactions.close_producer(o)

    # ---- ticks, lag, readiness ------------------------------------------------------------

    def tick_partitions(self) -> list[int]:
        return sorted(self.owned)

    async def refresh_lag(self) -> None:
        await self.ends.refresh(self.consumer, self.owned)

    def lag(self) -> dict[int, int]:
        return self.ends.lag(self.owned)

    def readiness(self) -> tuple[bool, str]:
        if not self.started or not self.board.ready.is_set():
            return False, "starting"
        return self.ends.readiness(
            self.owned, self.last_loop_at, self.settings.timing.check_interval
        )
