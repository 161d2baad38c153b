"""The replay, without Kafka: the determinism oracle as a property, the report's arithmetic,
and the refusals.

- any log (heartbeats of every kind, duplicates, reboots, skewed clocks, ticks with verdicts,
  decisions and maintenance windows) fed to a worker's engine and to :class:`PartitionReplay`
  gives the same transitions;
- the report counts pages, short outages, warnings' head start and availability as documented;
- the comparison is refused when it would mislead, and says why.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

from arcbeat.deploy.replay_report import (
    Report,
    Side,
    markdown,
    oracle,
    summarize,
    text,
    warnings,
)
from arcbeat.deploy.replay_run import Bounds, ReplayRun, _refusals, parse_overrides, split
from arcbeat.streams.decide.decisions_settings import deciding, differences, with_recorded
from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.kafka import ticks
from arcbeat.streams.replay.log import PartitionPlan
from arcbeat.streams.replay.partition import Change, PartitionReplay, PartitionResult, ScopeEvent
from arcbeat.streams.settings import SettingsError
from tests.streams.test_engine import STEPS, T0, Msg, Tick, _settings, build_log

# ---- the oracle -------------------------------------------------------------------------------


def _worker_changes(log: list[Msg | Tick], settings_json: dict[str, Any]) -> list[Change]:
    """What a worker decides: the engine fed as the batch loop feeds it (ticks decoded from
    their records, wall clock a little after the broker time)."""
    engine = Engine(_settings())
    out: list[Change] = []
    for r in log:
        if isinstance(r, Tick):
            value, headers = ticks.encode(
                "w", r.verdicts, r.decided_at or 0.0, r.maintenance, settings=settings_json
            )
            t = ticks.decode(value, headers)
            assert t is not None
            emits, _ = engine.handle_tick(
                r.p, r.at, t.verdicts, wall_now=r.at + 0.003, decided_at=t.decided_at,
                maintenance=t.maintenance,
            )  # fmt: skip
        else:
            emits, _ = engine.handle_message(
                r.p, r.offset, r.key, r.value, r.at, topic="hb", wall_now=r.at + 0.003
            )
        for e in emits:
            rec = orjson.loads(e.value)
            if e.topic == "status" and rec["type"] == "StatusChanged":
                out.append(Change.from_record(rec, r.p))
    return out


def _replayed(log: list[Msg | Tick], settings_json: dict[str, Any]) -> list[Change]:
    settings = with_recorded(_settings(window=3600.0), settings_json)
    replays: dict[int, PartitionReplay] = {}
    for r in log:
        rp = replays.get(r.p)
        if rp is None:
            rp = replays[r.p] = PartitionReplay(settings, r.p, since=0.0, until=T0 + 1e6)
        if isinstance(r, Tick):
            value, headers = ticks.encode(
                "w", r.verdicts, r.decided_at or 0.0, r.maintenance, settings=settings_json
            )
            rp.feed(r.offset, None, value, round(r.at * 1000), headers)
        else:
            rp.feed(r.offset, r.key, r.value, round(r.at * 1000), [])
    return [c for rp in replays.values() for c in rp.result.changes]


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_a_replay_decides_exactly_as_the_worker(steps: list[Any]) -> None:
    worker = _settings()
    log = build_log(steps, Engine(worker))
    # broker times are whole milliseconds, as Kafka stores them
    log = [
        (Tick(r.p, r.offset, round(r.at * 1000) / 1000, r.verdicts, r.decided_at, r.maintenance)
         if isinstance(r, Tick)
         else Msg(r.p, r.offset, r.key, r.value, round(r.at * 1000) / 1000))
        for r in log
    ]  # fmt: skip
    recorded = deciding(worker)
    # the replay starts from other settings: the ticks' recorded ones must win
    o = oracle(_worker_changes(log, recorded), _replayed(log, recorded))
    assert o.identical, o.as_json()


def test_recorded_settings_round_trip_and_differences() -> None:
    s = _settings(disconnect_after=7.0)
    rec = orjson.loads(orjson.dumps(deciding(s)))
    assert with_recorded(_settings(), rec).timing.disconnect_after == 7.0
    assert differences(deciding(_settings()), rec) == {"disconnect_after": (4.0, 7.0)}
    # a newer worker's unknown setting is ignored; a bad value is a clear error
    assert with_recorded(_settings(), {**rec, "future_knob": 1}).timing.disconnect_after == 7.0
    with pytest.raises(SettingsError, match="recorded in the ticks"):
        with_recorded(_settings(), {"disconnect_after": 0.5})


def test_old_ticks_without_settings_still_decode() -> None:
    value = orjson.dumps({"type": "tick", "verdicts": {}, "decidedAt": 0.0, "maintenance": []})
    t = ticks.decode(value, [(ticks.TICK_HEADER, b"1")])
    assert t is not None and t.settings is None
    bad = orjson.dumps({"verdicts": {}, "decidedAt": 0.0, "maintenance": [], "settings": 3})
    assert ticks.decode(bad, [(ticks.TICK_HEADER, b"1")]) is None


# ---- the report ---------------------------------------------------------------------------------


def _c(key: str, prev: str | None, status: str, reason: str, at: float, **kw: Any) -> Change:
    base: dict[str, Any] = {
        "key": key, "previous": prev, "status": status, "reason": reason, "decided_at": at,
        "last_heartbeat_at": at - 900, "detection_delay": 0.5, "location": "westeurope",
        "subscription": "s1", "mass_outage": False, "maintenance": None, "partition": 0,
    }  # fmt: skip
    base.update(kw)
    return Change(**base)


def test_pages_short_outages_delays_and_availability() -> None:
    cs = [
        _c("a", "Connected", "Disconnected", "heartbeat_timeout", 100.0),
        _c("a", "Disconnected", "Connected", "heartbeat_resumed", 130.0),  # 30 s: short
        _c("b", "Connected", "Disconnected", "heartbeat_timeout", 100.0, detection_delay=2.0),
        _c("c", "Connected", "Disconnected", "heartbeat_timeout", 100.0, maintenance="mw"),
        _c("d", "Connected", "Disconnected", "heartbeat_timeout", 100.0, mass_outage=True),
    ]
    events = [ScopeEvent("ScopeSilent", "location=westeurope", 90.0, 30)]
    side = Side("x", cs, events, {"westeurope": [90.0, 100.0, 0.0]})
    s = summarize(side, until=1000.0, alert_for=60.0, short=600.0, lookahead=3600.0)
    # b pages (900 s down); a resumed before `for`; c planned; d held by the scope's page
    assert s.pages == {"machineOffline": 1, "scopeSilent": 1}
    assert s.short_outages == 1
    assert s.detection_delay["max"] == 2.0 and s.detection_delay["count"] == 3
    assert s.availability == {"westeurope": 0.9}
    assert s.transitions["Connected->Disconnected (heartbeat_timeout)"] == 4


def test_a_warnings_lead_time_is_to_the_first_unplanned_disconnected_of_its_scope() -> None:
    cs = [
        _c("a", "Connected", "Disconnected", "heartbeat_timeout", 500.0, maintenance="mw"),
        _c("b", "Connected", "Disconnected", "heartbeat_timeout", 700.0, location="westus2"),
        _c("c", "Connected", "Disconnected", "heartbeat_timeout", 800.0),
    ]
    ev = [ScopeEvent("ScopeDegraded", "location=westeurope", 400.0),
          ScopeEvent("ScopeDegraded", "location=westasia", 400.0)]  # fmt: skip
    w = warnings(ev, cs, lookahead=3600.0)
    assert w[0]["leadSeconds"] == 400.0
    assert w[1]["leadSeconds"] is None


def test_the_oracle_names_what_differs() -> None:
    a = [_c("a", "Connected", "Disconnected", "heartbeat_timeout", 100.0)]
    b = [_c("a", "Connected", "Disconnected", "heartbeat_timeout", 100.001)]
    assert oracle(a, a).identical
    o = oracle(a, b)
    assert not o.identical and len(o.only_recorded) == 1 and len(o.only_replayed) == 1
    assert o.as_json()["examplesOnlyReplayed"][0]["decidedAt"].endswith(".001Z")


def test_the_report_renders_in_every_format() -> None:
    cs = [_c("a", "Connected", "Disconnected", "heartbeat_timeout", 100.0)]
    kw = {"until": 1000.0, "alert_for": 60.0, "short": 600.0, "lookahead": 3600.0}
    left = summarize(Side("recorded", cs, []), **kw)
    right = summarize(Side("replay", [], [], {"westeurope": [1, 2, 0]}), **kw)
    figures = {"heartbeats": 10, "records": 12, "seconds": 1.0, "rate": 10, "jobs": 2}
    rep = Report(0.0, 1000.0, left, right, {"disconnect_after": [900.0, 1200.0]}, figures)
    t = text(rep)
    assert "disconnect_after 900.0 -> 1200.0" in t and "availability westeurope" in t
    assert "| `disconnect_after` | 900.0 | 1200.0 |" in markdown(rep)
    assert orjson.loads(orjson.dumps(rep.as_json()))["right"]["availability"] == {"westeurope": 0.5}


# ---- refusals and arguments --------------------------------------------------------------------


def _run(results: list[PartitionResult], plans: list[PartitionPlan]) -> ReplayRun:
    return ReplayRun(_settings(), plans, results, None, 1.0, 1)


def test_refused_when_the_log_starts_mid_state() -> None:
    why = _refusals(_run([PartitionResult(0)], [PartitionPlan(0, 500, 900, 900)]), base=None)
    assert len(why) == 1 and "starts at offset 500" in why[0] and "--against-set" in why[0]


def test_refused_when_the_settings_changed_or_ticks_cannot_be_read() -> None:
    from arcbeat.streams.replay.partition import SettingsChange

    r = PartitionResult(3, ticks=5, settings={"disconnect_after": 900.0})
    r.settings_changes.append(SettingsChange(3, 77, T0, {"disconnect_after": (900.0, 1200.0)}))
    why = _refusals(_run([r], [PartitionPlan(3, 0, 100, 100)]), base=None)
    assert "settings changed" in why[0] and "disconnect_after 900.0 -> 1200.0" in why[0]
    assert "offset 77" in why[0]
    signed = PartitionResult(0, bad_ticks=4)
    why = _refusals(_run([signed], [PartitionPlan(0, 0, 10, 10)]), base=None)
    assert "tick_key_file" in why[0]
    two = [PartitionResult(0, ticks=1, settings={"a": 1}), PartitionResult(1, ticks=1,
           settings={"a": 2})]  # fmt: skip
    why = _refusals(_run(two, [PartitionPlan(0, 0, 1, 1)]), base=None)
    assert "different settings" in why[0]


def test_overrides_are_checked_like_settings() -> None:
    assert parse_overrides(["disconnect_after=20m", "outage-ratio=0.4"]) == {
        "disconnect_after": 1200.0,
        "outage_ratio": 0.4,
    }
    with pytest.raises(SettingsError, match="name=value"):
        parse_overrides(["disconnect_after"])
    with pytest.raises(SettingsError, match="nope"):
        parse_overrides(["nope=1"])
    with pytest.raises(SettingsError, match="disconnect_after"):
        parse_overrides(["disconnect_after=soon"])


def test_partitions_split_evenly_and_reads_stop_at_the_committed_offset() -> None:
    plans = [PartitionPlan(p, 0, n, None) for p, n in enumerate([100, 90, 10, 5, 1])]
    groups = split(plans, 2)
    sizes = sorted(sum(p.end for p in g) for g in groups)
    assert sizes == [101, 105]
    b = Bounds.of([PartitionPlan(0, 0, 100, 60), PartitionPlan(1, 5, 50, None)])
    assert [(p.start, p.end) for p in b.plans] == [(0, 60), (5, 50)] and b.total() == 105


def test_an_unreachable_cluster_is_a_clear_error() -> None:
    from arcbeat.deploy.replay_run import ReplayError, WhatIf, what_if

    settings = _settings().replace(kafka_bootstrap="127.0.0.1:1")
    with pytest.raises(ReplayError, match=r"cannot read the logs at 127\.0\.0\.1:1"):
        what_if(settings, WhatIf(0.0, 1.0))
