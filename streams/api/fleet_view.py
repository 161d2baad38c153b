"""What the HTTP API reads of the worker it runs in: a narrow view of the fleet this worker
owns, and who owns the rest.

The handlers see nothing else of the worker (not its heartbeat loop, engine or boards), so
they can be tested against a plain fake (tests/streams/test_api_handlers.py) and the loop can
change without touching them. :class:`arcbeat.streams.kafka.live_fleet.LiveFleet` is the
running worker's implementation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Protocol

from arcbeat.streams.decide.machines import Machine
from arcbeat.streams.decide.maintenance import Book, Window
from arcbeat.streams.decide.output_records import CountKey
from arcbeat.streams.decide.status import Timing


class FleetView(Protocol):
    @property
    def worker_id(self) -> str: ...

    @property
    def timing(self) -> Timing:
        """The deadlines the machines are judged by (flapping is read with them)."""
        ...

    @property
    def heartbeat_interval(self) -> float:
        """How often an agent sends: a late machine's lateness is read against it."""
        ...

    def url(self) -> str:
        """This worker's advertised base URL (how the other workers reach it)."""
        ...

    # ---- the machines this worker owns ----------------------------------------------------

    def machine(self, key: str) -> Machine | None:
        """The machine of ``key`` (a lower-cased resource id), if this worker holds it."""
        ...

    def is_late(self, key: str) -> bool:
        """Overdue by more than late_after while still Connected (early warning)."""
        ...

    def owned_keys(self) -> list[str]:
        """The keys of every machine this worker owns, copied: safe to iterate across
        awaits."""
        ...

    def owned_partitions(self) -> Collection[int]: ...

    def partition_of(self, key: str) -> int: ...

    def counts(self) -> Mapping[CountKey, int]:
        """Machines by (status, location, os type, subscription) over the owned partitions."""
        ...

    # ---- the rest of the fleet --------------------------------------------------------------

    def owner_of(self, key: str) -> str | None:
        """The URL of the worker owning ``key``'s partition (None: no owner announced)."""
        ...

    def workers(self) -> set[str]:
        """The URLs of every worker owning a partition, this one included."""
        ...

    def held_by_scope(self) -> Mapping[str, int]:
        """Machines whose Disconnected a ScopeSilent verdict holds, by scope."""
        ...

    def silent_scopes(self) -> Iterable[str]:
        """The scopes whose machines fell silent together (ScopeSilent)."""
        ...

    # ---- this worker's own state (probes) ---------------------------------------------------

    def lag(self) -> int:
        """Records not yet read, over the owned partitions."""
        ...

    def last_event_at(self) -> float: ...

    def alive(self) -> tuple[bool, str]: ...

    def readiness(self) -> tuple[bool, str]: ...

    # ---- maintenance windows (every worker reads all of them) -------------------------------

    @property
    def windows(self) -> Book: ...

    async def put_window(self, window: Window) -> None:
        """Write ``window`` to the shared topic and return once this worker has read it."""
        ...
