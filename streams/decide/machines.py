"""What a worker keeps per machine, and its compact form.

The durable record is one orjson array (not a dict with field names): at a million machines
the names alone would cost ~250 bytes each in memory and in the checkpoints.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import orjson

from arcbeat.streams.decide import compact_json
from arcbeat.streams.decide.degradation import new_counters
from arcbeat.streams.decide.records import Heartbeat
from arcbeat.streams.decide.resource_ids import resource_id
from arcbeat.streams.decide.status import MachineState, Status


# NamedTuples, as the state (status.py says why)
class MachineInfo(NamedTuple):
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
    # arrival - sentAt of the latest heartbeat, seconds (rounded where it is shown: rounding
    # to milliseconds costs more than the rest of decoding a machine)
    skew: float

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
            arrived_at - hb.sent_at,
        )


class Machine(NamedTuple):
    state: MachineState
    info: MachineInfo
    # availability: heartbeats received in the tumbling window starting at window_start
    # (None: no open window); kept in the same record so counting costs no second write
    window_start: float | None = None
    received: int = 0


_STATUS = {s.value: s for s in Status}


# the delay counters of a slot not yet given its own (never read)
UNCOUNTED: list[Any] = new_counters()


class Slot:
    """One machine in a worker's memory: its durable record plus the fields every heartbeat
    moves.

    ``rec`` holds what changes rarely (status, counters, descriptive fields) as compact bytes;
    a heartbeat that changes nothing of it only updates the plain attributes below, so the
    common case costs no encode, no decode and no write (see :meth:`Engine.handle_message`).
    """

    __slots__ = ("base", "fp", "hb", "loc", "ok", "rec", "received", "sent", "seq", "wstart")

    def __init__(
        self,
        rec: bytes,
        ok: bool,
        fp: int,
        hb: float,
        sent: float,
        seq: int | None,
        wstart: float | None,
        received: int,
    ) -> None:
        self.rec = rec
        self.ok = ok  # Connected and not held: a plain heartbeat may take the fast path
        self.fp = fp  # digest of the last accepted heartbeat's head, 0: none (Engine)
        self.hb = hb  # last_heartbeat_at (broker time)
        self.sent = sent  # last_sent_at (agent clock)
        self.seq = seq
        self.wstart = wstart  # availability window start (None: no open window)
        self.received = received
        # early warning (arcbeat.streams.decide.early_warning), derived, never stored: the
        # machine's clock-offset baseline (arrival - sentAt), and the delivery-delay counters
        # of its partition and location (shared by those machines; a reference, no copy)
        self.base = math.inf
        self.loc: list[Any] = UNCOUNTED


def encode_record(state: MachineState, info: MachineInfo) -> bytes:
    """The durable part of a machine (everything but the per-heartbeat fields)."""
    s, i = state, info
    # the Resource ID is stored only when it is not the usual spelling of its own parts
    # (~110 bytes a machine, a tenth of the state at a million machines)
    rid = i.resource_id
    stored_rid = (
        None if rid == resource_id(i.subscription_id, i.resource_group, i.machine_name) else rid
    )
    # kept for as long as the record is unchanged: at its exact size (a million machines)
    return compact_json.dumps(
        [
            2,  # format version
            s.status.value,
            s.last_status_change,
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
        ]
    )


def to_slot(m: Machine, fp: int) -> Slot:
    s = m.state
    return Slot(
        encode_record(s, m.info),
        s.status is Status.CONNECTED and s.held_since is None,
        fp,
        s.last_heartbeat_at,
        s.last_sent_at,
        s.sequence,
        m.window_start,
        m.received,
    )


def from_slot(slot: Slot) -> Machine:
    v: list[Any] = orjson.loads(slot.rec)
    if v[0] != 2:
        raise ValueError(f"machine record: unknown format {v[0]!r}")
    hb, sent = slot.hb, slot.sent
    # positional: a release decodes thousands of machines, and keywords double the cost
    return Machine(
        MachineState(_STATUS[v[1]], hb, v[2], sent, slot.seq, v[3], v[4], v[5], v[6], v[7]),
        MachineInfo(
            v[8] or resource_id(v[9], v[10], v[11]),
            v[9],
            v[10],
            v[11],
            v[12],
            v[13],
            v[14],
            v[15],
            v[16],
            v[17],
            hb - sent,  # skew
        ),
        slot.wstart,
        slot.received,
    )


def to_row(key: str, slot: Slot) -> list[Any]:
    """A checkpoint row: the slot, plus the record fields a restore indexes by (status,
    location, os type, subscription, last status change, held since), so that a restore
    neither parses the record nor builds a Machine."""
    v = orjson.loads(slot.rec)
    return [
        key, slot.rec.decode(), slot.hb, slot.sent, slot.seq, slot.wstart, slot.received,
        slot.fp, v[1], v[12], v[13], v[9], v[2], v[6],
    ]  # fmt: skip


def scopes_of(info: MachineInfo) -> tuple[str, str]:
    """The mass-silence scopes a machine belongs to."""
    return scopes_of_location(info.location)


_SCOPES: dict[str, tuple[str, str]] = {}  # per location: built once, not per machine looked at


def scopes_of_location(location: str) -> tuple[str, str]:
    scopes = _SCOPES.get(location)
    if scopes is None:
        if len(_SCOPES) >= 65_536:
            _SCOPES.clear()  # bounded, whatever the locations
        scopes = _SCOPES[location] = ("fleet", f"location={location}")
    return scopes
