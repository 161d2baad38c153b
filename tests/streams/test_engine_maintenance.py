"""The engine and maintenance windows: planned downtime is declared (status stays the truth),
carries its window, stays out of mass-silence evidence and out of availability; the windows
come with the ticks, so a checkpoint plus replay decides the same. Pure: no Kafka."""

from __future__ import annotations

from typing import Any

import orjson

from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.maintenance import Recurrence, Selector, Window
from arcbeat.streams.decide.maintenance_codec import to_json
from arcbeat.streams.decide.mass_silence import Verdict
from arcbeat.streams.decide.status import Status
from arcbeat.streams.kafka import checkpoint
from tests.streams.test_engine import LOC, SCOPE, SUB, T0, _key, _rid, _settings, changes, hb

WINDOW_ID = "mw-test-1"


def _window(
    *,
    start: float = T0,
    end: float = T0 + 100,
    selector: Selector | None = None,
    recurrence: Recurrence | None = None,
    window_id: str = WINDOW_ID,
) -> dict[str, Any]:
    return to_json(
        Window(
            id=window_id,
            selector=selector or Selector(resource_group="rg"),
            start=start,
            end=end,
            recurrence=recurrence,
            reason="patch night",
            created_by="alice",
            created_at=start,
        )
    )


def tick(engine: Engine, at: float, windows: list[dict[str, Any]], **kw: Any) -> list[Any]:
    emits, _ = engine.handle_tick(0, at, kw.pop("verdicts", {}), wall_now=at, maintenance=windows)
    return emits


def test_a_silent_machine_in_a_window_is_declared_with_the_window() -> None:
    engine = Engine(_settings(partitions=1))
    hb(engine, 0, T0, seq=1)
    windows = [_window()]
    tick(engine, T0 + 0.5, windows)
    tick(engine, T0 + 2, windows)
    [c] = changes(tick(engine, T0 + 4, windows))
    assert (c["status"], c["maintenance"], c["massOutage"]) == ("Disconnected", WINDOW_ID, False)
    assert not engine.partitions[0].late  # no mass-silence evidence


def test_outside_its_window_a_machine_is_declared_as_usual() -> None:
    engine = Engine(_settings(partitions=1))
    hb(engine, 0, T0, seq=1)
    other = [_window(selector=Selector(resource_ids=frozenset({_rid(3).lower()})))]
    ended = [_window(end=T0 + 3)]
    tick(engine, T0 + 0.5, other)
    tick(engine, T0 + 2, ended)
    [c] = changes(tick(engine, T0 + 4, ended))
    assert (c["status"], c["maintenance"]) == ("Disconnected", None)


def test_a_whole_location_rebooted_in_a_window_raises_no_mass_silence() -> None:
    """Every machine goes silent: without a window the partition's own evidence makes them
    wait for a verdict; in a window they are declared at their deadline with the window."""
    for planned in (False, True):
        engine = Engine(_settings(partitions=1))
        for m in range(4):
            hb(engine, m, T0, seq=1)
        windows = [_window()] if planned else []
        tick(engine, T0 + 0.5, windows)
        tick(engine, T0 + 2, windows)
        idx = engine.partitions[0]
        assert bool(idx.late_by_scope[SCOPE]) is not planned
        silent = {SCOPE: Verdict(True, T0 + 3, 4)}
        out = changes(tick(engine, T0 + 4, windows, verdicts=silent))
        if planned:
            assert sorted(c["resourceId"] for c in out) == sorted(_rid(m) for m in range(4))
            assert {c["maintenance"] for c in out} == {WINDOW_ID}
            assert not idx.held
        else:
            assert out == [] and len(idx.held) == 4  # held by the verdict


def test_a_window_that_covers_part_of_an_availability_window_is_left_out() -> None:
    """window 10 s, one heartbeat a second: expected 10; 5 s planned -> expected 5."""
    engine = Engine(_settings(partitions=1, disconnect_after=100.0))
    hb(engine, 0, T0, seq=1)
    hb(engine, 0, T0 + 1, seq=2)  # 2 received, then silent (a reboot in the window)
    windows = [_window(start=T0 + 5, end=T0 + 10)]
    tick(engine, T0 + 6, windows)
    out = [orjson.loads(e.value) for e in tick(engine, T0 + 10.5, windows)]
    [w] = [r for r in out if r["type"] == "WindowCounts"]
    assert (w["received"], w["expected"], w["plannedSeconds"]) == (2, 5, 5.0)


def test_an_unplanned_availability_window_has_no_planned_seconds() -> None:
    engine = Engine(_settings(partitions=1, disconnect_after=100.0))
    hb(engine, 0, T0, seq=1)
    out = [orjson.loads(e.value) for e in tick(engine, T0 + 10.5, [])]
    [w] = [r for r in out if r["type"] == "WindowCounts"]
    assert (w["received"], w["expected"], w["plannedSeconds"]) == (1, 10, 0.0)


def test_a_checkpoint_carries_the_windows_of_the_last_tick() -> None:
    """Between two ticks the windows of the last one still count (a heartbeat that closes an
    availability window uses them): a restore brings them back."""
    first = Engine(_settings(partitions=1))
    hb(first, 0, T0, seq=1)
    tick(first, T0 + 0.5, [_window()])
    restored = Engine(_settings(partitions=1))
    cp = checkpoint.decode(checkpoint.encode(first.partitions[0], 0, 2))
    checkpoint.restore(restored, 0, cp)
    idx = restored.partitions[0]
    assert idx.planned_json == [_window()] and idx.planned.get(WINDOW_ID) is not None


def test_a_bad_window_in_a_tick_covers_nothing() -> None:
    engine = Engine(_settings(partitions=1))
    hb(engine, 0, T0, seq=1)
    bad = [{**_window(), "start": "yesterday"}]
    tick(engine, T0 + 0.5, bad)
    [c] = changes(tick(engine, T0 + 4, bad))
    assert c["maintenance"] is None
    assert engine.machine(_key(0)) is not None
    assert engine.machine(_key(0)).state.status is Status.DISCONNECTED  # type: ignore[union-attr]


def test_a_scope_selector_matches_by_subscription_and_location() -> None:
    engine = Engine(_settings(partitions=1))
    hb(engine, 0, T0, seq=1)
    windows = [_window(selector=Selector(subscription_id=SUB.upper(), location=LOC))]
    tick(engine, T0 + 0.5, windows)
    [c] = changes(tick(engine, T0 + 4, windows))
    assert c["maintenance"] == WINDOW_ID
