"""Early warning over simulated production time (5-minute heartbeats, 15-minute deadline),
driving the engine the way the worker does: heartbeats and ticks in broker order, each
partition's interval samples on a board, the decider judging them.

- "an uplink degrades": one location's delivery delays grow over several intervals, then its
  machines start missing heartbeats and go silent: ScopeDegraded comes at least 5 minutes
  before its first Disconnected;
- an ordinary fleet (jitter, skewed clocks, now and then a slow heartbeat) raises nothing over
  an hour (after the hour that teaches the baselines);
- a degraded location inside a maintenance window raises nothing;
- a subscription whose machines degrade in every location (its own proxy, say) warns as a
  subscription, before its first Disconnected, and its locations do not;
- late machines: the field, the per-location count, and the rule's arithmetic.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from arcbeat.streams.decide.degradation import DELAY_BOUNDS, Detector, Rule, ScopeSample, baseline
from arcbeat.streams.decide.early_warning import (
    Decider,
    PartitionSample,
    planned_scopes,
    replay_decisions,
)
from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.maintenance import Selector, Window
from arcbeat.streams.decide.maintenance_codec import to_json
from arcbeat.streams.decide.records import heartbeat_payload
from arcbeat.streams.decide.resource_ids import resource_id
from arcbeat.streams.decide.timestamps import parse_rfc3339
from arcbeat.streams.settings import Settings

SUB = "00000000-0000-0000-0000-0000000000f2"
SUB2 = "00000000-0000-0000-0000-0000000000a7"  # every 12th machine: 5 in each location
LOCATIONS = ("westeurope", "westus2", "westasia")
T0 = 1_800_000_000.0
INTERVAL = 300.0
DISCONNECT = 900.0
TICK = 5.0


def _settings(**changes: Any) -> Settings:
    base: dict[str, Any] = {
        "heartbeat_interval": INTERVAL,
        "disconnect_after": DISCONNECT,
        "check_interval": TICK,
        "regions": "*",
        "partitions": 4,
        "outage_min_machines": 1000,  # mass silence is not what these tests look at
    }
    return Settings.load(env={}, toml_path="/nonexistent.toml", **{**base, **changes})


@dataclass
class Fleet:
    """Machines per location, each with its own clock offset and send phase."""

    per_location: int = 60
    seed: int = 1
    offsets: dict[str, float] = field(default_factory=dict)

    def machines(self) -> list[tuple[str, str]]:
        return [
            (resource_id(SUB2 if i % 12 == 0 else SUB, "rg", f"{loc}-vm{i}"), loc)
            for loc in LOCATIONS
            for i in range(self.per_location)
        ]


@dataclass
class Run:
    degraded: list[tuple[str, float]]  # (scope, at)
    cleared: list[tuple[str, float]]
    disconnected: dict[str, list[float]]  # location -> decision times
    disconnected_in: dict[str, list[float]]  # subscription -> decision times
    engine: Engine
    decider: Decider
    samples: list[PartitionSample] = field(default_factory=list)  # every partition's, in order


def simulate(
    hours: float,
    *,
    degrade: str | None = None,
    degrade_at: float = 0.0,
    windows: list[Window] | None = None,
    seed: int = 1,
    degrade_subscription: str | None = None,
    **changes: Any,
) -> Run:
    """``hours`` of the fleet. With ``degrade``, that location's delays grow by a minute per
    interval from ``degrade_at`` (seconds after the start), its machines start missing
    heartbeats after four intervals, and all are silent after six. With
    ``degrade_subscription``, that subscription's machines in every location do the same."""
    settings = _settings(**changes)
    engine = Engine(settings, fp_seed=1)
    rng = random.Random(seed)
    fleet = Fleet(seed=seed)
    end = T0 + hours * 3600
    maint = [w for w in windows or []]
    maintenance = [to_json(w) for w in maint]
    # every event in broker order: (time, order, kind, payload)
    events: list[tuple[float, int, str, Any]] = []
    n = 0
    for rid, loc in fleet.machines():
        # most clocks are right; some are minutes off (a skewed clock is no delay)
        offset = rng.choice([0.0] * 6 + [-600.0, -45.0, 30.0, 240.0])
        t = T0 + rng.uniform(0, INTERVAL)
        seq = 0
        while t < end:
            delay = rng.lognormvariate(-1.0, 0.8)  # ~0.4 s typical
            if rng.random() < 0.01:
                delay += rng.uniform(5, 40)  # now and then a slow one
            skip = False
            sub = SUB2 if rid.startswith(f"/subscriptions/{SUB2}") else SUB
            if (degrade == loc or degrade_subscription == sub) and t >= T0 + degrade_at:
                k = (t - T0 - degrade_at) / INTERVAL
                delay += 60.0 * min(k, 5)
                if k >= 6:
                    skip = True  # the uplink is gone
                elif k >= 4:
                    skip = rng.random() < (k - 3) / 3  # heartbeats start to go missing
            if not skip:
                events.append((t + delay, n, "hb", (rid, loc, t + offset, seq)))
                n += 1
            seq += 1
            t += INTERVAL + rng.uniform(-20, 20)  # jitter
    for p in range(4):
        t = T0 + 0.3 * p
        while t < end:
            events.append((t, n, "tick", p))
            n += 1
            t += TICK
    heapq.heapify(events)
    board: dict[int, PartitionSample] = {}
    decider = Decider(settings)
    degraded: list[tuple[str, float]] = []
    cleared: list[tuple[str, float]] = []
    disconnected: dict[str, list[float]] = {}
    disconnected_in: dict[str, list[float]] = {}
    samples: list[PartitionSample] = []
    while events:
        at, _, kind, payload = heapq.heappop(events)
        at = round(at, 3)
        if kind == "hb":
            rid, loc, sent, seq = payload
            key = rid.lower()
            value = heartbeat_payload(
                rid, location=loc, os_type="linux", agent_version="1.0",
                sent_at=sent, sequence=seq,
            )  # fmt: skip
            emits, _ = engine.handle_message(
                engine.partition_of(key), 0, key.encode(), value, at, topic="hb", wall_now=at
            )
        else:
            p = payload
            emits, _ = engine.handle_tick(
                p, at, {}, wall_now=at, decided_at=None, maintenance=maintenance
            )
            for sample in engine.early_samples:
                board[sample.partition] = sample
                samples.append(sample)
            engine.early_samples.clear()
            if p == 0:
                bucket = decider.due(at)
                if bucket is not None:
                    planned = planned_scopes(maint, at)
                    for d in decider.judge(bucket, board.values(), planned, at):
                        (degraded if d.type == "ScopeDegraded" else cleared).append((d.scope, d.at))
        for e in emits:
            if e.topic == "status":
                rec = orjson.loads(e.value)
                if rec.get("reason") == "heartbeat_timeout":
                    at = parse_rfc3339(rec["decidedAt"])
                    disconnected.setdefault(rec["location"], []).append(at)
                    sub = (
                        SUB2
                        if rec["resourceId"].lower().startswith(f"/subscriptions/{SUB2}")
                        else SUB
                    )
                    disconnected_in.setdefault(sub, []).append(at)
    return Run(degraded, cleared, disconnected, disconnected_in, engine, decider, samples)


def test_an_uplink_that_degrades_warns_at_least_five_minutes_before_its_first_disconnected() -> (
    None
):
    run = simulate(3.0, degrade="westasia", degrade_at=5400.0)
    first_off = min(run.disconnected["westasia"])
    warnings = [at for scope, at in run.degraded if scope == "location=westasia"]
    assert warnings, f"no warning; disconnected from {first_off - T0:.0f}s"
    lead = first_off - warnings[0]
    print(f"ScopeDegraded {warnings[0] - T0:.0f}s, first Disconnected {first_off - T0:.0f}s: "
          f"lead {lead:.0f}s ({lead / 60:.1f} production minutes)")  # fmt: skip
    assert lead >= 300.0
    # only the degrading location warned
    assert {scope for scope, _ in run.degraded} == {"location=westasia"}
    # its late machines show before the deadline: field and per-location count
    assert run.engine.late_by_location().get("westeurope", 0) <= 2


def test_an_ordinary_fleet_raises_nothing_for_an_hour() -> None:
    # the first hour teaches the baselines; the second is the hour that must stay quiet
    for seed in (1, 2, 3):
        run = simulate(2.0, seed=seed)
        assert run.degraded == [], (seed, run.degraded)
        assert run.disconnected == {}, seed
        # every location was judged every interval after the warm-up
        tracks = run.decider.detector.tracks
        assert {s: t.intervals for s, t in tracks.items()} == {
            **{f"location={loc}": 23 for loc in LOCATIONS},
            f"subscription={SUB}": 23,
            f"subscription={SUB2}": 0,  # 15 machines: fewer than degraded_min_machines
        }


def test_a_degraded_location_in_maintenance_raises_nothing() -> None:
    w = Window(
        id="mw-asia",
        selector=Selector(location="westasia"),
        start=T0 + 5000.0,
        end=T0 + 4 * 3600.0,
        recurrence=None,
        reason="uplink work",
        created_by="test",
        created_at=T0,
    )
    run = simulate(3.0, degrade="westasia", degrade_at=5400.0, windows=[w])
    assert [s for s, _ in run.degraded if s == "location=westasia"] == []


def test_late_machines_are_a_field_and_a_count_not_a_status() -> None:
    settings = _settings()
    engine = Engine(settings, fp_seed=1)
    rid = resource_id(SUB, "rg", "vm-late")
    key = rid.lower()
    p = engine.partition_of(key)
    value = heartbeat_payload(rid, location="westus2", os_type="linux", agent_version="1.0",
                              sent_at=T0, sequence=1)  # fmt: skip
    engine.handle_message(p, 0, key.encode(), value, T0, topic="hb", wall_now=T0)
    engine.handle_tick(p, T0 + 400, {}, wall_now=T0 + 400)
    assert not engine.is_late(key)  # 400 s: one heartbeat overdue, within the grace
    engine.handle_tick(p, T0 + 451, {}, wall_now=T0 + 451)
    assert engine.is_late(key)  # past late_after (1.5 x interval)
    assert engine.late_by_location() == {"westus2": 1}
    m = engine.machine(key)
    assert m is not None and m.state.status.value == "Connected"
    engine.handle_message(p, 1, key.encode(), value.replace(b'"sequence":1', b'"sequence":2'),
                          T0 + 460, topic="hb", wall_now=T0 + 460)  # fmt: skip
    assert not engine.is_late(key) and engine.late_by_location() == {}
    # late_after as a setting
    assert Engine(_settings(late_after="10m")).late_after == 600.0
    with pytest.raises(Exception, match="late_after"):
        _settings(late_after="20m")  # not below disconnect_after


def test_the_clock_offset_baseline_follows_the_fastest_delivery() -> None:
    b = float("inf")
    for raw in (-300.2, -300.1, -300.4, -299.0):
        b = baseline(b, raw)
    assert -300.4 <= b < -300.3  # a skewed clock (-300 s) reads as no delay
    # a slower uplink shows as delay for many heartbeats: the baseline creeps slowly
    for _ in range(10):
        b = baseline(b, -240.0)
    assert -240.0 - b > 50.0


def test_the_rule_needs_a_baseline_a_floor_and_time() -> None:
    rule = Rule(factor=3.0, sustain=300.0, min_machines=20, min_delay=30.0)
    d = Detector(rule)
    quiet = ScopeSample(100, 0, tuple([0, 50, 50] + [0] * (len(DELAY_BOUNDS) - 2)))
    slow = ScopeSample(100, 0, tuple([0] * 10 + [100] + [0] * (len(DELAY_BOUNDS) - 10)))
    late = ScopeSample(100, 10, quiet.delays)
    one_late = ScopeSample(100, 1, quiet.delays)
    small = ScopeSample(5, 5, slow.delays)
    t = T0
    for _ in range(3):  # warm-up: the first intervals only teach the baseline
        t += 300
        assert d.step(t, {"location=a": slow}) == []
    d = Detector(rule)
    for _ in range(4):
        t += 300
        assert d.step(t, {"location=a": quiet, "location=b": small}) == []
    t += 300
    assert d.step(t, {"location=a": one_late}) == []  # 1 % late: under the floor
    t += 300
    assert d.step(t, {"location=a": slow}) == []  # above, not yet for degraded_for
    t += 300
    [warn] = d.step(t, {"location=a": slow})
    assert warn.type == "ScopeDegraded" and warn.signal == "deliveryDelay"
    t += 300
    assert d.step(t, {"location=a": late}) == []  # late share keeps it degraded
    t += 300
    assert d.step(t, {"location=a": quiet}) == []  # below: clears after degraded_for
    t += 300
    [done] = d.step(t, {"location=a": quiet})
    assert done.type == "ScopeDegradationCleared"
    # in maintenance: a degraded scope clears at once and raises nothing
    d2 = Detector(rule)
    for _ in range(4):
        t += 300
        d2.step(t, {"location=a": quiet})
    for _ in range(3):
        t += 300
        assert d2.step(t, {"location=a": slow}, planned=["location=a"]) == []


def test_the_deciders_state_survives_a_takeover() -> None:
    settings = _settings()
    d = Decider(settings)
    d.detector.step(T0, {"location=a": ScopeSample(100, 0, (1,) * (len(DELAY_BOUNDS) + 1))})
    d.judged = T0
    other = Decider(settings)
    other.restore(d.encode())
    assert other.judged == T0 and other.detector.tracks == d.detector.tracks
    other.restore(b"not json")  # unreadable: left as it was
    assert other.judged == T0


def test_a_subscription_that_degrades_warns_as_a_subscription_before_its_first_disconnected() -> (
    None
):
    # 5 machines in each location: 8 % of each, so the locations' p90 stays at baseline
    run = simulate(3.0, degrade_subscription=SUB2, degrade_at=5400.0, degraded_min_machines=10)
    first_off = min(run.disconnected_in[SUB2])
    warnings = [at for scope, at in run.degraded if scope == f"subscription={SUB2}"]
    assert warnings, f"no warning; disconnected from {first_off - T0:.0f}s: {run.degraded}"
    lead = first_off - warnings[0]
    assert lead >= 300.0, lead
    # the subscription warned first; the other subscription never did
    assert min(at for _, at in run.degraded) == warnings[0]
    assert f"subscription={SUB}" not in {scope for scope, _ in run.degraded}
    # a replay judges the same samples alike (arcbeat replay's merge of the partitions')
    replayed = replay_decisions(_settings(degraded_min_machines=10), run.samples, {})
    for kind, live in (("ScopeDegraded", run.degraded), ("ScopeDegradationCleared", run.cleared)):
        assert [d.scope for d in replayed if d.type == kind] == [scope for scope, _ in live]


def test_a_location_that_degrades_warns_for_its_subscriptions_parts() -> None:
    # every subscription has machines in westasia: the location warns, no subscription does
    run = simulate(3.0, degrade="westasia", degrade_at=5400.0, degraded_min_machines=10)
    assert {scope for scope, _ in run.degraded} == {"location=westasia"}


def test_a_subscription_in_maintenance_raises_nothing() -> None:
    w = Window(
        id="mw-sub2",
        selector=Selector(subscription_id=SUB2.upper()),  # compared lower-cased
        start=T0 + 5000.0,
        end=T0 + 4 * 3600.0,
        recurrence=None,
        reason="proxy change",
        created_by="test",
        created_at=T0,
    )
    run = simulate(
        3.0, degrade_subscription=SUB2, degrade_at=5400.0, windows=[w], degraded_min_machines=10
    )
    assert [s for s, _ in run.degraded if s.startswith("subscription=")] == []


def test_without_delivery_delays_the_late_share_alone_warns() -> None:
    """delivery_delays=false: no delay is counted on either path; a location whose machines
    go missing still warns, on its late share, but no longer ahead of its first Disconnected
    (here about two production minutes after it: the delays were the early signal)."""
    run = simulate(3.0, degrade="westasia", degrade_at=5400.0, delivery_delays=False)
    assert not run.engine.delays
    assert all(not any(s.delays) for sample in run.samples for s in sample.scopes.values())
    assert not run.engine.early.cumulative  # arcbeat_delivery_delay_seconds: no series
    warnings = [at for scope, at in run.degraded if scope == "location=westasia"]
    assert warnings, run.degraded
    print(f"late share alone: warned {warnings[0] - min(run.disconnected['westasia']):+.0f}s "
          "from the first Disconnected")  # fmt: skip
    assert {scope for scope, _ in run.degraded} == {"location=westasia"}
    assert Engine(_settings()).delays  # on by default
