"""What the HTTP API and the metrics ask of the partitions a worker owns: a machine, the
machines by status, late and held machines, counts. Read only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from arcbeat.streams.decide.machines import Machine, from_slot
from arcbeat.streams.decide.output_records import CountKey
from arcbeat.streams.decide.partition_index import PartitionIndex
from arcbeat.streams.decide.partitioner import KeyPartitioner
from arcbeat.streams.decide.status import Timing, flap_window


class OwnedPartitions:
    """The partitions this worker owns, by number, and the questions asked of them."""

    def __init__(self, partitions: int, timing: Timing) -> None:
        self.partitions: dict[int, PartitionIndex] = {}
        self._partitioner = KeyPartitioner(partitions)
        self.timing = timing

    def partition_of(self, key: str) -> int:
        return int(self._partitioner(key.encode()))

    def machine(self, key: str) -> Machine | None:
        """A machine of a partition this worker owns (None: unknown here)."""
        idx = self.partitions.get(self.partition_of(key))
        slot = idx.machines.get(key) if idx is not None else None
        return from_slot(slot) if slot is not None else None

    def owned_keys(self) -> Iterable[str]:
        for idx in list(self.partitions.values()):
            yield from list(idx.machines)

    def machine_count(self) -> int:
        return sum(len(idx.machines) for idx in list(self.partitions.values()))

    def disconnected_keys(self) -> Iterable[str]:
        for idx in self.partitions.values():
            yield from idx.disconnected

    def disconnected_count(self) -> int:
        return sum(len(idx.disconnected) for idx in list(self.partitions.values()))

    def flapping_count(self, now: float) -> int:
        """Disconnected machines flapping at ``now`` (:func:`.status.is_flapping`), from the
        flap index: no machine is looked at."""
        window = flap_window(now, self.timing)
        return sum(idx.flaps_by_window.get(window, 0) for idx in list(self.partitions.values()))

    def late_by_location(self) -> Counter[str]:
        """Late machines by location (owned partitions)."""
        out: Counter[str] = Counter()
        for idx in list(self.partitions.values()):
            for scope, n in idx.late_by_scope.items():
                if scope.startswith("location=") and n > 0:
                    out[scope[len("location=") :]] += n
        return out

    def is_late(self, key: str) -> bool:
        idx = self.partitions.get(self.partition_of(key))
        return idx is not None and key in idx.late

    def held_keys(self) -> list[str]:
        """Machines whose Disconnected a ScopeSilent verdict holds."""
        return [k for idx in list(self.partitions.values()) for k in idx.held]

    def held_by_scope(self) -> Counter[str]:
        """Held machines per scope (the fleet, each location), from the held index: no
        machine is looked at."""
        out: Counter[str] = Counter()
        for idx in list(self.partitions.values()):
            for location, keys in list(idx.held_by_location.items()):
                out["fleet"] += len(keys)
                out[f"location={location}"] += len(keys)
        return out

    def counts(self) -> Counter[CountKey]:
        total: Counter[CountKey] = Counter()
        for idx in self.partitions.values():
            total.update(idx.counts)
        return total
