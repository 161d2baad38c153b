"""The stream processor: Faust topics, tables, the agent, the tick timer and the HTTP API.

Ticks: every ``check_interval`` each worker appends a small control record (header
``arcbeat-tick``) to every heartbeats partition it actively owns. The broker stamps it with
LogAppendTime. When the agent reaches a tick, everything appended before it has been
processed, so deadlines up to the tick's timestamp can be decided without ever being fooled by
lag (SPEC §3 rule 1); a worker that is stopped or behind produces no decision for data it has
not read. Because decisions are a function of the log, a replay after a crash decides the same.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaProducer
from arcbeat.streams.app import create_app
from arcbeat.streams.deadlines import ScopeCounts, sum_counts
from arcbeat.streams.engine import Emit, Engine, Verdict
from arcbeat.streams.kafka_client import client_options
from arcbeat.streams.partitioner import KeyPartitioner
from arcbeat.streams.settings import Settings
from faust.types import TP

log = logging.getLogger("arcbeat.worker")

TICK_HEADER = "arcbeat-tick"
DECIDER_PARTITION = 0  # the owner of heartbeats partition 0 decides scope verdicts, once


class Pipeline:
    def __init__(self, settings: Settings, *, worker_id: str = "0") -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.app = create_app(settings, worker_id=worker_id)
        app = self.app
        n = settings.partitions
        self.heartbeats = app.topic(settings.heartbeats_topic, partitions=n)
        self.outputs = {
            "status": app.topic(settings.status_topic, partitions=n),
            "dlq": app.topic(settings.dlq_topic, partitions=n),
            "fleet": app.topic(f"{settings.topic_prefix}.fleet", partitions=n),
        }
        self.machines = app.Table("machines", partitions=n, key_type=str, value_type=bytes)
        # Scope counts per partition ("c|<scope>|<p>") and verdicts ("v|<scope>"): every worker
        # reads all of it, so the mass-silence decision is the same with one worker or many.
        # recovery_buffer_size=1: faust applies changelog records of partitions this worker
        # does not write in batches of recovery_buffer_size (default 1000), so another
        # worker's verdicts and counts would reach this one only every 1000 writes; 1 applies
        # each at once (the setting faust's GlobalTable docstring gives for several workers).
        self.scopes = app.GlobalTable(
            "scopes", partitions=n, key_type=str, value_type=bytes, recovery_buffer_size=1
        )
        # the last tick read per partition (partitioned like the heartbeats: a local write)
        self.ticks = app.Table("ticks", partitions=n, key_type=str, value_type=bytes)
        self.engine = Engine(settings, self.machines)
        self._partitioner = KeyPartitioner(n)
        self.processed: dict[int, int] = {}  # partition -> next offset to process
        self.end_offsets: dict[int, int] = {}
        self.published: dict[str, ScopeCounts] = {}
        self.tick_producer: AIOKafkaProducer | None = None
        self.on_emit: list[Callable[[Emit], None]] = []
        self._define()

    # ---- helpers ------------------------------------------------------------------------

    def partition_of(self, key: str) -> int:
        return self._partitioner(key.encode())

    def active_partitions(self) -> set[int]:
        topic = self.settings.heartbeats_topic
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    def verdicts(self) -> dict[str, Verdict]:
        out: dict[str, Verdict] = {}
        for k, raw in self.scopes.items():
            if k.startswith("v|"):
                silent, since, machines = orjson.loads(raw)
                out[k[2:]] = Verdict(bool(silent), float(since), int(machines))
        return out

    def totals(self) -> dict[str, ScopeCounts]:
        parts: dict[str, list[ScopeCounts]] = {}
        for k, raw in self.scopes.items():
            if k.startswith("c|"):
                scope = k[2:].rsplit("|", 1)[0]
                connected, late = orjson.loads(raw)
                parts.setdefault(scope, []).append(ScopeCounts(connected, late))
        return {s: sum_counts(v) for s, v in parts.items()}

    async def _send(self, emits: list[Emit], partition: int) -> None:
        for e in emits:
            await self.outputs[e.topic].send(key=e.key, value=e.value, partition=partition)
            for cb in self.on_emit:
                cb(e)

    # ---- Faust definitions --------------------------------------------------------------

    def _define(self) -> None:
        app, engine, settings = self.app, self.engine, self.settings
        hb_topic_name = settings.heartbeats_topic

        @self.machines.on_recover
        async def rebuild() -> None:
            active = self.active_partitions()
            t0 = time.monotonic()
            n = engine.rebuild(active, self.partition_of)
            self.published.clear()  # another worker may have written these partitions' counts
            log.info(
                "indexed %d machines of %d active partitions in %.2fs",
                n,
                len(active),
                time.monotonic() - t0,
            )

        @app.agent(self.heartbeats, name="heartbeats")
        async def process(stream: faust.StreamT[Any]) -> None:
            async for event in stream.events():
                msg = event.message
                p = msg.partition
                headers = msg.headers or ()
                if isinstance(headers, dict):
                    headers = list(headers.items())
                if any(h[0] == TICK_HEADER for h in headers):
                    await self._tick(p, msg.timestamp)
                else:
                    emits, _ = engine.handle_message(
                        p,
                        msg.offset,
                        msg.key,
                        msg.value,
                        msg.timestamp,
                        topic=hb_topic_name,
                        wall_now=time.time(),
                        headers=headers,
                    )
                    if emits:
                        await self._send(emits, p)
                self.processed[p] = msg.offset + 1

        app.on_before_shutdown.connect(self._stop_tick_producer, weak=False)  # type: ignore[arg-type]

        @app.timer(settings.check_interval)  # type: ignore[untyped-decorator]
        async def tick() -> None:
            await self._produce_ticks()

    async def _tick(self, p: int, now: float) -> None:
        engine = self.engine
        raw_decided = self.scopes.get("d|")
        raw_previous = self.ticks.get(str(p))
        emits, counts = engine.handle_tick(
            p,
            now,
            self.verdicts(),
            wall_now=time.time(),
            decided_at=float(orjson.loads(raw_decided)) if raw_decided else 0.0,
            previous_tick=float(orjson.loads(raw_previous)) if raw_previous else None,
        )
        self.ticks[str(p)] = orjson.dumps(now)  # in the transaction: replays see the same
        # Publish this partition's scope counts when they changed (global table write).
        for scope, c in counts.items():
            k = f"c|{scope}|{p}"
            if self.published.get(k) != c:
                self.scopes[k] = orjson.dumps([c.connected, c.late])
                self.published[k] = c
        for k in [k for k in self.published if k.endswith(f"|{p}")]:
            scope = k[2:].rsplit("|", 1)[0]
            if scope not in counts:
                self.scopes[k] = orjson.dumps([0, 0])
                del self.published[k]
        if p == DECIDER_PARTITION:
            scope_emits, changed = engine.decide_scopes(now, self.totals(), self.verdicts())
            for scope, v in changed.items():
                self.scopes[f"v|{scope}"] = orjson.dumps([v.silent, v.since, v.machines])
            # when the latest decision was taken: machines found late and due in one tick wait
            # for a decision newer than their counts (Engine._await_verdict)
            self.scopes["d|"] = orjson.dumps(now)
            emits.extend(scope_emits)
        if emits:
            await self._send(emits, p)

    async def _stop_tick_producer(self, sender: Any = None, **_: Any) -> None:
        if self.tick_producer is not None:
            producer, self.tick_producer = self.tick_producer, None
            await producer.stop()

    async def _produce_ticks(self) -> None:
        active = self.active_partitions()
        if not active:
            return
        if self.tick_producer is None:
            self.tick_producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                acks=1,
                linger_ms=0,
                max_request_size=4 * 1024 * 1024,
                **client_options(self.settings),
            )
            await self.tick_producer.start()
        topic = self.settings.heartbeats_topic
        value = orjson.dumps({"type": "tick", "worker": self.worker_id})
        for p in sorted(active):
            await self.tick_producer.send(topic, value, partition=p, headers=[(TICK_HEADER, b"1")])
        await self._refresh_lag(active)

    async def _refresh_lag(self, active: set[int]) -> None:
        consumer = self.app.consumer
        try:
            ends = await consumer.highwaters(
                *[TP(self.settings.heartbeats_topic, p) for p in active]
            )
        except Exception:  # lag is reporting only; never let it stop ticking
            ends = {}
        # only partitions owned now: a stale gauge for a moved partition would look like lag
        self.end_offsets = {tp.partition: end for tp, end in ends.items() if tp.partition in active}

    def lag(self) -> dict[int, int]:
        return {p: max(0, end - self.processed.get(p, 0)) for p, end in self.end_offsets.items()}
