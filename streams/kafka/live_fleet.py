"""The fleet view of a running pipeline: what the HTTP API reads
(:class:`arcbeat.streams.api.fleet_view.FleetView`), answered from the engine's index, the
scope board and the maintenance board."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping

from arcbeat.streams.decide.machines import Machine
from arcbeat.streams.decide.maintenance import Book, Window
from arcbeat.streams.decide.output_records import CountKey
from arcbeat.streams.decide.status import Timing
from arcbeat.streams.kafka.pipeline import Pipeline


class LiveFleet:
    def __init__(self, pipe: Pipeline) -> None:
        self._pipe = pipe
        self._engine = pipe.engine

    @property
    def worker_id(self) -> str:
        return self._pipe.worker_id

    @property
    def timing(self) -> Timing:
        return self._engine.timing

    @property
    def heartbeat_interval(self) -> float:
        return self._pipe.settings.timing.heartbeat_interval

    def url(self) -> str:
        return self._pipe.url()

    def machine(self, key: str) -> Machine | None:
        return self._engine.machine(key)

    def is_late(self, key: str) -> bool:
        return self._engine.is_late(key)

    def owned_keys(self) -> list[str]:
        # the partitions' key sets change while a caller yields to the event loop: copied
        return [k for idx in list(self._engine.partitions.values()) for k in list(idx.machines)]

    def owned_partitions(self) -> Collection[int]:
        return self._engine.partitions.keys()

    def partition_of(self, key: str) -> int:
        return self._engine.partition_of(key)

    def counts(self) -> Counter[CountKey]:
        return self._engine.counts()

    def owner_of(self, key: str) -> str | None:
        return self._pipe.board.owners().get(self.partition_of(key))

    def workers(self) -> set[str]:
        # every partition's owner, as the owners announce themselves on the scope board
        return set(self._pipe.board.owners().values())

    def held_by_scope(self) -> Mapping[str, int]:
        return self._engine.held_by_scope()

    def silent_scopes(self) -> Iterable[str]:
        return (s for s, v in self._pipe.verdicts().items() if v.silent)

    def lag(self) -> int:
        return sum(self._pipe.lag().values())

    def last_event_at(self) -> float:
        return self._engine.stats.last_event_at

    def alive(self) -> tuple[bool, str]:
        return self._pipe.alive()

    def readiness(self) -> tuple[bool, str]:
        return self._pipe.readiness()

    @property
    def windows(self) -> Book:
        return self._pipe.maintenance.book

    async def put_window(self, window: Window) -> None:
        await self._pipe.maintenance.put(window)
