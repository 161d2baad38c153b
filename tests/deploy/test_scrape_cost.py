"""A /metrics scrape costs what the locations and statuses cost, not what the machines do.

Counted with no Kafka: the worker's scrape (deploy/worker.py) over an engine holding many
Disconnected and held machines. The
records it decodes are counted: only the capped per-machine series may cost a decode each.
The flapping count, kept by the engine as machines change, equals a scan of every machine,
also after a checkpoint's restore.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from arcbeat.deploy.worker import Scrapes
from arcbeat.streams.decide import owned_partitions
from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.machines import Machine, Slot, from_slot
from arcbeat.streams.decide.maintenance import Book, Selector, Window
from arcbeat.streams.decide.mass_silence import Verdict
from arcbeat.streams.decide.records import heartbeat_payload
from arcbeat.streams.decide.resource_ids import resource_id
from arcbeat.streams.decide.status import Status, is_flapping
from arcbeat.streams.kafka import checkpoint
from arcbeat.streams.kafka.pipeline import Pipeline
from arcbeat.streams.settings import Settings

SUB = "00000000-0000-0000-0000-0000000000f3"
LOCATIONS = ("westeurope", "northeurope", "eastus")
T0 = 1_800_000_000.0  # a window start (window 10 s)
CAP = 20


def _settings() -> Settings:
    # late after 1.5 s, Disconnected after 4 s; a connect and its timeout in one window flap
    return Settings.load(
        env={},
        toml_path="/nonexistent.toml",
        heartbeat_interval=1.0,
        disconnect_after=4.0,
        expire_after=300.0,
        check_interval=0.5,
        commit_interval=0.5,
        window=10.0,
        outage_hold=6.0,
        outage_min_machines=10**9,  # no mass silence of their own: they go Disconnected
        flap_threshold=2,
        fleet_snapshot_interval=10.0,
        regions="*",
        partitions=2,
    )


def _beat(engine: Engine, m: int, at: float) -> None:
    rid = resource_id(SUB, "rg", f"vm{m}")
    value = heartbeat_payload(
        rid, location=LOCATIONS[m % 3], os_type="linux", agent_version="1.0",
        kind="connect", sent_at=at, sequence=0,
    )  # fmt: skip
    key = rid.lower()
    engine.handle_message(
        engine.partition_of(key), 0, key.encode(), value, at, topic="hb", wall_now=at
    )


def _tick_all(engine: Engine, at: float, verdicts: dict[str, Verdict]) -> None:
    for p in range(engine.settings.kafka.partitions):
        engine.handle_tick(p, at, verdicts, wall_now=at, decided_at=at - 0.5)


def _fleet(disconnected: int, held: int) -> Engine:
    """``disconnected`` machines silent from T0 (Disconnected at T0+4, flapping in T0's window)
    and ``held`` more in a location held by its ScopeSilent verdict."""
    engine = Engine(_settings(), fp_seed=7)
    for m in range(disconnected):
        _beat(engine, 3 * m, T0)  # westeurope
    for m in range(held):
        _beat(engine, 3 * m + 1, T0)  # northeurope
    verdicts = {"location=northeurope": Verdict(True, T0 + 2, held)}
    for at in (T0 + 2, T0 + 4, T0 + 4.5):
        _tick_all(engine, at, verdicts)
    return engine


def _pipe(engine: Engine, book: Book | None = None) -> Pipeline:
    # the part of a Pipeline a snapshot reads
    fake = SimpleNamespace(
        engine=engine,
        maintenance=SimpleNamespace(book=book or Book()),
        lag=lambda: {0: 0, 1: 0},
        verdicts=lambda: {},
        degraded=lambda: [],
    )
    return cast(Pipeline, fake)


def _scrape(
    engine: Engine, book: Book | None = None
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A scrape the way the worker answers one (snapshot in steps, rendered in a thread)."""
    body = asyncio.run(Scrapes(_pipe(engine, book), CAP).render())
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def _value(scraped: dict[str, Any], name: str) -> float:
    [(_, v)] = scraped[name]
    return float(v)


def _flapping_by_scan(engine: Engine, now: float) -> int:
    return sum(
        1
        for idx in engine.partitions.values()
        for slot in idx.machines.values()
        if (s := from_slot(slot).state).status is Status.DISCONNECTED
        and is_flapping(s, now, engine.timing)
    )


def test_the_work_of_a_scrape_does_not_grow_with_the_machines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded = 0

    def counting(slot: Slot) -> Machine:
        nonlocal decoded
        decoded += 1
        return from_slot(slot)

    work = []
    for machines in (100, 1000):
        engine = _fleet(machines, machines)
        assert engine.disconnected_count() == machines
        assert len(engine.held_keys()) == machines
        monkeypatch.setattr(owned_partitions, "from_slot", counting)  # Engine.machine
        decoded = 0
        scraped = _scrape(engine)
        work.append(decoded)
        monkeypatch.setattr(owned_partitions, "from_slot", from_slot)
        # same numbers as a scan of every machine
        assert _value(scraped, "arcbeat_flapping_machines") == machines
        assert _value(scraped, "arcbeat_machine_series_overflow") == machines - CAP
        assert len(scraped["arcbeat_machine_offline"]) == CAP
        held = {s["scope"]: v for s, v in scraped["arcbeat_outage_held_machines"]}
        assert held == {"fleet": machines, "location=northeurope": machines}
        by_status = {
            s["status"]: v for s, v in scraped["arcbeat_machines"] if s["location"] == "westeurope"
        }
        assert by_status == {"Disconnected": machines}
    # only the capped per-machine series are decoded, however many machines are offline
    assert work == [CAP, CAP]


def _in_force(name: str, selector: Selector) -> Window:
    now = time.time()  # a scrape reads the windows in force at wall-clock time
    return Window(
        id=name, selector=selector, start=now - 60, end=now + 3600, recurrence=None,
        reason="test", created_by="test", created_at=now - 60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("selector", "decodes_all"),
    [
        (Selector(location="westeurope"), False),
        (Selector(subscription_id=SUB.upper(), location="WestEurope"), False),
        (Selector(resource_group="RG"), True),  # a resource group: each machine is decoded
    ],
)
def test_a_scrape_in_a_maintenance_window_counts_from_the_indexes(
    monkeypatch: pytest.MonkeyPatch, selector: Selector, decodes_all: bool
) -> None:
    """Windows of a location or a subscription count the Disconnected machines they cover
    from the engine's counts; the capped series still carry the covering window's id."""
    decoded = 0

    def counting(slot: Slot) -> Machine:
        nonlocal decoded
        decoded += 1
        return from_slot(slot)

    machines = 1000
    engine = _fleet(machines, 0)
    book = Book()
    book.apply("mw-1", _in_force("mw-1", selector))
    monkeypatch.setattr(owned_partitions, "from_slot", counting)
    scraped = _scrape(engine, book)
    assert decoded == (CAP + machines if decodes_all else CAP)
    assert _value(scraped, "arcbeat_maintenance_windows_active") == 1
    [(labels, n)] = scraped["arcbeat_machines_offline_in_maintenance"]
    assert (labels["location"], n) == ("westeurope", machines)
    assert {s["maintenance"] for s, _ in scraped["arcbeat_machine_offline"]} == {"mw-1"}


def test_the_flapping_count_equals_a_scan_of_every_machine() -> None:
    engine = _fleet(30, 30)
    for m in range(0, 30, 2):
        _beat(engine, 3 * m, T0 + 5)  # back: Connected, a third transition this window
    _tick_all(engine, T0 + 5, {"location=northeurope": Verdict(True, T0 + 2, 30)})
    for now in (T0 + 5, T0 + 9.9, T0 + 10, T0 + 30):
        assert engine.flapping_count(now) == _flapping_by_scan(engine, now)
    assert engine.flapping_count(T0 + 5) == 15
    assert engine.flapping_count(T0 + 10) == 0


def test_the_flapping_count_survives_a_checkpoint() -> None:
    engine = _fleet(30, 30)
    restored = Engine(_settings(), fp_seed=7)
    for p, idx in engine.partitions.items():
        checkpoint.restore(restored, p, checkpoint.decode(checkpoint.encode(idx, p, 0)))
    for now in (T0 + 5, T0 + 10):
        assert restored.flapping_count(now) == engine.flapping_count(now)
    assert restored.flapping_count(T0 + 5) == 30
