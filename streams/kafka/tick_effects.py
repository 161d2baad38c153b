"""What a tick record does besides the engine's decisions: it publishes the partition's scope
counts and early-warning samples on the shared scope board, and on the decider's partition
(partition 0) it takes the mass-silence and early-warning decisions for the whole fleet."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import ConsumerRecord

from arcbeat.streams.decide.early_warning import EarlyBoard
from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.output_records import Emit
from arcbeat.streams.decide.tick import TickResult
from arcbeat.streams.kafka import ticks
from arcbeat.streams.kafka.heap import freeze_young
from arcbeat.streams.kafka.owned import Owned
from arcbeat.streams.kafka.scopes import ScopeBoard

log = logging.getLogger("arcbeat.batch")

DECIDER_PARTITION = 0  # the owner of heartbeats partition 0 decides scope verdicts, once


class TickEffects:
    def __init__(
        self, engine: Engine, board: ScopeBoard, early: EarlyBoard, tick_keys: Sequence[bytes]
    ) -> None:
        self.engine = engine
        self.board = board
        self.early = early  # early warning's share of the scope board
        self.tick_keys = tick_keys

    async def apply(
        self,
        o: Owned,
        r: ConsumerRecord[Any, Any],
        wall: float,
        replay: bool,
        pause: Callable[[], Awaitable[None]],
    ) -> list[Emit]:
        """One tick record of partition ``o``: the engine's outputs and, unless it is
        replayed, the decider's; the scope board writes join the partition's sends.

        The engine takes the tick in steps; ``pause`` runs between them and lets the event
        loop run when the worker's step time is used up (the caller holds the lock)."""
        engine, p = self.engine, o.p
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
        steps = engine.tick_steps(
            p,
            now,
            tick.verdicts,
            wall_now=wall,
            decided_at=tick.decided_at,
            maintenance=tick.maintenance,
        )
        spent = 0.0  # the tick's own time, not that of what ran in its pauses
        while True:
            t0 = time.perf_counter()
            try:
                next(steps)
            except StopIteration as done:
                result: TickResult = done.value
                emits, counts = result
                spent += time.perf_counter() - t0
                break
            freeze_young()  # the machines this step changed: no full collection walks them
            spent += time.perf_counter() - t0
            await pause()
        engine.stats.tick_seconds.observe(spent)
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
            self.board_write(o, f"{EarlyBoard.SAMPLE}{p}", sample.encode())
        # this partition's scope counts, when they changed (shared with every worker)
        for scope, c in counts.items():
            if o.published.get(scope) != c:
                self.board_write(o, *ScopeBoard.counts_record(scope, p, c))
                o.published[scope] = c
        for scope in [s for s in o.published if s not in counts]:
            self.board_write(o, *ScopeBoard.counts_record(scope, p, None))
            del o.published[scope]
        if p == DECIDER_PARTITION:
            emits = emits + self._decide(o, now)
        return emits

    def _decide(self, o: Owned, now: float) -> list[Emit]:
        """The fleet's mass-silence verdicts and early warnings, from the scope board."""
        engine, board = self.engine, self.board
        scope_emits, changed = engine.decide_scopes(now, board.totals(), board.verdicts())
        for scope, v in changed.items():
            self.board_write(o, *ScopeBoard.verdict_record(scope, v))
        # when the latest decision was taken: machines found late and due in one tick wait
        # for a decision newer than their counts (MassSilence.await_verdict)
        self.board_write(o, *ScopeBoard.decided_record(now))
        idx = engine.partitions.get(o.p)
        writes, records = self.early.decide(
            now,
            board.view(),
            idx.planned.all() if idx is not None else (),
            [s for s, v in board.verdicts().items() if v.silent],
        )
        for key, value in writes:
            self.board_write(o, key, value)
        return scope_emits + [Emit("status", k, v) for k, v in records]

    def board_write(self, o: Owned, key: str, value: bytes) -> None:
        self.board.write(o.p, key, value)
        o.sends.append((self.board.topic, key.encode(), value))
