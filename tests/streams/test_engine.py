"""The engine's decisions over plain in-memory state (pure: no Kafka, no I/O).

- the per-heartbeat fast path decides exactly as the general path;
- a checkpoint taken at any offset plus the log after it rebuilds the state and the outputs
  of an uninterrupted run;
- mass silence: scope verdicts, holds, and machines that wait for a verdict after a backlog;
- the shared scope board's layers and the batch loop's readiness, without a broker.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from arcbeat.streams.api.web import machine_json
from arcbeat.streams.decide.deadlines import ScopeCounts
from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.machines import from_slot
from arcbeat.streams.decide.maintenance import Selector, Window
from arcbeat.streams.decide.maintenance_codec import to_json as maintenance_json
from arcbeat.streams.decide.mass_silence import Verdict
from arcbeat.streams.decide.output_records import Emit
from arcbeat.streams.decide.records import heartbeat_payload
from arcbeat.streams.decide.resource_ids import resource_id
from arcbeat.streams.decide.status import Status
from arcbeat.streams.decide.timestamps import parse_rfc3339
from arcbeat.streams.kafka import checkpoint
from arcbeat.streams.kafka.batch import HeartbeatLoop
from arcbeat.streams.kafka.checkpoint import Pointer
from arcbeat.streams.kafka.owned import Owned
from arcbeat.streams.kafka.scopes import ScopeBoard
from arcbeat.streams.settings import Settings
from tests.support.examples import examples

SUB = "00000000-0000-0000-0000-0000000000e1"
LOC = "westeurope"
SCOPE = f"location={LOC}"
T0 = 1_800_000_000.0  # a multiple of the window
MACHINES = 5
PARTITIONS = 3


def _settings(**changes: Any) -> Settings:
    # late after 1.5 s, Disconnected after 4 s, Expired 20 s later; holds last 6 s
    base: dict[str, Any] = {
        "heartbeat_interval": 1.0,
        "disconnect_after": 4.0,
        "expire_after": 20.0,
        "check_interval": 0.5,
        "commit_interval": 0.5,
        "window": 10.0,
        "outage_hold": 6.0,
        "outage_ratio": 0.5,
        "outage_min_machines": 2,
        "flap_threshold": 3,
        "fleet_snapshot_interval": 10.0,
        "regions": "*",
        "partitions": PARTITIONS,
    }
    return Settings.load(env={}, toml_path="/nonexistent.toml", **{**base, **changes})


def _rid(m: int, *, upper: bool = False) -> str:
    return resource_id(SUB, "RG" if upper else "rg", f"VM{m}" if upper else f"vm{m}")


def _key(m: int) -> str:
    return _rid(m).lower()


# ---- a log of the heartbeats topic ------------------------------------------------------


@dataclass(frozen=True)
class Msg:
    p: int
    offset: int
    key: bytes
    value: bytes
    at: float


@dataclass(frozen=True)
class Tick:
    p: int
    offset: int
    at: float
    verdicts: Mapping[str, Verdict]
    decided_at: float | None
    maintenance: tuple[Mapping[str, Any], ...] = ()


Record = Msg | Tick


@dataclass(frozen=True)
class MsgStep:
    machine: int
    gap: float
    kind: str
    mode: str  # next | same (a duplicate) | older | reboot | none (no sequence)
    skew: float  # agent clock minus broker time
    meta: int  # which descriptive fields (0: the usual ones)


@dataclass(frozen=True)
class TickStep:
    p: int
    gap: float
    verdict: str  # none | silent | recovered
    decided: float | None  # how long before the tick the latest decision was taken
    planned: str = "none"  # the maintenance windows it carries: none | all | one


def _planned_window(name: str, selector: Selector) -> dict[str, Any]:
    return maintenance_json(
        Window(
            id=name,
            selector=selector,
            start=T0 + 2.0,
            end=T0 + 40.0,
            recurrence=None,
            reason="test",
            created_by="test",
            created_at=T0,
        )
    )


PLANNED: dict[str, tuple[Mapping[str, Any], ...]] = {
    "none": (),
    "all": (_planned_window("mw-all", Selector(resource_group="rg")),),
    "one": (_planned_window("mw-one", Selector(resource_ids=frozenset({_rid(1).lower()}))),),
}


# silences long enough to be late, due, and Expired
SILENCES = (1.6, 4.5, 25.0)


def _gaps(pace: float) -> st.SearchStrategy[float]:
    """Mostly a busy log (``pace``: the longest gap between two records); now and then, one
    in about fourteen, a silence."""
    return st.tuples(
        st.integers(min_value=0, max_value=13 * len(SILENCES)),
        st.floats(min_value=0.0, max_value=pace, allow_nan=False),
    ).map(lambda t: SILENCES[t[0]] if t[0] < len(SILENCES) else t[1])


def _msg(gaps: st.SearchStrategy[float]) -> st.SearchStrategy[MsgStep]:
    return st.builds(
        MsgStep,
        machine=st.integers(min_value=0, max_value=MACHINES - 1),
        gap=gaps,
        kind=st.sampled_from(["heartbeat"] * 6 + ["connect", "disconnect"]),
        mode=st.sampled_from(["next"] * 6 + ["same", "older", "reboot", "none"]),
        # negative: a delivery delay, some across the delay histogram's first bounds
        skew=st.sampled_from([0.0, 0.0, 0.25, -1.0, 3.0, -0.04, -0.06, -0.3]),
        meta=st.sampled_from([0] * 8 + [1, 2, 3, 4, 5]),
    )


def _tick(gaps: st.SearchStrategy[float]) -> st.SearchStrategy[TickStep]:
    return st.builds(
        TickStep,
        p=st.integers(min_value=0, max_value=PARTITIONS - 1),
        gap=gaps,
        verdict=st.sampled_from(["none"] * 4 + ["silent", "recovered"]),
        decided=st.sampled_from([None, None, 0.0, 0.5, 2.0, 10.0]),
        planned=st.sampled_from(["none"] * 3 + ["all", "one"]),
    )


@st.composite
def steps_of_a_log(draw: st.DrawFn) -> list[MsgStep | TickStep]:
    gaps = _gaps(draw(st.sampled_from([0.05, 0.15, 0.5])))
    step = st.one_of(_msg(gaps), _msg(gaps), _tick(gaps))
    return draw(st.lists(step, min_size=30, max_size=120))


STEPS = steps_of_a_log()


def _payload(step: MsgStep, at: float, sent: float, seq: int | None) -> bytes:
    meta = step.meta
    return heartbeat_payload(
        _rid(step.machine, upper=meta == 3),
        location="northeurope" if meta == 4 else LOC,
        os_type="linux",
        os_name="Ubuntu" if meta == 5 else "",
        os_version="22.04" if meta == 5 else "",
        agent_version="1.1" if meta == 1 else "1.0",
        tags={"env": "prod"} if meta == 2 else None,
        kind=step.kind,
        sent_at=sent,
        sequence=seq,
    )


def build_log(steps: Sequence[MsgStep | TickStep], engine: Engine) -> list[Record]:
    """Records in broker order, broker times never going back (as the broker appends them)."""
    t = T0
    seqs: dict[int, int] = {}
    sents: dict[int, float] = {}
    last: dict[int, bytes] = {}
    offsets: Counter[int] = Counter()
    out: list[Record] = []
    for step in steps:
        t += step.gap
        if isinstance(step, TickStep):
            verdicts = {
                "none": {},
                "silent": {SCOPE: Verdict(True, t - 1.0, 3)},
                "recovered": {SCOPE: Verdict(False, t - 1.0, 0)},
            }[step.verdict]
            decided = None if step.decided is None else t - step.decided
            out.append(Tick(step.p, offsets[step.p], t, verdicts, decided, PLANNED[step.planned]))
            offsets[step.p] += 1
            continue
        m = step.machine
        if step.mode == "same" and m in last:
            value = last[m]
        else:
            seq0, sent0 = seqs.get(m, 0), sents.get(m, t)
            seq: int | None
            if step.mode == "older":  # a late copy of an earlier message
                seq, sent = max(0, seq0 - 1), sent0 - 1.0
            elif step.mode == "reboot":  # the sequence starts again, the clock goes on
                seq, sent = 0, max(sent0, t + step.skew) + 1.0
            elif step.mode == "none":
                seq, sent = None, t + step.skew
            else:
                seq, sent = seq0 + 1, t + step.skew
            value = _payload(step, t, sent, seq)
            if step.mode != "older":
                if seq is not None:
                    seqs[m] = seq
                sents[m] = max(sent0, sent)
            last[m] = value
        p = engine.partition_of(_key(m))
        out.append(Msg(p, offsets[p], _key(m).encode(), value, t))
        offsets[p] += 1
    return out


Out = list[tuple[str, bytes | None, Any]]


def _decoded(emits: list[Emit]) -> Out:
    return [(e.topic, e.key, orjson.loads(e.value)) for e in emits]


def feed(engine: Engine, log: Sequence[Record]) -> list[Out]:
    """What the engine emits for each record (wall clock = the record's broker time)."""
    out: list[Out] = []
    for r in log:
        if isinstance(r, Tick):
            emits, _ = engine.handle_tick(
                r.p,
                r.at,
                r.verdicts,
                wall_now=r.at,
                decided_at=r.decided_at,
                maintenance=r.maintenance,
            )
        else:
            emits, _ = engine.handle_message(
                r.p, r.offset, r.key, r.value, r.at, topic="hb", wall_now=r.at
            )
        out.append(_decoded(emits))
    return out


def by_key(outs: list[Out]) -> list[Out]:
    """Each record's outputs in (topic, key) order: one record emits at most one per topic and
    key, and which machine of one tick comes first is the deadline wheel's set order (it
    depends on how the wheel was filled, so a restored engine may list them otherwise)."""
    return [sorted(out, key=lambda o: (o[0], o[1] or b"")) for out in outs]


def state(engine: Engine) -> dict[int, dict[str, Any]]:
    """Every partition's state and derived indexes (the deadline wheel aside: it is lazy)."""
    return {
        p: {
            # fingerprints differ between engines (each partition has its own random seed):
            # whether a machine has one is what decides
            "machines": {k: (from_slot(s), s.ok, bool(s.fp)) for k, s in idx.machines.items()},
            "late": set(idx.late),
            "late_by_scope": +idx.late_by_scope,
            "pending": dict(idx.pending),
            "previous_tick": idx.previous_tick,
            "snapshot_bucket": idx.snapshot_bucket,
            "counts": +idx.counts,
            "held": set(idx.held),
            "disconnected": set(idx.disconnected),
            "windows": {w: set(keys) for w, keys in idx.windows.items() if keys},
        }
        for p, idx in engine.partitions.items()
    }


# ---- one record at a time -----------------------------------------------------------------


def hb(
    engine: Engine,
    m: int,
    at: float,
    *,
    seq: int | None = None,
    kind: str = "heartbeat",
    agent_version: str = "1.0",
    tags: dict[str, str] | None = None,
) -> list[Emit]:
    key = _key(m)
    value = heartbeat_payload(
        _rid(m),
        location=LOC,
        os_type="linux",
        agent_version=agent_version,
        tags=tags,
        kind=kind,
        sent_at=at,
        sequence=seq,
    )
    emits, accepted = engine.handle_message(
        engine.partition_of(key), 0, key.encode(), value, at, topic="hb", wall_now=at
    )
    assert accepted
    return emits


def tick(
    engine: Engine,
    at: float,
    verdicts: Mapping[str, Verdict] | None = None,
    *,
    decided_at: float | None = None,
    p: int = 0,
) -> list[Emit]:
    emits, _ = engine.handle_tick(p, at, verdicts or {}, wall_now=at, decided_at=decided_at)
    return emits


def changes(emits: list[Emit]) -> list[dict[str, Any]]:
    out = []
    for e in emits:
        record = orjson.loads(e.value)
        if record["type"] == "StatusChanged":
            out.append(record)
    return out


def _machine(engine: Engine, m: int) -> Any:
    got = engine.machine(_key(m))
    assert got is not None
    return got


def _api(engine: Engine, m: int, now: float) -> dict[str, Any]:
    view = SimpleNamespace(
        timing=engine.timing,
        partition_of=engine.partition_of,
        is_late=engine.is_late,
        heartbeat_interval=engine.settings.timing.heartbeat_interval,
    )
    return machine_json(_key(m), _machine(engine, m), cast(Any, view), now)


# ---- fast path == general path ----------------------------------------------------------


@settings(max_examples=examples(120), deadline=None)
@given(STEPS, st.booleans())
def test_fast_path_decides_exactly_as_the_general_path(
    steps: list[MsgStep | TickStep], windows: bool
) -> None:
    fast = Engine(_settings(availability_windows=windows), fast_path=True)
    general = Engine(_settings(availability_windows=windows), fast_path=False)
    log = build_log(steps, fast)
    assert feed(fast, log) == feed(general, log)
    for m in range(MACHINES):
        assert fast.machine(_key(m)) == general.machine(_key(m))
    assert state(fast) == state(general)
    assert fast.stats.outcomes == general.stats.outcomes
    assert fast.stats.transitions == general.stats.transitions
    assert fast.stats.heartbeats == general.stats.heartbeats
    assert delay_counters(fast) == delay_counters(general)


def delay_counters(engine: Engine) -> dict[int, Any]:
    """Early warning's bookkeeping: each machine's clock-offset baseline, and the delay
    counters of each (location, subscription) pair, per partition."""
    early = engine.early
    return {
        p: (
            {k: slot.base for k, slot in idx.machines.items()},
            {early.pairs[i]: c for i, c in early.counters.get(id(idx), {}).items()},
        )
        for p, idx in engine.partitions.items()
    }


def test_a_plain_heartbeat_takes_the_fast_path() -> None:
    """The slot is updated in place (no new record); with fast_path=False it is replaced."""
    for fast_path in (True, False):
        engine = Engine(_settings(partitions=1), fast_path=fast_path)
        hb(engine, 0, T0, seq=1)
        slot = engine.partitions[0].machines[_key(0)]
        rec = slot.rec
        hb(engine, 0, T0 + 1, seq=2)
        same = engine.partitions[0].machines[_key(0)]
        assert (same is slot and same.rec is rec) is fast_path
        assert (same.hb, same.seq, same.received) == (T0 + 1, 2, 2)
        # changed descriptive fields never take it
        hb(engine, 0, T0 + 2, seq=3, agent_version="2.0")
        m = engine.machine(_key(0))
        assert m is not None and m.info.agent_version == "2.0"


# ---- checkpoints ------------------------------------------------------------------------


def _take_checkpoint(first: Engine, into: Engine, offsets: Mapping[int, int]) -> None:
    for p, idx in first.partitions.items():
        cp = checkpoint.decode(checkpoint.encode(idx, p, offsets.get(p, 0)))
        assert cp.header["offset"] == offsets.get(p, 0)
        checkpoint.restore(into, p, cp)


@settings(max_examples=examples(120), deadline=None)
@given(STEPS, st.integers(min_value=0, max_value=120))
def test_checkpoint_plus_the_rest_of_the_log_equals_an_uninterrupted_run(
    steps: list[MsgStep | TickStep], cut: int
) -> None:
    whole = Engine(_settings())
    log = build_log(steps, whole)
    cut = min(cut, len(log))
    emitted = feed(whole, log)
    first = Engine(_settings())
    assert feed(first, log[:cut]) == emitted[:cut]
    offsets = {r.p: r.offset + 1 for r in log[:cut]}
    restored = Engine(_settings())
    _take_checkpoint(first, restored, offsets)
    assert by_key(feed(restored, log[cut:])) == by_key(emitted[cut:])
    for m in range(MACHINES):
        assert restored.machine(_key(m)) == whole.machine(_key(m))
    assert state(restored) == state(whole)


def test_a_restored_partition_keeps_its_fingerprints() -> None:
    """The checkpoint carries the partition's seed: after a restore the next plain heartbeat
    of every machine still takes the fast path (the slot is updated in place)."""
    first = Engine(_settings(partitions=1))
    for m in range(5):
        hb(first, m, T0, seq=1)
        hb(first, m, T0 + 1, seq=2)
    restored = Engine(_settings(partitions=1))
    cp = checkpoint.decode(checkpoint.encode(first.partitions[0], 0, 10))
    checkpoint.restore(restored, 0, cp)
    assert restored.partitions[0].seed == first.partitions[0].seed
    slots = dict(restored.partitions[0].machines)
    for m in range(5):
        hb(restored, m, T0 + 2, seq=3)
        assert restored.partitions[0].machines[_key(m)] is slots[_key(m)]


def _window_counts(emits: list[Emit]) -> list[str]:
    records = [orjson.loads(e.value) for e in emits]
    return [r["resourceId"] for r in records if r["type"] == "WindowCounts"]


def test_a_checkpoint_while_a_window_boundary_is_being_closed_loses_no_window() -> None:
    """25 silent machines, at most 10 windows closed a tick: a checkpoint after the first
    tick; the restored engine closes the other 15, each once."""
    first = Engine(_settings(partitions=1, disconnect_after=1000.0))
    for m in range(25):
        hb(first, m, T0 + m * 0.1, seq=1)
    closed = _window_counts(tick(first, T0 + 10))
    assert len(closed) == 10
    cp = checkpoint.decode(checkpoint.encode(first.partitions[0], 0, 26))
    restored = Engine(_settings(partitions=1, disconnect_after=1000.0))
    checkpoint.restore(restored, 0, cp)
    later = [_window_counts(tick(restored, T0 + 10 + i)) for i in (1, 2, 3)]
    assert [len(c) for c in later] == [10, 5, 0]
    assert sorted(closed + [rid for c in later for rid in c]) == sorted(_rid(m) for m in range(25))
    assert not restored.partitions[0].windows


def _mixed_partition(engine: Engine, *, hold: bool) -> None:
    """One partition with Expired, Disconnected, Connected (window open) and late machines
    that wait for a verdict (pending), or are held by one (``hold``)."""
    hb(engine, 6, T0 - 60, seq=1)
    for at in (T0 - 59, T0 - 58, T0 - 56, T0 - 36):  # late, Disconnected, Expired
        tick(engine, at)
    hb(engine, 7, T0 - 10, seq=1)
    for at in (T0 - 9.5, T0 - 8, T0 - 6):  # late, Disconnected
        tick(engine, at)
    for m in range(4):
        hb(engine, m, T0, seq=1)
    tick(engine, T0 + 0.5)
    # a stall: 0..3 late and due in one tick, a mass silence in the partition: they wait
    tick(engine, T0 + 5, decided_at=T0)
    hb(engine, 4, T0 + 5.2, seq=1, tags={"env": "prod", "team": "a"})
    hb(engine, 5, T0 + 5.3, seq=1)
    if hold:
        tick(engine, T0 + 5.4, {SCOPE: Verdict(True, T0 + 5.4, 4)}, decided_at=T0 + 5.4)


@pytest.mark.parametrize("hold", [False, True])
def test_checkpoint_round_trip_keeps_every_machine_and_the_partition_state(
    monkeypatch: pytest.MonkeyPatch, hold: bool
) -> None:
    engine = Engine(_settings(partitions=1))
    _mixed_partition(engine, hold=hold)
    idx = engine.partitions[0]
    statuses = Counter(from_slot(s).state.status for s in idx.machines.values())
    assert statuses == {Status.EXPIRED: 1, Status.DISCONNECTED: 1, Status.CONNECTED: 6}
    assert idx.late == {_key(m) for m in range(4)}
    assert idx.pending == {_key(m): T0 + 5 for m in range(4)}
    assert set(idx.held) == ({_key(m) for m in range(4)} if hold else set())
    assert idx.windows
    monkeypatch.setattr(checkpoint, "CHUNK_MACHINES", 3)  # several chunks
    records = checkpoint.encode(idx, 0, 42)
    assert len(records) == 1 + 3  # a header, then 3 + 3 + 2 machines
    cp = checkpoint.decode(records)
    assert (cp.header["offset"], cp.header["partition"], cp.header["machines"]) == (42, 0, 8)
    assert sorted(cp.header["late"]) == sorted(idx.late)
    assert cp.header["pending"] == idx.pending
    assert cp.header["previousTick"] == idx.previous_tick == (T0 + 5.4 if hold else T0 + 5)
    assert cp.header["snapshotBucket"] == idx.snapshot_bucket
    assert {k: from_slot(s) for k, s in cp.machines.items()} == {
        k: from_slot(s) for k, s in idx.machines.items()
    }
    restored = Engine(_settings(partitions=1))
    assert checkpoint.restore(restored, 0, cp) == 8
    assert state(restored) == state(engine)
    for m in range(8):
        assert restored.machine(_key(m)) == engine.machine(_key(m))


def test_a_checkpoint_header_does_not_grow_with_late_machines() -> None:
    """Late and waiting machines are marked in their rows: at a million machines held, a
    header listing them would pass the producer's request size and the commit would fail."""
    engine = Engine(_settings(partitions=1))
    _mixed_partition(engine, hold=True)
    idx = engine.partitions[0]
    header = checkpoint.encode(idx, 0, 42)[0]
    assert b"late" not in header and b"pending" not in header
    assert not any(k.encode() in header for k in idx.machines)


def test_a_format_3_checkpoint_still_restores() -> None:
    """A worker of this version takes over from one that wrote format 3 (late and pending in
    the header) without replaying the whole log."""
    engine = Engine(_settings(partitions=1))
    _mixed_partition(engine, hold=True)
    idx = engine.partitions[0]
    header, *chunks = checkpoint.encode(idx, 0, 42)
    old = {**orjson.loads(header), "format": 3, "late": sorted(idx.late), "pending": idx.pending}
    rows = [[row[:-2] for row in orjson.loads(c)] for c in chunks]
    cp = checkpoint.decode([orjson.dumps(old), *(orjson.dumps(r) for r in rows)])
    restored = Engine(_settings(partitions=1))
    checkpoint.restore(restored, 0, cp)
    assert state(restored) == state(engine)
    assert Pointer.decode(orjson.dumps([3, 42, 0, 2, 1]).decode()) == Pointer(42, 0, 2, 1)


def test_checkpoint_decode_refuses_a_short_or_foreign_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = Engine(_settings(partitions=1))
    for m in range(5):
        hb(engine, m, T0, seq=1)
    monkeypatch.setattr(checkpoint, "CHUNK_MACHINES", 2)
    records = checkpoint.encode(engine.partitions[0], 0, 5)
    with pytest.raises(ValueError, match="4 machines read, 5 written"):
        checkpoint.decode(records[:-1])
    foreign = orjson.dumps({**orjson.loads(records[0]), "format": 99})
    with pytest.raises(ValueError, match="unknown format"):
        checkpoint.decode([foreign, *records[1:]])
    cp = checkpoint.decode(checkpoint.encode(Engine(_settings()).index_for(2), 2, 0))
    assert cp.machines == {} and cp.header["previousTick"] is None and cp.header["late"] == []


@given(
    st.integers(min_value=0, max_value=2**62),
    st.integers(min_value=0, max_value=2**62),
    st.integers(min_value=1, max_value=10_000),
    st.integers(min_value=1, max_value=2**31),
)
def test_pointer_round_trips(offset: int, first: int, records: int, cid: int) -> None:
    ptr = Pointer(offset, first, records, cid)
    assert Pointer.decode(ptr.encode()) == ptr


@pytest.mark.parametrize(
    "metadata",
    [None, "", "garbage", "1", "null", '"abc"', "[]", "[1, 2]", "[1, 1, 2, 3, 4]",
     "[9, 1, 2, 3, 4]", '[2, "x", 2, 3, 4]', "[2, null, 2, 3, 4]", "{}", '{"a": 1}'],
)  # fmt: skip
def test_pointer_of_foreign_metadata_is_none(metadata: str | None) -> None:
    assert Pointer.decode(metadata) is None


# ---- decide_scopes ------------------------------------------------------------------------


def test_decide_scopes_silent_needs_the_ratio_and_the_minimum() -> None:
    engine = Engine(_settings(outage_ratio=0.5, outage_min_machines=3))
    now = T0 + 7
    out, changed = engine.decide_scopes(
        now,
        {
            SCOPE: ScopeCounts(6, 3),  # 50 % and 3 machines: silent
            "fleet": ScopeCounts(10, 4),  # 40 %: not silent
            "location=northeurope": ScopeCounts(4, 2),  # 50 % but 2 < 3 machines
            "location=eastus": ScopeCounts(0, 3),  # late machines no longer counted Connected
        },
        {},
    )
    assert changed == {
        SCOPE: Verdict(True, now, 3),
        "location=eastus": Verdict(True, now, 3),
    }
    records = [orjson.loads(e.value) for e in out]
    assert [(e.topic, e.key) for e in out] == [
        ("status", b"scope:location=eastus"),
        ("status", f"scope:{SCOPE}".encode()),
    ]
    assert records[1] == {
        "type": "ScopeSilent",
        "scope": SCOPE,
        "machines": 3,
        "connected": 6,
        "at": records[1]["at"],
    }
    assert parse_rfc3339(records[1]["at"]) == now


def test_decide_scopes_recovers_and_says_nothing_when_unchanged() -> None:
    engine = Engine(_settings(outage_ratio=0.5, outage_min_machines=3))
    silent = {SCOPE: Verdict(True, T0, 5), "location=eastus": Verdict(True, T0, 4)}
    # still silent: no event, no change
    out, changed = engine.decide_scopes(
        T0 + 1, {SCOPE: ScopeCounts(8, 5), "location=eastus": ScopeCounts(4, 4)}, silent
    )
    assert (out, changed) == ([], {})
    # SCOPE recovered; eastus no longer counted anywhere: recovered too
    out, changed = engine.decide_scopes(T0 + 2, {SCOPE: ScopeCounts(8, 1)}, silent)
    assert changed == {
        SCOPE: Verdict(False, T0 + 2, 1),
        "location=eastus": Verdict(False, T0 + 2, 0),
    }
    records = {r["scope"]: r for r in (orjson.loads(e.value) for e in out)}
    assert {s: r["type"] for s, r in records.items()} == {
        SCOPE: "ScopeRecovered",
        "location=eastus": "ScopeRecovered",
    }
    assert (records[SCOPE]["machines"], records[SCOPE]["connected"]) == (1, 8)
    # not silent before, not silent now: nothing
    recovered = {SCOPE: Verdict(False, T0 + 2, 1)}
    assert engine.decide_scopes(T0 + 3, {SCOPE: ScopeCounts(8, 2)}, recovered) == ([], {})


def test_decide_scopes_at_exactly_the_ratio_is_silent() -> None:
    engine = Engine(_settings(outage_ratio=0.55, outage_min_machines=3))
    _, changed = engine.decide_scopes(T0, {"fleet": ScopeCounts(100, 55)}, {})
    assert changed == {"fleet": Verdict(True, T0, 55)}
    _, changed = engine.decide_scopes(T0, {"fleet": ScopeCounts(100, 54)}, {})
    assert changed == {}


# ---- holds ---------------------------------------------------------------------------------


def _held_at_4s(engine: Engine) -> None:
    """Machine 0 silent from T0: late at T0+2, due at T0+4 while its location is silent."""
    hb(engine, 0, T0, seq=1)
    tick(engine, T0 + 0.5)
    tick(engine, T0 + 2)
    assert engine.partitions[0].late == {_key(0)}
    assert changes(tick(engine, T0 + 4, {SCOPE: Verdict(True, T0 + 3, 1)})) == []
    m = _machine(engine, 0)
    assert m.state.status is Status.CONNECTED and m.state.held_since == T0 + 4
    assert engine.stats.outcomes["held"] == 1
    assert _api(engine, 0, T0 + 4)["heldByScopeSilence"] is True
    assert _key(0) in engine.partitions[0].held


def test_a_silent_scope_holds_a_due_machine_until_the_hold_ends() -> None:
    engine = Engine(_settings(partitions=1))
    _held_at_4s(engine)
    silent = {SCOPE: Verdict(True, T0 + 3, 1)}
    assert changes(tick(engine, T0 + 7, silent)) == []
    assert changes(tick(engine, T0 + 9.5, silent)) == []
    assert _machine(engine, 0).state.held_since == T0 + 4
    [c] = changes(tick(engine, T0 + 10, silent))  # held_since + outage_hold
    assert (c["previousStatus"], c["status"], c["reason"]) == (
        "Connected",
        "Disconnected",
        "heartbeat_timeout",
    )
    assert c["massOutage"] is True
    assert parse_rfc3339(c["decidedAt"]) == T0 + 10
    assert c["detectionDelaySeconds"] == 6.0  # from its own deadline (T0+4)
    m = _machine(engine, 0)
    assert m.state.status is Status.DISCONNECTED and m.state.held_since is None
    assert _api(engine, 0, T0 + 10)["heldByScopeSilence"] is False
    assert not engine.partitions[0].held


def test_a_held_machine_is_released_shortly_after_its_scope_recovers() -> None:
    engine = Engine(_settings(partitions=1))
    _held_at_4s(engine)
    recovered = {SCOPE: Verdict(False, T0 + 6, 0)}
    # agents come back over a heartbeat interval: late_after (1.5 s) of grace
    assert changes(tick(engine, T0 + 6, recovered)) == []
    assert changes(tick(engine, T0 + 7, recovered)) == []
    assert _machine(engine, 0).state.held_since == T0 + 4
    [c] = changes(tick(engine, T0 + 7.5, recovered))  # before the hold's end (T0+10)
    assert (c["status"], c["massOutage"]) == ("Disconnected", True)
    assert parse_rfc3339(c["decidedAt"]) == T0 + 7.5


def test_a_held_machine_that_reports_again_never_flips() -> None:
    engine = Engine(_settings(partitions=1))
    _held_at_4s(engine)
    assert changes(hb(engine, 0, T0 + 6, seq=2)) == []
    m = _machine(engine, 0)
    assert m.state.status is Status.CONNECTED and m.state.held_since is None
    assert not engine.partitions[0].held and not engine.partitions[0].late
    assert changes(tick(engine, T0 + 9, {SCOPE: Verdict(False, T0 + 8, 0)})) == []  # due T0+10


def test_without_a_verdict_a_due_machine_is_declared() -> None:
    engine = Engine(_settings(partitions=1))
    hb(engine, 0, T0, seq=1)
    tick(engine, T0 + 0.5)
    tick(engine, T0 + 2)
    [c] = changes(tick(engine, T0 + 4, decided_at=T0 + 3.9))
    assert (c["status"], c["massOutage"]) == ("Disconnected", False)
    assert engine.stats.outcomes["held"] == 0


# ---- late and due in one tick: waiting for a verdict -------------------------------------------


def _stalled(engine: Engine, machines: int = 2) -> None:
    """`machines` silent from T0; no tick between T0+0.5 and T0+5 (a stall, a backlog)."""
    for m in range(machines):
        hb(engine, m, T0, seq=1)
    tick(engine, T0 + 0.5)


def test_late_and_due_in_one_tick_waits_for_a_newer_decision() -> None:
    engine = Engine(_settings(partitions=1))
    _stalled(engine)
    keys = {_key(0), _key(1)}
    assert changes(tick(engine, T0 + 5, decided_at=T0)) == []
    idx = engine.partitions[0]
    assert idx.late == keys and idx.pending == dict.fromkeys(keys, T0 + 5)
    assert all(_machine(engine, m).state.status is Status.CONNECTED for m in (0, 1))
    # a decision taken before the counts could be seen (commit + one tick) does not count
    assert changes(tick(engine, T0 + 5.5, decided_at=T0 + 5.9)) == []
    assert idx.pending == dict.fromkeys(keys, T0 + 5)
    # the decider saw the counts and says: not silent. Declared, not a mass outage.
    out = changes(tick(engine, T0 + 6.5, decided_at=T0 + 6.0))
    assert sorted((c["resourceId"], c["status"], c["massOutage"]) for c in out) == [
        (_rid(0), "Disconnected", False),
        (_rid(1), "Disconnected", False),
    ]
    assert not idx.pending


def test_late_and_due_in_one_tick_is_held_when_the_verdict_says_silent() -> None:
    engine = Engine(_settings(partitions=1))
    _stalled(engine)
    assert changes(tick(engine, T0 + 5, decided_at=T0)) == []
    silent = {SCOPE: Verdict(True, T0 + 5.5, 2)}
    assert changes(tick(engine, T0 + 6, silent, decided_at=T0 + 6)) == []
    for m in (0, 1):
        assert _machine(engine, m).state.held_since == T0 + 6
    out = changes(tick(engine, T0 + 12, silent, decided_at=T0 + 12))
    assert [(c["status"], c["massOutage"]) for c in out] == [("Disconnected", True)] * 2


def test_a_machine_waits_at_most_the_outage_hold_for_a_decision() -> None:
    engine = Engine(_settings(partitions=1))
    _stalled(engine)
    assert changes(tick(engine, T0 + 5, decided_at=T0)) == []
    assert changes(tick(engine, T0 + 10.5, decided_at=T0)) == []  # the decider is stuck
    out = changes(tick(engine, T0 + 11, decided_at=T0))  # since + outage_hold
    assert [c["status"] for c in out] == ["Disconnected"] * 2
    assert not engine.partitions[0].pending


def test_a_lone_late_and_due_machine_is_declared_at_once() -> None:
    """One of three silent: no mass silence in the partition, nothing to wait for."""
    engine = Engine(_settings(partitions=1))
    _stalled(engine, machines=3)
    hb(engine, 1, T0 + 4.5, seq=2)
    hb(engine, 2, T0 + 4.5, seq=2)
    [c] = changes(tick(engine, T0 + 5, decided_at=T0))
    assert (c["resourceId"], c["status"]) == (_rid(0), "Disconnected")
    assert not engine.partitions[0].pending


def test_without_a_decider_nothing_waits() -> None:
    engine = Engine(_settings(partitions=1))
    _stalled(engine)
    out = changes(tick(engine, T0 + 5, decided_at=None))
    assert [c["status"] for c in out] == ["Disconnected"] * 2
    assert not engine.partitions[0].pending


def test_a_machine_seen_late_by_an_earlier_tick_does_not_wait() -> None:
    engine = Engine(_settings(partitions=1))
    _stalled(engine)
    tick(engine, T0 + 2, decided_at=T0 + 1)  # both late, counted and published in time
    out = changes(tick(engine, T0 + 4, decided_at=T0 + 3))
    assert [c["status"] for c in out] == ["Disconnected"] * 2


# ---- the scope board ------------------------------------------------------------------------


def _counts(connected: int, late: int) -> bytes:
    return orjson.dumps([connected, late])


def test_scope_board_layers() -> None:
    board = ScopeBoard(_settings())
    board.committed = {
        "c|fleet|1": _counts(9, 9),
        "c|fleet|2": _counts(4, 0),
        "o|1": b"http://old",
    }
    # an open write overrides what the topic holds
    board.write(1, "c|fleet|1", _counts(5, 1))
    assert board.get("c|fleet|1") == _counts(5, 1)
    # aborted: as if it never happened
    board.aborted(1)
    assert board.get("c|fleet|1") == _counts(9, 9) and board.pending == {}
    # committed: kept as own until read back, overriding the (lagging) topic
    board.write(1, "c|fleet|1", _counts(5, 1))
    board.committed_partition(1)
    assert board.own == {1: {"c|fleet|1": _counts(5, 1)}} and board.pending == {}
    assert board.view()["c|fleet|1"] == _counts(5, 1)
    # a newer open write overrides the own one; aborting it shows the own one again
    board.write(1, "c|fleet|1", _counts(5, 3))
    assert board.get("c|fleet|1") == board.view()["c|fleet|1"] == _counts(5, 3)
    board.aborted(1)
    assert board.get("c|fleet|1") == _counts(5, 1)
    # sealed (its transaction committing): a later write belongs to the next transaction
    board.write(1, "c|fleet|1", _counts(6, 0))
    board.seal(1)
    board.write(1, "c|fleet|1", _counts(6, 1))
    assert board.get("c|fleet|1") == board.view()["c|fleet|1"] == _counts(6, 1)
    board.committed_sealed(1)
    assert board.own == {1: {"c|fleet|1": _counts(6, 0)}}
    assert board.pending == {1: {"c|fleet|1": _counts(6, 1)}} and board.sealed == {}
    board.aborted(1)
    assert board.get("c|fleet|1") == _counts(6, 0)
    # revoked: open and own writes go, the topic's value is what is left
    board.write(1, "c|fleet|1", _counts(5, 4))
    board.write(2, "c|fleet|2", _counts(4, 2))
    board.forget(1)
    assert board.get("c|fleet|1") == _counts(9, 9)
    assert board.get("c|fleet|2") == _counts(4, 2)  # other partitions untouched
    assert board.get("c|missing|1") is None
    assert board.owners() == {1: "http://old"}


def test_scope_board_totals_verdicts_and_published_counts() -> None:
    board = ScopeBoard(_settings())
    board.committed = {
        "c|fleet|0": _counts(3, 1),
        "c|fleet|1": _counts(2, 2),
        "c|fleet|11": _counts(7, 0),
        f"c|{SCOPE}|1": _counts(2, 2),
        "v|fleet": orjson.dumps([False, T0, 0]),
        "o|0": b"http://a",
        "o|11": b"http://b",
    }
    board.write(0, f"c|{SCOPE}|0", _counts(3, 1))
    board.write(0, f"v|{SCOPE}", orjson.dumps([True, T0 + 1, 3]))
    board.write(0, "d|", orjson.dumps(T0 + 1))
    assert board.totals() == {"fleet": ScopeCounts(12, 3), SCOPE: ScopeCounts(5, 3)}
    assert board.verdicts() == {
        "fleet": Verdict(False, T0, 0),
        SCOPE: Verdict(True, T0 + 1, 3),
    }
    assert board.decided_at() == T0 + 1
    assert board.published_counts(1) == {"fleet": ScopeCounts(2, 2), SCOPE: ScopeCounts(2, 2)}
    assert board.published_counts(11) == {"fleet": ScopeCounts(7, 0)}
    assert board.published_counts(0) == {"fleet": ScopeCounts(3, 1), SCOPE: ScopeCounts(3, 1)}
    assert board.published_counts(5) == {}
    assert board.owners() == {0: "http://a", 11: "http://b"}  # committed ones only
    board.aborted(0)
    assert board.totals()[SCOPE] == ScopeCounts(2, 2)
    assert board.decided_at() is None


# ---- readiness ------------------------------------------------------------------------------


def _loop() -> HeartbeatLoop:
    s = _settings()
    return HeartbeatLoop(s, Engine(s), ScopeBoard(s), worker_id="0", url=lambda: "http://x")


def _own(loop: HeartbeatLoop, p: int, phase: str, position: int = 0) -> Owned:
    o = Owned(p, TopicPartition(loop.topic, p), state=phase, position=position)
    loop.owned[p] = o
    return o


def test_readiness_states() -> None:
    loop = _loop()
    assert loop.readiness() == (False, "starting")
    loop.started = True
    assert loop.readiness() == (False, "starting")  # the scope board is not read yet
    loop.board.ready.set()
    assert loop.readiness() == (False, "no partitions")
    a = _own(loop, 0, "recovering")
    b = _own(loop, 3, "live", position=10)
    assert loop.readiness() == (False, "recovering")
    a.state, a.position = "replaying", 4
    assert loop.readiness() == (False, "catching up: lag unknown")
    loop.ends.end_offsets = {0: 10, 3: 10}
    loop.ends.ends_at = loop.last_loop_at = time.monotonic()
    assert loop.lag() == {0: 6, 3: 0}
    assert loop.readiness() == (False, "catching up: lag 6")
    a.position = 10
    assert loop.readiness() == (False, "catching up: lag 0")  # still replaying
    a.state = "live"
    assert loop.readiness() == (True, "ready")
    b.position = 7
    assert loop.readiness() == (False, "catching up: lag 3")
    # Kafka away (a broker restart): the log end was not read, or the loop did not poll
    b.position = 10
    loop.ends.ends_at -= 60
    assert loop.readiness() == (False, "waiting for Kafka: log end not read for 60s")
    loop.ends.ends_at += 60
    loop.last_loop_at -= 45
    assert loop.readiness() == (False, "waiting for Kafka: no poll for 45s")
    loop.last_loop_at += 45
    assert loop.readiness() == (True, "ready")


def test_ready_within_one_tick_of_the_log_end() -> None:
    """The tick a worker has just written (the log end is read right after it) is read a
    moment later: readiness does not flicker for it."""
    loop = _loop()
    loop.started = True
    loop.board.ready.set()
    o = _own(loop, 0, "live", position=10)
    loop.ends.end_offsets = {0: 10}
    loop.ends.ends_at = loop.last_loop_at = time.monotonic()
    assert loop.readiness() == (True, "ready")
    loop.ends.history.append((loop.ends.ends_at, loop.ends.end_offsets))
    loop.ends.end_offsets = {0: 11}  # the next tick
    loop.ends.history.append((loop.ends.ends_at, loop.ends.end_offsets))
    assert loop.lag() == {0: 1}
    assert loop.readiness() == (True, "ready")
    o.position = 9  # behind the log end of the previous tick: catching up
    assert loop.readiness() == (False, "catching up: lag 2")


def test_lag_counts_owned_partitions_only_and_never_below_zero() -> None:
    loop = _loop()
    _own(loop, 0, "live", position=12)
    loop.ends.end_offsets = {0: 10, 5: 100}
    assert loop.lag() == {0: 0}


def test_a_known_head_with_a_bad_tail_still_goes_to_the_dlq() -> None:
    """The fast path trusts a head it has seen accepted, never the tail."""
    engine = Engine(_settings(partitions=1))
    hb(engine, 0, T0, seq=1)
    key = _key(0)
    good = heartbeat_payload(
        _rid(0), location=LOC, os_type="linux", agent_version="1.0", sent_at=T0 + 1, sequence=2
    )
    head = good[: good.rfind(b',"sentAt":"')]
    for tail in (b',"sentAt":"2024-13-01T00:00:00Z","sequence":3}', b',"sentAt":"x"}'):
        emits, accepted = engine.handle_message(
            0, 9, key.encode(), head + tail, T0 + 2, topic="hb", wall_now=T0 + 2
        )
        assert not accepted and [e.topic for e in emits] == ["dlq"]
    emits, accepted = engine.handle_message(
        0, 10, key.encode(), good, T0 + 3, topic="hb", wall_now=T0 + 3
    )
    assert accepted and emits == []
    m = engine.machine(key)
    assert m is not None and m.state.last_heartbeat_at == T0 + 3 and m.state.sequence == 2
