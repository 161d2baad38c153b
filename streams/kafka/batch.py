"""The heartbeat path: one consumer, batches per partition, one transaction per partition.

Records of the heartbeats topic are read in batches (``getmany``) and fed to the
:class:`Engine` in one pass over plain in-memory state. A heartbeat that changes nothing
durable costs no framework event, no table write and no changelog record; what it changed
is recovered from the heartbeats log itself, which the broker already keeps.

Exactly-once: each owned partition has its own transactional producer
(``<app_id>-hb-<p>``), so the next owner of a partition fences the previous one. Every
``commit_interval`` a partition's outputs (status, DLQ, fleet), its shared scope writes,
any checkpoint, and its consumed offset commit in one transaction. The committed offset
carries a pointer to the partition's latest checkpoint (offset metadata), so a new owner
restores the checkpoint and replays the log from the checkpoint's offset up to the committed
offset with its outputs suppressed (they were committed already): decisions are a function
of the log, so the replay rebuilds the exact state that produced them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ConsumerStoppedError, KafkaError, ProducerFenced

from arcbeat.streams.decide.deadlines import ScopeCounts
from arcbeat.streams.decide.early_warning import EarlyBoard
from arcbeat.streams.decide.engine import Emit, Engine, PartitionIndex
from arcbeat.streams.kafka import checkpoint, ticks
from arcbeat.streams.kafka.checkpoint import Pointer
from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.kafka.leave_group import leave_as_static_member
from arcbeat.streams.kafka.scopes import ScopeBoard
from arcbeat.streams.kafka.ticks import TICK_HEADER
from arcbeat.streams.settings import Settings

log = logging.getLogger("arcbeat.batch")

DECIDER_PARTITION = 0  # the owner of heartbeats partition 0 decides scope verdicts, once
MAX_RECORDS = 20_000  # per getmany: bounds the time between commits under a backlog
# the longest the loop works without letting other tasks run (timers, the HTTP API, Kafka's
# own coroutines): a long batch, checkpoint or restore yields after about this much
STEP_SECONDS = 0.05
LAG_PROBE = 0.1  # how often the event loop's lag is measured
MIB = 1024 * 1024
# a partition whose state did not move since its latest checkpoint (only ticks that looked at
# no machine: a held, silent fleet) is checkpointed this many checkpoint_intervals apart, not
# one: the checkpoint would repeat the last one, and a restart replays only ticks
QUIET_CHECKPOINTS = 10
# a partition that read only such ticks since its latest commit, and has nothing to send,
# commits its offset this often, not each commit_interval: the transaction would carry no
# output, and a crash replays a few quiet ticks (nothing is lost: they decide nothing)
QUIET_COMMIT = 10.0


def instance_id(settings: Settings, worker_id: str) -> str:
    """Static group membership: a worker started again under the same id takes its
    partitions back at once, without waiting for the session timeout (KIP-345)."""
    w = settings.worker
    if w.instance_id:
        return w.instance_id
    if w.ordinal is not None:  # a host of its own per worker (a StatefulSet pod): no host name
        return f"{settings.kafka.app_id}-worker-{w.ordinal}"
    return f"{settings.kafka.app_id}-{socket.gethostname()}-{worker_id}"


@dataclass
class Owned:
    """A heartbeats partition this worker was assigned."""

    p: int
    tp: TopicPartition
    state: str = "recovering"  # recovering -> replaying -> live
    producer: AIOKafkaProducer | None = None
    in_txn: bool = False
    position: int = 0  # next offset to process
    committed: int = -1  # offset committed with its outputs
    replay_until: int = 0  # outputs of records before this offset were committed already
    pointer: Pointer | None = None
    # monotonic time of the latest checkpoint, or of the latest one skipped because the state
    # had not moved (its turn comes again a checkpoint_interval later: turns stay spread out)
    checkpoint_at: float = 0.0
    written_at: float = 0.0  # monotonic time of the latest checkpoint written
    # the state moved since the latest checkpoint: a heartbeat, or a tick that looked at a
    # machine, emitted a machine's record or brought other maintenance windows
    changed: bool = True
    # only quiet ticks (as for ``changed``) were read since the latest commit
    quiet: bool = False
    committed_at: float = 0.0  # monotonic time of the latest commit
    sends: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)
    published: dict[str, ScopeCounts] = field(default_factory=dict)


@dataclass
class Parked:
    """A revoked partition's state, kept in case the next assignment gives it back."""

    idx: PartitionIndex
    position: int


def _freeze() -> None:
    """Move every object alive now out of the garbage collector's sight (``gc.freeze``).

    A million machines are millions of objects that never form cycles (refcounting frees them);
    a full collection walking them all stops the event loop for seconds. Frozen after each
    recovery and checkpoint, a collection walks only what is newer."""
    gc.freeze()


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
        self.parked: dict[int, Parked] = {}
        self.end_offsets: dict[int, int] = {}
        # the log ends read one tick earlier: a worker that has read that far is within one
        # tick of the log end, which is ready (the tick just written is read a moment later)
        self.previous_ends: dict[int, int] = {}
        self.ends_at = 0.0  # monotonic time end_offsets were read
        self.on_emit: list[Callable[[Emit], None]] = []
        self.started = False
        self.last_loop_at = time.monotonic()
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._lag_probe: asyncio.Task[None] | None = None
        self._last_commit = time.monotonic()
        # when the current step of the loop should yield (shared by the partitions of a batch)
        self._step_end = 0.0
        self.stopping = False

    # ---- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        options = client_options(s.kafka)
        self._admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka.bootstrap, **options)
        await self._admin.start()
        session_ms = round(s.worker.session_timeout * 1000)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka.bootstrap,
            group_id=self.group,
            group_instance_id=instance_id(s, self.worker_id),
            client_id=f"{s.kafka.app_id}-worker-{self.worker_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=min(3000, session_ms // 3),
            max_partition_fetch_bytes=4 * MIB,
            **options,
        )
        self._consumer.subscribe([self.topic], listener=_Listener(self))
        await self._consumer.start()
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

    async def discard(self) -> None:
        """Close the clients of a start that failed (a retry starts new ones)."""
        consumer, self._consumer = self._consumer, None
        admin, self._admin = self._admin, None
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
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        async with self._lock:
            await self._commit_all(final=True)
            for o in list(self.owned.values()):
                await self._close_producer(o)
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            # a planned stop hands the partitions over now, not after the session timeout
            if await leave_as_static_member(
                consumer, self.group, instance_id(self.settings, self.worker_id)
            ):
                log.info("left consumer group %s", self.group)
            await consumer.stop()
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.close()

    async def run(self) -> None:
        consumer = self._consumer
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
            async with self._lock:
                wall = time.time()
                for tp, records in batch.items():
                    o = self.owned.get(tp.partition)
                    if o is None or o.state == "recovering":
                        continue  # revoked meanwhile, or fetched before the pause took
                    await self._process(o, records, wall)
                    if o.sends:
                        try:
                            await self._flush(o)
                        except ProducerFenced:
                            log.warning("partition %d: another worker took it over", o.p)
                            await self._lose(o)
                        except KafkaError as exc:
                            await self._rewind(o, f"sending its outputs failed ({exc})")
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
            if fast is not None and not headers and fast(p, r.key, r.value, r.timestamp / 1000.0):
                o.position = off + 1
                beats = True
                continue
            replay = off < replay_until
            if headers and any(h[0] == TICK_HEADER for h in headers):
                emits = self._tick(o, r, wall, replay)
                emits_tick = True
            else:
                beats = True
                if replay:
                    engine.replaying = True
                emits, _ = handle(
                    p, off, r.key, r.value, r.timestamp / 1000.0,
                    topic=topic, wall_now=wall, headers=headers,
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

    def _tick(self, o: Owned, r: ConsumerRecord[Any, Any], wall: float, replay: bool) -> list[Emit]:
        engine, board, p = self.engine, self.board, o.p
        now = r.timestamp / 1000.0
        tick = ticks.decode(r.value, r.headers, self.tick_keys)
        if tick is None:
            # not a worker's tick (malformed, or unsigned when ticks are signed): skipped the
            # same way in every replay, and never allowed to stop the partition
            engine.stats.rejects["bad_tick"] += 1
            log.warning("partition %d offset %d: a bad tick record skipped", p, r.offset)
            return []
        engine.replaying = replay
        looks = engine.stats.tick_looks
        before = engine.partitions.get(p)
        planned = before.planned_json if before is not None else None
        t0 = time.perf_counter()
        emits, counts = engine.handle_tick(
            p,
            now,
            tick.verdicts,
            wall_now=wall,
            decided_at=tick.decided_at,
            maintenance=tick.maintenance,
        )
        engine.stats.tick_seconds.observe(time.perf_counter() - t0)
        engine.replaying = False
        if (
            engine.stats.tick_looks != looks
            or engine.partitions[p].planned_json is not planned
            or any(e.topic != "fleet" for e in emits)  # the fleet snapshot changes no machine
        ):
            o.changed = True
            o.quiet = False
        samples, engine.early_samples = engine.early_samples, []
        if replay:
            return emits
        for sample in samples:
            self._board_write(o, f"{EarlyBoard.SAMPLE}{p}", sample.encode())
        # this partition's scope counts, when they changed (shared with every worker)
        for scope, c in counts.items():
            if o.published.get(scope) != c:
                self._board_write(o, *ScopeBoard.counts_record(scope, p, c))
                o.published[scope] = c
        for scope in [s for s in o.published if s not in counts]:
            self._board_write(o, *ScopeBoard.counts_record(scope, p, None))
            del o.published[scope]
        if p == DECIDER_PARTITION:
            scope_emits, changed = engine.decide_scopes(now, board.totals(), board.verdicts())
            for scope, v in changed.items():
                self._board_write(o, *ScopeBoard.verdict_record(scope, v))
            # when the latest decision was taken: machines found late and due in one tick wait
            # for a decision newer than their counts (Engine._await_verdict)
            self._board_write(o, *ScopeBoard.decided_record(now))
            emits = emits + scope_emits
            idx = engine.partitions.get(p)
            writes, records = self.early.decide(
                now,
                board.view(),
                idx.planned.all() if idx is not None else (),
                [s for s, v in board.verdicts().items() if v.silent],
            )
            for key, value in writes:
                self._board_write(o, key, value)
            emits = emits + [Emit("status", k, v) for k, v in records]
        return emits

    def _board_write(self, o: Owned, key: str, value: bytes) -> None:
        self.board.write(o.p, key, value)
        o.sends.append((self.board.topic, key.encode(), value))

    async def _flush(self, o: Owned) -> None:
        producer = o.producer
        if producer is None:
            o.sends.clear()
            return
        if not o.in_txn:
            await producer.begin_transaction()
            o.in_txn = True
        board_topic = self.board.topic
        for topic, key, value in o.sends:
            # outputs go to the source partition number; the scope state has one partition
            partition = 0 if topic == board_topic else o.p
            await producer.send(topic, value, key=key, partition=partition)
        o.sends.clear()

    # ---- commits and checkpoints ----------------------------------------------------------

    async def _commit_all(self, *, final: bool = False) -> None:
        self._last_commit = time.monotonic()
        live = [o for o in self.owned.values() if o.state == "live" and o.producer is not None]
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
        if due:
            await asyncio.gather(*(self._commit(o, o is ckpt) for o in due))

    def _checkpoint_due(self, live: list[Owned]) -> Owned | None:
        """At most one partition's checkpoint per commit: the one waiting longest."""
        now = time.monotonic()
        every = self.settings.worker.checkpoint_interval
        due = [o for o in live if o.pointer is None or now - o.checkpoint_at >= every]
        for o in [o for o in due if o.pointer is not None and not o.changed]:
            if now - o.written_at < every * QUIET_CHECKPOINTS:
                o.checkpoint_at = now  # it would repeat the latest one: skipped, turn kept
                due.remove(o)
        return min(due, key=lambda o: o.checkpoint_at) if due else None

    async def _commit(self, o: Owned, with_checkpoint: bool) -> None:
        producer = o.producer
        if producer is None:
            return
        try:
            if o.sends:
                await self._flush(o)
            if not o.in_txn:
                await producer.begin_transaction()
                o.in_txn = True
            pointer = o.pointer
            if with_checkpoint:
                pointer = await self._write_checkpoint(o, producer)
            meta = pointer.encode() if pointer is not None else ""
            await producer.send_offsets_to_transaction({o.tp: (o.position, meta)}, self.group)
            await producer.commit_transaction()
        except ProducerFenced:
            log.warning("partition %d: another worker took it over (fenced)", o.p)
            await self._lose(o)
            return
        except KafkaError as exc:
            await self._rewind(o, f"its commit failed ({exc})")
            return
        o.in_txn = False
        o.committed = o.position
        o.committed_at = time.monotonic()
        o.quiet = True  # until a heartbeat or a tick that moves the state
        self.board.committed_partition(o.p)
        if with_checkpoint and pointer is not None:
            o.pointer = pointer
            o.checkpoint_at = o.written_at = time.monotonic()
            o.changed = False  # the lock held: nothing was processed since it was taken
            _freeze()

    async def _write_checkpoint(self, o: Owned, producer: AIOKafkaProducer) -> Pointer:
        idx = self.engine.partitions.get(o.p)
        if idx is None:
            idx = self.engine.index_for(o.p)
        t0 = time.monotonic()
        old = o.pointer
        cid = (old.id + 1) if old is not None else 1
        futures = []
        # chunk by chunk, letting the event loop run in between (the lock keeps idx still)
        for n, value in enumerate(checkpoint.encoding(idx, o.p, o.position)):
            futures.append(
                await producer.send(
                    self.ckpt_topic, value, key=checkpoint.record_key(o.p, cid, n), partition=o.p
                )
            )
            await asyncio.sleep(0)
        if old is not None:  # the previous checkpoint's records: compaction removes them
            for n in range(old.records):
                await producer.send(
                    self.ckpt_topic, None, key=checkpoint.record_key(o.p, old.id, n), partition=o.p
                )
        first = await futures[0]
        log.info(
            "partition %d: checkpoint %d at offset %d (%d machines, %d records, %.2fs)",
            o.p, cid, o.position, len(idx.machines), len(futures), time.monotonic() - t0,
        )  # fmt: skip
        return Pointer(o.position, first.offset, len(futures), cid)

    # ---- assignment ---------------------------------------------------------------------

    async def revoked(self, tps: Sequence[TopicPartition]) -> None:
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        async with self._lock:
            mine = [self.owned[tp.partition] for tp in tps if tp.partition in self.owned]
            live = [o for o in mine if o.state == "live"]
            await asyncio.gather(*(self._commit(o, False) for o in live))
            for o in mine:
                idx = self.engine.partitions.pop(o.p, None)
                if idx is not None and o.state == "live" and o.committed == o.position:
                    self.parked[o.p] = Parked(idx, o.position)
                await self._lose(o)

    async def assigned(self, tps: Sequence[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        mine = [tp for tp in tps if tp.topic == self.topic]
        for tp in mine:
            self.owned[tp.partition] = Owned(tp.partition, tp)
        if mine:
            consumer.pause(*mine)
            self._recover_later(mine)
        log.info("assigned heartbeats partitions %s", sorted(tp.partition for tp in mine))

    def _recover_later(self, tps: list[TopicPartition]) -> None:
        previous = self._recovery

        async def go() -> None:
            if previous is not None and not previous.done():
                await asyncio.gather(previous, return_exceptions=True)
            delay = 0.5
            while not self.stopping:
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
                        o = self.owned.get(tp.partition)
                        if o is not None:
                            await self._close_producer(o)
                            o.state = "recovering"
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)

        self._recovery = asyncio.create_task(go(), name="arcbeat-recovery")

    async def _rewind(self, o: Owned, why: str) -> None:
        """Forget what was processed since the last commit (it was aborted) and recover the
        partition from Kafka, as a new owner would."""
        log.warning("partition %d: %s; recovering it from Kafka", o.p, why)
        await self._lose(o)
        consumer = self._consumer
        if consumer is None or self.stopping or o.tp not in consumer.assignment():
            return
        self.owned[o.p] = Owned(o.p, o.tp)
        consumer.pause(o.tp)
        self._recover_later([o.tp])

    async def _lose(self, o: Owned) -> None:
        if o.p == DECIDER_PARTITION:
            self.early.lost()
        self.owned.pop(o.p, None)
        self.engine.release(o.p)
        self.board.forget(o.p)
        await self._close_producer(o)

    async def _close_producer(self, o: Owned) -> None:
        producer, o.producer = o.producer, None
        o.in_txn = False
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _start_producer(self, o: Owned) -> None:
        s = self.settings
        producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka.bootstrap,
            transactional_id=f"{s.kafka.app_id}-hb-{o.p}",
            enable_idempotence=True,
            acks="all",
            linger_ms=round(s.worker.producer_linger * 1000),
            # big batches: a backlog of onboardings makes one status record per heartbeat, and
            # a send waits whenever its partition's batch is full (16 KiB by default)
            max_batch_size=1 * MIB,
            max_request_size=8 * MIB,
            client_id=f"{s.kafka.app_id}-worker-{self.worker_id}-p{o.p}",
            **client_options(s.kafka),
        )
        # starting fences the partition's previous owner: its open transaction is aborted
        await producer.start()
        o.producer = producer

    async def _recover(self, tps: list[TopicPartition]) -> None:
        consumer, admin = self._consumer, self._admin
        if consumer is None or admin is None:
            return
        t0 = time.monotonic()
        owned = [self.owned[tp.partition] for tp in tps if tp.partition in self.owned]
        if not owned:
            return
        await asyncio.gather(*(self._start_producer(o) for o in owned))
        committed = await admin.list_consumer_group_offsets(
            self.group, partitions=[o.tp for o in owned]
        )
        await self.board.ready.wait()
        await self.board.sync()  # the previous owners' last committed scope writes
        # Each partition's state after recovery; set only at the end, under the lock: until
        # then the loop neither processes nor commits the partition, and its producer is this
        # task's alone.
        target: dict[int, str] = {}
        reads: list[tuple[Owned, Pointer, int | None]] = []
        for o in owned:
            om = committed.get(o.tp)
            c = om.offset if om is not None and om.offset >= 0 else None
            pointer = Pointer.decode(om.metadata if om is not None else None)
            parked = self.parked.pop(o.p, None)
            o.published = self.board.published_counts(o.p)
            if parked is not None and c is not None and parked.position == c:
                # given back unchanged: keep the state in memory
                self.engine.partitions[o.p] = parked.idx
                o.pointer, o.position, o.committed = pointer, c, c
                o.checkpoint_at = time.monotonic()
                consumer.seek(o.tp, c)
                target[o.p] = "live"
            elif pointer is not None:
                reads.append((o, pointer, c))
            else:
                # no checkpoint yet: rebuild from the start of the log
                self.engine.adopt(o.p, {}, [])
                await consumer.seek_to_beginning(o.tp)
                o.position = await consumer.position(o.tp)
                o.committed = c if c is not None else -1
                o.replay_until = c or 0
                target[o.p] = "replaying" if o.position < o.replay_until else "live"
        if reads:
            target.update(await self._restore(reads))
        for o in owned:
            self.board.write(o.p, *ScopeBoard.owner_record(o.p, self.url()))
        await self._publish_owners(owned)
        async with self._lock:
            mine = [o for o in owned if self.owned.get(o.p) is o]
            for o in mine:
                o.state = target[o.p]
            consumer.resume(*[o.tp for o in mine])
        _freeze()
        log.info(
            "recovered partitions %s in %.2fs (%d machines)",
            sorted(o.p for o in owned),
            time.monotonic() - t0,
            sum(len(i.machines) for i in self.engine.partitions.values()),
        )

    async def _restore(self, reads: list[tuple[Owned, Pointer, int | None]]) -> dict[int, str]:
        """Restore the partitions' checkpoints; returns each partition's state to go on in."""
        consumer = self._consumer
        if consumer is None:
            return {}
        s = self.settings
        reader = AIOKafkaConsumer(
            bootstrap_servers=s.kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=16 * MIB,
            fetch_max_bytes=64 * MIB,
            client_id=f"{s.kafka.app_id}-worker-{self.worker_id}-restore",
            **client_options(s.kafka),
        )
        await reader.start()
        try:
            wanted = {o.p: (o, ptr) for o, ptr, _ in reads}
            got: dict[int, list[bytes]] = {p: [] for p in wanted}
            tps = {p: TopicPartition(self.ckpt_topic, p) for p in wanted}
            reader.assign(list(tps.values()))
            for p, (_, ptr) in wanted.items():
                reader.seek(tps[p], ptr.first)
            open_ = set(wanted)
            while open_:
                batch = await reader.getmany(timeout_ms=1000)
                for tp, records in batch.items():
                    p = tp.partition
                    if p not in open_:
                        continue
                    ptr = wanted[p][1]
                    prefix = f"{p}:{ptr.id}:".encode()
                    for r in records:
                        if r.key is not None and r.key.startswith(prefix) and r.value:
                            got[p].append(r.value)
                    if len(got[p]) >= ptr.records:
                        open_.discard(p)
                        reader.pause(tp)
        finally:
            await reader.stop()
        target: dict[int, str] = {}
        for o, ptr, c in reads:
            await self._install(o.p, got.pop(o.p)[: ptr.records])
            o.pointer = ptr
            o.checkpoint_at = time.monotonic()
            o.position = ptr.offset
            o.committed = c if c is not None else ptr.offset
            o.replay_until = c if c is not None else ptr.offset
            consumer.seek(o.tp, ptr.offset)
            target[o.p] = "replaying" if o.position < o.replay_until else "live"
        return target

    async def _install(self, p: int, records: list[bytes]) -> None:
        """Decode and restore one partition's checkpoint a chunk at a time, letting the event
        loop run between chunks (a million machines take seconds of CPU)."""
        restored: checkpoint.Restored | None = None
        for got in checkpoint.decoding(records):
            restored = got
            await asyncio.sleep(0)
        if restored is None:
            raise ValueError(f"checkpoint of partition {p}: nothing decoded")
        records.clear()  # the decoded slots hold what they need
        for _ in checkpoint.restoring(self.engine, p, restored):
            await asyncio.sleep(0)

    async def _publish_owners(self, owned: list[Owned]) -> None:
        """Tell every worker who owns these partitions (API queries are routed by it)."""
        producer = next((o.producer for o in owned if o.producer is not None), None)
        if producer is None:
            return
        url = self.url()
        # outside any transaction of the partition: a one-record transaction of its own
        async with producer.transaction():
            for o in owned:
                key, value = ScopeBoard.owner_record(o.p, url)
                await producer.send(self.board.topic, value, key=key.encode(), partition=0)
        for o in owned:
            self.board.committed_partition(o.p)

    # ---- ticks, lag, readiness ------------------------------------------------------------

    def tick_partitions(self) -> list[int]:
        return sorted(self.owned)

    async def refresh_lag(self) -> None:
        consumer = self._consumer
        if consumer is None or not self.owned:
            self.end_offsets = {}
            return
        tps = [o.tp for o in self.owned.values()]
        try:
            ends = await consumer.end_offsets(tps)
        except Exception:  # reporting only; never let it stop ticking (readiness sees it)
            return
        self.previous_ends = self.end_offsets
        self.end_offsets = {tp.partition: end for tp, end in ends.items()}
        self.ends_at = time.monotonic()

    def lag(self) -> dict[int, int]:
        return {
            p: max(0, end - o.position)
            for p, end in self.end_offsets.items()
            if (o := self.owned.get(p)) is not None
        }

    def readiness(self) -> tuple[bool, str]:
        if not self.started or not self.board.ready.is_set():
            return False, "starting"
        if not self.owned:
            return False, "no partitions"
        if any(o.state == "recovering" for o in self.owned.values()):
            return False, "recovering"
        if not self.end_offsets:
            return False, "catching up: lag unknown"
        # the log's end is known from a recent tick, and the loop polls: else Kafka is away
        stale = max(10.0, 5 * self.settings.timing.check_interval)
        now = time.monotonic()
        if now - self.ends_at > stale:
            return False, f"waiting for Kafka: log end not read for {now - self.ends_at:.0f}s"
        if now - self.last_loop_at > stale:
            return False, f"waiting for Kafka: no poll for {now - self.last_loop_at:.0f}s"
        lag = sum(self.lag().values())
        replaying = [o for o in self.owned.values() if o.state == "replaying"]
        if replaying or (lag > 0 and not self._within_one_tick()):
            return False, f"catching up: lag {lag}"
        return True, "ready"

    def _within_one_tick(self) -> bool:
        """Every owned partition read up to its log end as of the previous tick: what is left
        is at most the latest tick (and what arrived with it), read a moment later."""
        ends = self.previous_ends
        return (
            all(p in ends and o.position >= ends[p] for p, o in self.owned.items())
            and len(ends) > 0
        )
