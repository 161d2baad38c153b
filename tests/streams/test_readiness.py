"""/readyz's lag rule (pure: the log ends are given, the clock is a variable).

A worker stays ready while it has read what was in the log ``ready_max_lag`` ago, and always
when it has read up to the end as of the previous tick; one further behind is catching up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import TopicPartition

from arcbeat.streams.kafka.checkpoint import Pointer
from arcbeat.streams.kafka.owned import Owned
from arcbeat.streams.kafka.readiness import LogEnds
from arcbeat.streams.kafka.transactions import BURST_RECORDS, checkpoint_due


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Consumer:
    """end_offsets as a consumer answers it: one per partition asked."""

    def __init__(self) -> None:
        self.ends: dict[int, int] = {}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp.partition] for tp in tps}


def _owned(*positions: int) -> dict[int, Owned]:
    out = {}
    for p, position in enumerate(positions):
        out[p] = Owned(p, TopicPartition("hb", p), state="live", position=position)
    return out


def _tick(ends: LogEnds, consumer: _Consumer, owned: Mapping[int, Owned], **new: int) -> None:
    """A tick: one more record at the end of each partition, then the ends are read."""
    for p in owned:
        consumer.ends[p] = consumer.ends.get(p, 0) + new.get(f"p{p}", 1)
    asyncio.run(ends.refresh(_any(consumer), owned))


def _any(x: object) -> Any:
    return x


def _ready(ends: LogEnds, owned: Mapping[int, Owned], clock: _Clock) -> tuple[bool, str]:
    return ends.readiness(owned, clock.now, 1.0)


def test_a_burst_worked_off_within_ready_max_lag_stays_ready() -> None:
    clock, consumer = _Clock(), _Consumer()
    ends = LogEnds(30.0, clock)
    owned = _owned(0, 0)
    for n in range(5):  # caught up, one tick a second (the latest read a moment later)
        _tick(ends, consumer, owned)
        for o in owned.values():
            o.position = consumer.ends[o.p] - (1 if n else 0)
        clock.now += 1
        assert _ready(ends, owned, clock) == (True, "ready")
    # a tick releases a held location: partition 0 works on it for 20 s while ticks go on
    stuck = owned[0].position
    for _ in range(20):
        _tick(ends, consumer, owned)
        owned[1].position = consumer.ends[1] - 1
        clock.now += 1
        ready, reason = _ready(ends, owned, clock)
        assert ready, reason
    assert stuck == owned[0].position
    # still there 30 s after: behind, reported
    for _ in range(12):
        _tick(ends, consumer, owned)
        clock.now += 1
    assert _ready(ends, owned, clock)[0] is False
    assert _ready(ends, owned, clock)[1].startswith("catching up: lag ")


def test_without_ready_max_lag_ready_only_within_one_tick() -> None:
    clock, consumer = _Clock(), _Consumer()
    ends = LogEnds(0.0, clock)
    owned = _owned(0)
    _tick(ends, consumer, owned)
    owned[0].position = consumer.ends[0]
    assert _ready(ends, owned, clock) == (True, "ready")  # lag 0
    clock.now += 1
    _tick(ends, consumer, owned)  # the tick just written, read a moment later: still ready
    assert _ready(ends, owned, clock) == (True, "ready")
    clock.now += 1
    _tick(ends, consumer, owned)
    assert _ready(ends, owned, clock) == (False, "catching up: lag 2")
    assert len(ends.history) == 2  # nothing older is kept


def test_right_after_a_start_ready_once_read_up_to_the_first_end_read() -> None:
    clock, consumer = _Clock(), _Consumer()
    ends = LogEnds(30.0, clock)
    owned = _owned(0)
    consumer.ends[0] = 500  # a backlog when the worker starts
    _tick(ends, consumer, owned, p0=0)
    assert _ready(ends, owned, clock) == (False, "catching up: lag 500")
    clock.now += 1
    _tick(ends, consumer, owned)
    owned[0].position = 499
    assert _ready(ends, owned, clock)[0] is False
    owned[0].position = 500
    assert _ready(ends, owned, clock) == (True, "ready")


def test_a_partition_assigned_later_is_judged_from_its_own_first_read() -> None:
    clock, consumer = _Clock(), _Consumer()
    ends = LogEnds(30.0, clock)
    owned = _owned(0)
    for _ in range(3):
        _tick(ends, consumer, owned)
        owned[0].position = consumer.ends[0]
        clock.now += 1
    owned = _owned(owned[0].position, 0)  # partition 1 assigned, with 40 records to read
    consumer.ends[1] = 40
    _tick(ends, consumer, owned, p1=0)
    owned[1].position = 40
    clock.now += 1
    _tick(ends, consumer, owned)
    assert _ready(ends, owned, clock) == (True, "ready")
    owned[1].position = 39
    assert _ready(ends, owned, clock)[0] is False


def test_history_keeps_one_read_older_than_ready_max_lag() -> None:
    clock, consumer = _Clock(), _Consumer()
    ends = LogEnds(10.0, clock)
    owned = _owned(0)
    for _ in range(100):
        _tick(ends, consumer, owned)
        clock.now += 1
    assert 10 <= len(ends.history) <= 12
    assert ends.history[0][0] <= clock.now - 10


def test_a_partition_more_than_a_tick_behind_defers_its_checkpoint() -> None:
    """A checkpoint stops the loop for a while: a partition behind (not read up to the end as
    read at the previous tick) waits for its checkpoint, at most one checkpoint_interval more;
    a partition just recovered (its turn at 0) never waits."""
    clock, consumer = _Clock(), _Consumer()
    ends = LogEnds(30.0, clock)
    owned = _owned(0, 0)
    assert not ends.behind(owned[0])  # nothing read yet: nothing known
    _tick(ends, consumer, owned, p0=100, p1=100)
    clock.now += 1
    _tick(ends, consumer, owned)  # ends now 101; as of the previous tick 100
    owned[0].position = 100
    owned[1].position = 60
    assert not ends.behind(owned[0])  # only the tick just written is left
    assert ends.behind(owned[1])

    every = 120.0
    now = time.monotonic()
    for o in owned.values():
        o.pointer, o.changed = Pointer(0, 0, 1, 1), True
    owned[0].checkpoint_at = now - every - 1  # due
    owned[1].checkpoint_at = now - every - 5  # due longer, but behind
    live = list(owned.values())
    assert checkpoint_due(live, every, ends.behind) is owned[0]
    owned[0].checkpoint_at = now
    assert checkpoint_due(live, every, ends.behind) is None
    owned[1].checkpoint_at = now - 2 * every - 1  # waited one interval more: taken anyway
    assert checkpoint_due(live, every, ends.behind) is owned[1]
    owned[1].checkpoint_at = 0.0  # replayed just now: at once
    assert checkpoint_due(live, every, ends.behind) is owned[1]


def test_a_partition_in_a_burst_of_decisions_defers_its_checkpoint() -> None:
    """A partition whose latest tick emitted BURST_RECORDS or more (a release) waits for its
    checkpoint, up to one checkpoint_interval more, even when it keeps up with the log."""
    owned = _owned(0, 0)
    every = 120.0
    now = time.monotonic()
    for o in owned.values():
        o.pointer, o.changed = Pointer(0, 0, 1, 1), True
        o.checkpoint_at = now - every - 1  # due
    owned[0].checkpoint_at = now - every - 5  # due longer, but in a burst
    owned[0].tick_records = BURST_RECORDS
    owned[1].tick_records = BURST_RECORDS - 1
    live = list(owned.values())
    assert checkpoint_due(live, every) is owned[1]
    owned[1].tick_records = BURST_RECORDS
    assert checkpoint_due(live, every) is None
    owned[0].checkpoint_at = now - 2 * every - 1  # waited one interval more: taken anyway
    assert checkpoint_due(live, every) is owned[0]
    owned[0].tick_records = 0  # the burst is over: at once
    owned[0].checkpoint_at = now - every - 1
    assert checkpoint_due(live, every) is owned[0]
