"""Checkpoints: a partition's whole state at one offset of the heartbeats log, in chunks.

A worker's state is a function of the heartbeats log (ticks included), so a checkpoint at
offset O plus the log from O rebuilds it exactly; the log between checkpoints is the
changelog. Chunks are JSON arrays of machines in the compact slot form; the header holds the
partition-wide state. Pure: the batch loop writes and reads the records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.machines import Slot, to_row
from arcbeat.streams.decide.partition_index import PartitionIndex

# 3: the header carries the fingerprint seed; rows no clock skew (derived)
# 4: whether a machine is late, and since when it waits for a verdict, are in its row, not in
#    the header (at a million machines held a header listing them passed the request size)
FORMAT = 4
READS = (3, 4)  # formats a worker restores (a format 3 checkpoint's header lists them)
CHUNK_MACHINES = 4000  # ~1 MB a chunk: well under the producer's 4 MiB request size


@dataclass(frozen=True, slots=True)
class Pointer:
    """Where a partition's latest checkpoint is, stored with its committed offset.

    ``offset``: the heartbeats offset the checkpoint was taken at (the replay starts there);
    ``first``: offset of its first record in the checkpoint topic; ``records``: how many;
    ``id``: its number, part of every record key.
    """

    offset: int
    first: int
    records: int
    id: int

    def encode(self) -> str:
        return orjson.dumps([FORMAT, self.offset, self.first, self.records, self.id]).decode()

    @classmethod
    def decode(cls, text: str | None) -> Pointer | None:
        if not text:
            return None
        try:
            v = orjson.loads(text)
            if not isinstance(v, list) or not v or v[0] not in READS:
                return None  # not ours: replay the whole log
            return cls(int(v[1]), int(v[2]), int(v[3]), int(v[4]))
        except (orjson.JSONDecodeError, IndexError, TypeError, ValueError):
            return None


def record_key(p: int, checkpoint_id: int, n: int) -> bytes:
    return f"{p}:{checkpoint_id}:{n}".encode()


@dataclass(frozen=True, slots=True)
class Restored:
    """A decoded checkpoint: its header, the machines' slots, and per machine the record
    fields the indexes are built from (status, location, os type, subscription, last status
    change, held since), in the slots' order."""

    header: dict[str, Any]
    machines: dict[str, Slot]
    index: list[tuple[str, str, str, str, float, float | None]]


def encode(idx: PartitionIndex, p: int, offset: int) -> list[bytes]:
    """The records of a checkpoint of ``idx`` at heartbeats offset ``offset``: a header, then
    chunks of machines."""
    return list(encoding(idx, p, offset))


def encoding(idx: PartitionIndex, p: int, offset: int) -> Iterator[bytes]:
    """:func:`encode` one record at a time (a chunk is ~10-20 ms of work), so that the writer
    can let its event loop run between chunks. ``idx`` must not change until the last one."""
    yield orjson.dumps(
        {
            "format": FORMAT,
            "partition": p,
            "offset": offset,
            "machines": len(idx.machines),
            "previousTick": idx.previous_tick,
            "snapshotBucket": idx.snapshot_bucket,
            "seed": idx.seed,
            "maintenance": idx.planned_json,
        }
    )
    chunk: list[list[Any]] = []
    late, pending = idx.late, idx.pending
    for k, s in idx.machines.items():
        row = to_row(k, s)
        row.append(k in late)
        row.append(pending.get(k))
        chunk.append(row)
        if len(chunk) == CHUNK_MACHINES:
            yield orjson.dumps(chunk)
            chunk = []
    if chunk:
        yield orjson.dumps(chunk)


def decode(records: Iterable[bytes]) -> Restored:
    """A checkpoint's records (in order), decoded."""
    for got in decoding(records):
        if got is not None:
            return got
    raise ValueError("checkpoint: no records")  # decoding ends with the Restored


def decoding(records: Iterable[bytes]) -> Iterator[Restored | None]:
    """:func:`decode` one record at a time: None after each chunk, the Restored last."""
    it: Iterator[bytes] = iter(records)
    header: dict[str, Any] = orjson.loads(next(it))
    if header.get("format") not in READS:
        raise ValueError(f"checkpoint: unknown format {header.get('format')!r}")
    machines: dict[str, Slot] = {}
    index: list[tuple[str, str, str, str, float, float | None]] = []
    add = index.append
    late: list[str] = list(header.get("late") or ())  # format 3
    pending: dict[str, float] = dict(header.get("pending") or {})  # format 3
    for raw in it:
        for k, rec, hb, sent, seq, wstart, received, fp, *ix in orjson.loads(raw):
            ok = ix[0] == "Connected" and ix[5] is None
            machines[k] = Slot(rec.encode(), ok, fp, hb, sent, seq, wstart, received)
            if len(ix) > 6:  # format 4: late, pending
                if ix[6]:
                    late.append(k)
                if ix[7] is not None:
                    pending[k] = ix[7]
                ix = ix[:6]
            add(tuple(ix))
        yield None
    header["late"], header["pending"] = late, pending
    if len(machines) != header["machines"]:
        raise ValueError(
            f"checkpoint of partition {header['partition']}: {len(machines)} machines read, "
            f"{header['machines']} written"
        )
    yield Restored(header, machines, index)


def restore(engine: Engine, p: int, cp: Restored) -> int:
    """Install a decoded checkpoint as partition ``p``'s state; returns the machine count."""
    for _ in restoring(engine, p, cp):
        pass
    return len(cp.machines)


def restoring(engine: Engine, p: int, cp: Restored) -> Iterator[int]:
    """:func:`restore` in steps (yields the machines done so far); the partition is installed
    after the last one."""
    h = cp.header
    return engine.adopting(
        p,
        cp.machines,
        cp.index,
        late=h.get("late", ()),
        pending=h.get("pending") or {},
        previous_tick=h.get("previousTick"),
        snapshot_bucket=h.get("snapshotBucket", -1),
        seed=h.get("seed"),
        maintenance=h.get("maintenance") or (),
    )
