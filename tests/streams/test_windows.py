"""Availability windows in the engine (pure: in-memory state, no Kafka).

Heartbeats are counted per machine in tumbling windows of broker time, inside the machine's
own record; a window's counts are emitted once, as a WindowCounts record on the fleet topic,
by the first tick at or after its end (or by the machine's next heartbeat in a later window),
and a checkpoint taken at any offset plus the log after it emits the same records.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.output_records import Emit
from arcbeat.streams.decide.records import heartbeat_payload
from arcbeat.streams.decide.resource_ids import resource_id
from arcbeat.streams.decide.timestamps import parse_rfc3339
from arcbeat.streams.kafka import checkpoint
from arcbeat.streams.settings import Settings
from tests.support.examples import examples

SUB = "00000000-0000-0000-0000-000000000001"
WINDOW = 10.0
T0 = 1_800_000_000.0  # a multiple of WINDOW


def _settings(**changes: Any) -> Settings:
    base: dict[str, Any] = {
        "heartbeat_interval": 1.0,
        "disconnect_after": 1000.0,
        "check_interval": 0.5,
        "window": WINDOW,
        "regions": "*",
        "partitions": 1,
    }
    return Settings.load(env={}, toml_path="/nonexistent.toml", **{**base, **changes})


def _rid(m: int) -> str:
    return resource_id(SUB, "rg", f"vm{m}")


def _message(engine: Engine, m: int, at: float, offset: int) -> list[Emit]:
    rid = _rid(m)
    value = heartbeat_payload(
        rid, location="westeurope", os_type="linux", agent_version="1.0", sent_at=at
    )
    emits, hb = engine.handle_message(
        0, offset, rid.lower().encode(), value, at, topic="hb", wall_now=at
    )
    assert hb is not None
    return emits


def _tick(engine: Engine, at: float) -> list[Emit]:
    emits, _ = engine.handle_tick(0, at, {}, wall_now=at)
    return emits


def _windows(emits: list[Emit]) -> list[tuple[str, float, int]]:
    out = []
    for e in emits:
        record = orjson.loads(e.value)
        if record["type"] == "WindowCounts":
            assert e.topic == "fleet"
            assert parse_rfc3339(record["windowEnd"]) - parse_rfc3339(record["windowStart"]) == (
                WINDOW
            )
            assert record["expected"] == 10
            out.append(
                (record["resourceId"], parse_rfc3339(record["windowStart"]), record["received"])
            )
    return out


def test_a_tick_after_the_window_end_emits_its_count_once() -> None:
    engine = Engine(_settings())
    emitted: list[Emit] = []
    for i in range(7):
        emitted += _message(engine, 0, T0 + i, i)
    emitted += _tick(engine, T0 + 9.9)
    assert _windows(emitted) == []  # not over yet
    emitted += _tick(engine, T0 + 10.0)
    emitted += _tick(engine, T0 + 10.5)
    assert _windows(emitted) == [(_rid(0), T0, 7)]
    key = _rid(0).lower()
    m = engine.machine(key)
    assert m is not None
    assert (m.window_start, m.received) == (None, 0)  # closed in the record too


def test_a_heartbeat_in_a_later_window_closes_the_open_one() -> None:
    engine = Engine(_settings())
    emitted = _message(engine, 0, T0 + 1, 0) + _message(engine, 0, T0 + 2, 1)
    emitted += _message(engine, 0, T0 + 25, 2)  # no tick in between (a stalled ticker)
    assert _windows(emitted) == [(_rid(0), T0, 2)]
    emitted = _tick(engine, T0 + 30)
    assert _windows(emitted) == [(_rid(0), T0 + 20, 1)]


def test_duplicates_and_disconnects_count_nothing_and_windows_can_be_off() -> None:
    engine = Engine(_settings())
    rid = _rid(0)
    key = rid.lower().encode()
    value = heartbeat_payload(
        rid, location="westeurope", os_type="linux", agent_version="1.0", sent_at=T0, sequence=5
    )
    engine.handle_message(0, 0, key, value, T0, topic="hb", wall_now=T0)
    engine.handle_message(0, 1, key, value, T0 + 0.1, topic="hb", wall_now=T0)  # duplicate
    bye = heartbeat_payload(
        rid,
        location="westeurope",
        os_type="linux",
        agent_version="1.0",
        sent_at=T0 + 1,
        kind="disconnect",
        sequence=6,
    )
    # a disconnect removes the machine (onboarded again by its next connect): its open
    # window is emitted then, with the one heartbeat it had
    emits, _ = engine.handle_message(0, 2, key, bye, T0 + 1, topic="hb", wall_now=T0)
    assert _windows(emits) == [(rid, T0, 1)]
    assert _windows(_tick(engine, T0 + 10)) == []
    off = Engine(_settings(availability_windows=False))
    emitted = [e for i in range(3) for e in _message(off, 0, T0 + i, i)] + _tick(off, T0 + 20)
    assert _windows(emitted) == []


def test_a_window_boundary_is_closed_over_several_ticks() -> None:
    """50 silent machines, a budget of 10 a tick: no tick does all the work, none is lost."""
    engine = Engine(_settings())
    for m in range(50):
        _message(engine, m, T0 + m * 0.1, m)
    per_tick = [len(_windows(_tick(engine, T0 + WINDOW + i))) for i in range(7)]
    assert per_tick == [10, 10, 10, 10, 10, 0, 0]
    assert not engine.index_for(0).windows


# -- property: exact counts, each window once, the same after a replay -------------------------

events = st.lists(
    st.tuples(
        st.sampled_from(["hb", "tick"]),
        st.integers(min_value=0, max_value=3),  # machine
        st.floats(min_value=0.0, max_value=3.0),  # gap before this event
    ),
    min_size=1,
    max_size=80,
)


def _run(engine: Engine, log: list[tuple[str, int, float]], start: int = 0) -> list[Any]:
    out: list[Any] = []
    for offset, (kind, m, at) in enumerate(log):
        if offset < start:
            continue
        emits = _message(engine, m, at, offset) if kind == "hb" else _tick(engine, at)
        out += _windows(emits)
    return out


@settings(max_examples=examples(150), deadline=None)
@given(events, st.integers(min_value=0, max_value=80))
def test_window_counts_are_exact_once_and_replay_safe(
    raw: list[tuple[str, int, float]], cut: int
) -> None:
    log, t = [], T0
    for kind, m, gap in raw:
        t += gap
        log.append((kind, m, t))
    log.append(("tick", 0, t + 2 * WINDOW))  # closes everything still open
    truth = Counter(
        (_rid(m), math.floor(at / WINDOW) * WINDOW) for kind, m, at in log if kind == "hb"
    )
    engine = Engine(_settings())
    emitted = _run(engine, log)
    assert Counter({(rid, w): n for rid, w, n in emitted}) == truth
    assert len(emitted) == len(truth)  # each (machine, window) once
    # a crash after `cut` records: a new engine restored from a checkpoint taken at that
    # offset, fed the rest of the log, emits exactly what the first run emitted after `cut`
    cut = min(cut, len(log))
    first = Engine(_settings())
    before = _run(first, log[:cut])
    cp = checkpoint.decode(checkpoint.encode(first.index_for(0), 0, cut))
    assert cp.header["offset"] == cut
    replay = Engine(_settings())
    checkpoint.restore(replay, 0, cp)
    assert _run(replay, log, start=cut) == emitted[len(before) :]
