"""What the machines table stores per machine, and its compact wire form.

The table value is one orjson array (not a dict with field names): at a million machines the
names alone would cost ~250 bytes each in memory and in the changelog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from arcbeat.streams.records import Heartbeat, resource_id
from arcbeat.streams.status import MachineState, Status


@dataclass(frozen=True, slots=True)
class MachineInfo:
    """Descriptive fields from the latest accepted message (display and scopes)."""

    resource_id: str  # original spelling
    subscription_id: str
    resource_group: str
    machine_name: str
    location: str
    os_type: str
    os_name: str | None
    os_version: str | None
    agent_version: str
    tags: dict[str, str]
    skew: float  # arrival - sentAt of the latest heartbeat, seconds

    @classmethod
    def from_heartbeat(cls, hb: Heartbeat, arrived_at: float) -> MachineInfo:
        return cls(
            hb.resource_id,
            hb.subscription_id,
            hb.resource_group,
            hb.machine_name,
            hb.location,
            hb.os_type,
            hb.os_name,
            hb.os_version,
            hb.agent_version,
            dict(hb.tags),
            round(arrived_at - hb.sent_at, 3),
        )


@dataclass(frozen=True, slots=True)
class Machine:
    state: MachineState
    info: MachineInfo
    # availability: heartbeats received in the tumbling window starting at window_start
    # (None: no open window); kept in the same record so counting costs no second write
    window_start: float | None = None
    received: int = 0


_STATUS = {s.value: s for s in Status}


def encode_machine(m: Machine) -> bytes:
    s, i = m.state, m.info
    # the Resource ID is stored only when it is not the usual spelling of its own parts
    # (~110 bytes a machine, a tenth of the state at a million machines)
    rid = i.resource_id
    stored_rid = (
        None if rid == resource_id(i.subscription_id, i.resource_group, i.machine_name) else rid
    )
    # orjson's result keeps a ~4 KiB buffer; a one-time copy to its exact size is what lets a
    # million machines fit (the table holds these bytes for as long as the machine lives)
    return bytes(
        memoryview(
            orjson.dumps(
                [
                    1,  # format version
                    s.status.value,
                    s.last_heartbeat_at,
                    s.last_status_change,
                    s.last_sent_at,
                    s.sequence,
                    s.transitions,
                    s.flap_window,
                    s.flap_count,
                    s.held_since,
                    s.expired_heartbeats,
                    stored_rid,
                    i.subscription_id,
                    i.resource_group,
                    i.machine_name,
                    i.location,
                    i.os_type,
                    i.os_name,
                    i.os_version,
                    i.agent_version,
                    i.tags,
                    i.skew,
                    m.window_start,
                    m.received,
                ]
            )
        )
    )


def decode_machine(raw: bytes) -> Machine:
    v: list[Any] = orjson.loads(raw)
    if v[0] != 1:
        raise ValueError(f"machines table: unknown record format {v[0]!r}")
    return Machine(
        MachineState(
            status=_STATUS[v[1]],
            last_heartbeat_at=v[2],
            last_status_change=v[3],
            last_sent_at=v[4],
            sequence=v[5],
            transitions=v[6],
            flap_window=v[7],
            flap_count=v[8],
            held_since=v[9],
            expired_heartbeats=v[10],
        ),
        MachineInfo(v[11] or resource_id(v[12], v[13], v[14]), *v[12:22]),
        v[22] if len(v) > 22 else None,  # records written before availability moved here
        v[23] if len(v) > 23 else 0,
    )


def scopes_of(info: MachineInfo) -> tuple[str, str]:
    """The mass-silence scopes a machine belongs to."""
    return ("fleet", f"location={info.location}")
