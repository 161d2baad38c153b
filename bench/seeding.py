"""Worker state written straight into the tables' changelog topics, before the worker starts.

On this machine the worker processes heartbeats far slower than a million machines would need
in a 20-minute bench, so large fleets are put in state the way a restarted worker finds them:
as changelog records, which the worker replays on start (the memory store replays the whole
changelog). The records are built with the worker's own encoder
(:func:`arcbeat.streams.machines.encode_machine`) and Faust's key format (JSON keys), in the
partition of the machine's heartbeats, so recovery, the deadline index and the metrics see
exactly what processing would have left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import orjson
from arcbeat.bench.fleetload import Encoded
from arcbeat.streams.machines import Machine, MachineInfo, encode_machine
from arcbeat.streams.partitioner import KeyPartitioner
from arcbeat.streams.scenarios import Fleet, FleetSpec
from arcbeat.streams.settings import Settings
from arcbeat.streams.simulate import fleet_locations
from arcbeat.streams.status import MachineState, Status


def machines_changelog(app_id: str) -> str:
    """Faust names a table's changelog ``<app id>-<table name>-changelog``."""
    return f"{app_id}-machines-changelog"


class StateSeeder:
    """Changelog records for fleet machines ``0..n-1`` (the simulator's fleet, seed 0)."""

    def __init__(self, settings: Settings, n: int, *, seed: int = 0) -> None:
        self.settings = settings
        self.fleet = Fleet(FleetSpec(machines=n, seed=seed, locations=fleet_locations(settings)))
        self.partitioner = KeyPartitioner(settings.partitions)

    def key(self, m: int) -> str:
        return str(self.fleet.key(m))

    def partition(self, m: int) -> int:
        return int(self.partitioner(self.fleet.key(m).encode()))

    def machine_value(
        self, m: int, status: Status, last_heartbeat_at: float, *, counted: bool = False
    ) -> bytes:
        """``counted``: the last heartbeat is counted in its availability window."""
        fm = self.fleet.machine(m)
        window = last_heartbeat_at - (last_heartbeat_at % self.settings.window)
        disconnected = status is Status.DISCONNECTED
        state = MachineState(
            status=status,
            last_heartbeat_at=last_heartbeat_at,
            last_status_change=(
                last_heartbeat_at + self.settings.disconnect_after
                if disconnected
                else last_heartbeat_at
            ),
            last_sent_at=last_heartbeat_at,
            sequence=0,
            transitions=2 if disconnected else 1,
            flap_window=window,
            flap_count=1,
        )
        info = MachineInfo(
            fm.resource_id,
            fm.subscription_id,
            fm.resource_group,
            fm.machine_name,
            fm.location,
            fm.os_type,
            fm.os_name,
            fm.os_version,
            fm.agent_version,
            fm.tags,
            0.0,
        )
        if counted:
            return bytes(encode_machine(Machine(state, info, window, 1)))
        return bytes(encode_machine(Machine(state, info)))

    def chunks(
        self,
        machines: range,
        *,
        status_of: Callable[[int], Status],
        last_heartbeat_of: Callable[[int], float],
        window_counts: bool,
        chunk: int = 50_000,
    ) -> Iterator[Encoded]:
        """Machines changelog records, ``chunk`` machines a time; ``window_counts``: each with
        its last heartbeat counted in an open availability window, as processing leaves it."""
        for start in range(machines.start, machines.stop, chunk):
            table = Encoded()
            for m in range(start, min(start + chunk, machines.stop)):
                key = self.fleet.key(m)
                p = int(self.partitioner(key.encode()))
                value = self.machine_value(
                    m, status_of(m), last_heartbeat_of(m), counted=window_counts
                )
                table.add(p, orjson.dumps(key), value)
            yield table
