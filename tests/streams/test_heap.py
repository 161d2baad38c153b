"""The collector's view of the heap: restored and new machines are frozen as they come, so
that no full collection walks a million of them (a stop of the event loop of up to 0.5 s)."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence

import pytest

from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.mass_silence import Verdict
from arcbeat.streams.kafka import checkpoint, checkpoint_store
from arcbeat.streams.kafka.heap import GrowthFreeze
from tests.streams.test_held_index import T0, _beat, _settings, _tick_all


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def _in_sight(objects: Sequence[object]) -> int:
    ids = {id(o) for o in objects}
    return sum(1 for o in gc.get_objects() if id(o) in ids)


async def test_a_restored_partition_is_out_of_the_collectors_sight() -> None:
    engine = Engine(_settings(partitions=1), fp_seed=7)
    machines = 12_000
    for m in range(machines):
        _beat(engine, m, T0, 0)
    silent = {"fleet": Verdict(True, T0 + 2, machines)}
    _tick_all(engine, T0 + 2, silent)  # late: restored from the rows
    records = checkpoint.encode(engine.partitions[0], 0, 0)

    restored = Engine(_settings(partitions=1), fp_seed=7)
    await checkpoint_store.install(restored, 0, list(records))

    idx = restored.partitions[0]
    assert len(idx.machines) == machines and len(idx.late) == machines
    slots = list(idx.machines.values())
    assert _in_sight(slots) == 0
    gc.unfreeze()
    assert _in_sight(slots) == machines  # the check sees them when they are not frozen


def test_growth_freezes_every_so_many_new_machines() -> None:
    growth = GrowthFreeze(every=1000)
    assert not growth.seen(999)
    young = [[n] for n in range(100)]  # tracked objects made since
    assert _in_sight(young) == 100
    assert growth.seen(1000)
    assert _in_sight(young) == 0
    assert not growth.seen(1999)
    assert growth.seen(2000)
    assert not growth.seen(500)  # partitions given away: counted from here
    assert growth.seen(1500)
