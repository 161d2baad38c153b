"""The stream processor: the batched heartbeat loop, ticks and shared state, hosted by a Faust
app (its task runs the loop, its timer writes the ticks, its shutdown stops them).

Ticks: every ``check_interval`` each worker appends a small control record (header
``arcbeat-tick``) to every heartbeats partition it owns. The broker stamps it with
LogAppendTime. When the loop reaches a tick, everything appended before it has been
processed, so deadlines up to the tick's timestamp can be decided without ever being fooled
by lag (a worker that is stopped or behind produces no decision for data it has not read).
The tick also carries the mass-silence verdicts and the maintenance windows as of its
writing, so decisions are a function of the partition's log alone, and a replay after a crash
decides the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from arcbeat.streams.decide.deadlines import ScopeCounts
from arcbeat.streams.decide.decisions_settings import deciding
from arcbeat.streams.decide.early_warning import EarlyBoard, degraded_scopes
from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.mass_silence import Verdict
from arcbeat.streams.decide.output_records import Emit
from arcbeat.streams.kafka import ticks
from arcbeat.streams.kafka.batch import HeartbeatLoop
from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.kafka.maintenance_board import MaintenanceBoard
from arcbeat.streams.kafka.scopes import ScopeBoard
from arcbeat.streams.kafka.startup import Deadline, Say, StartupError, retry_start
from arcbeat.streams.kafka.tick_effects import DECIDER_PARTITION
from arcbeat.streams.kafka.ticks import TICK_HEADER
from arcbeat.streams.settings import Settings

log = logging.getLogger("arcbeat.worker")

__all__ = ["DECIDER_PARTITION", "TICK_HEADER", "Pipeline"]


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        app: faust.App,
        *,
        worker_id: str = "0",
        deadline: Deadline | None = None,
        say: Say | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        # start-up under a partly down cluster: retried until this deadline (startup_deadline)
        self.deadline = deadline or Deadline(settings.kafka.startup_deadline)
        self.say: Say = say or _say
        self.app = app
        self.engine = Engine(settings)
        self.board = ScopeBoard(settings)
        self.maintenance = MaintenanceBoard(settings)
        self.loop = HeartbeatLoop(
            settings, self.engine, self.board, worker_id=worker_id, url=self.url
        )
        self.tick_producer: AIOKafkaProducer | None = None
        # recorded in every tick, so that a replay of the log knows what decided
        self.deciding = deciding(settings)
        self._task: asyncio.Task[None] | None = None
        self.failed: BaseException | None = None
        self._define()

    @property
    def on_emit(self) -> list[Callable[[Emit], None]]:
        return self.loop.on_emit

    # ---- helpers ------------------------------------------------------------------------

    def url(self) -> str:
        return str(self.app.conf.canonical_url).rstrip("/")

    def partition_of(self, key: str) -> int:
        return self.engine.partition_of(key)

    def verdicts(self) -> dict[str, Verdict]:
        return self.board.verdicts()

    def degraded(self) -> list[str]:
        """Scopes held degraded (early warning), as the shared board says."""
        return degraded_scopes(self.board.get(EarlyBoard.STATE))

    def totals(self) -> dict[str, ScopeCounts]:
        return self.board.totals()

    def lag(self) -> dict[int, int]:
        return self.loop.lag()

    def readiness(self) -> tuple[bool, str]:
        if self.failed is not None:
            return False, f"failed: {self.failed}"
        return self.loop.readiness()

    def alive(self) -> tuple[bool, str]:
        """Liveness: the heartbeat loop runs. Waiting for Kafka (a broker restart) is not
        death: restarting the worker would not help, so that shows in readiness only."""
        if self.failed is not None:
            return False, f"the heartbeat loop stopped: {self.failed}"
        if self._task is not None and self._task.done():
            return False, "the heartbeat loop stopped"
        return True, "ok"

    # ---- Faust definitions --------------------------------------------------------------

    def _define(self) -> None:
        app, settings = self.app, self.settings

        @app.task  # type: ignore[untyped-decorator]
        async def heartbeats() -> None:
            await self._run()

        app.on_before_shutdown.connect(self._shutdown, weak=False)  # type: ignore[arg-type]

        @app.timer(settings.timing.check_interval)  # type: ignore[untyped-decorator]
        async def tick() -> None:
            await self._produce_ticks()

    async def _run(self) -> None:
        retry = self.deadline, self.say
        try:
            await _start("the scope state reader", self.board.start, self.board.stop, *retry)
            await _start(
                "the maintenance reader", self.maintenance.start, self.maintenance.stop, *retry
            )
            await _start("the heartbeats consumer", self.loop.start, self.loop.discard, *retry)
            self._task = asyncio.current_task()
            await self.loop.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self.loop.stopping:  # an error while shutting down: the process ends anyway
                log.warning("the heartbeat loop ended while stopping: %r", exc)
                return
            if isinstance(exc, StartupError):  # said once, clearly; exit 2 like bad settings
                self.failed = exc
                self.say(f"error: {exc}")
                asyncio.get_running_loop().call_later(0.2, os._exit, 2)
                raise
            # a worker that cannot process must not linger: it exits with an error status so
            # that its supervisor starts it again (its state comes back from Kafka)
            self.failed = exc
            log.exception("the heartbeat loop failed; the worker exits")
            asyncio.get_running_loop().call_later(0.2, os._exit, 70)
            raise

    async def _shutdown(self, sender: Any = None, **_: Any) -> None:
        try:
            await self.loop.stop()
        finally:
            await self.board.stop()
            await self.maintenance.stop()
            if self.tick_producer is not None:
                producer, self.tick_producer = self.tick_producer, None
                await producer.stop()

    async def _produce_ticks(self) -> None:
        partitions = self.loop.tick_partitions()
        if not partitions or not self.board.ready.is_set() or not self.maintenance.ready.is_set():
            return  # a tick decides with the shared state: never with half of it
        if self.tick_producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka.bootstrap,
                acks="all",
                linger_ms=0,
                **client_options(self.settings.kafka),
            )
            try:
                await producer.start()
            except KafkaError as exc:  # a broker down: the next tick tries again
                await producer.stop()
                log.warning("the tick producer could not start (%r); retrying next tick", exc)
                return
            self.tick_producer = producer
        topic = self.settings.topics.heartbeats
        value, headers = ticks.encode(
            self.worker_id,
            self.board.verdicts(),
            self.board.decided_at() or 0.0,
            self.maintenance.relevant(time.time()),
            self.loop.tick_keys,
            self.deciding,
        )
        for p in partitions:
            await self.tick_producer.send(topic, value, partition=p, headers=headers)
        await self.loop.refresh_lag()


def _say(line: str) -> None:
    print(f"arcbeat worker: {line}", file=sys.stderr, flush=True)


async def _start(
    step: str,
    start: Callable[[], Any],
    undo: Callable[[], Any],
    deadline: Deadline,
    say: Say,
) -> None:
    await retry_start(step, start, deadline=deadline, say=say, cleanup=undo)
