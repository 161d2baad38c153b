"""The fleet simulator: pure parts (determinism, memory), then one run against the real broker."""

from __future__ import annotations

import asyncio
import random
import tracemalloc
import uuid
from collections import Counter
from typing import Any, cast

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from arcbeat.deploy.agents.groundtruth import (
    Silence,
    delivered_arrivals,
    expected_silences,
    read_groundtruth,
)
from arcbeat.deploy.agents.payloads import PayloadFactory, malformed_message
from arcbeat.deploy.agents.scenarios import (
    MALFORMED_KINDS,
    Fleet,
    FleetSpec,
    MalformedKind,
    Scenario,
    build_schedule,
)
from arcbeat.deploy.agents.simulate import Simulator, simulate
from arcbeat.streams.decide.partitioner import KeyPartitioner
from arcbeat.streams.decide.records import Heartbeat, Reject, decode_heartbeat
from arcbeat.streams.decide.resource_ids import parse_resource_id
from arcbeat.streams.settings import Settings

ALL = ["outages", "flap", "disconnect", "location-silent", "duplicates", "malformed", "skew"]


# ---------------------------------------------------------------------------------------------
# fleet


def test_fleet_is_deterministic() -> None:
    a, b = Fleet(FleetSpec(machines=500, seed=7)), Fleet(FleetSpec(machines=500, seed=7))
    assert [a.machine(i) for i in range(500)] == [b.machine(i) for i in range(500)]
    assert [a.phase(i) for i in range(500)] == [b.phase(i) for i in range(500)]
    c = Fleet(FleetSpec(machines=500, seed=8))
    assert [a.machine(i) for i in range(50)] != [c.machine(i) for i in range(50)]


def test_fleet_identities_are_valid_unique_and_mixed_case() -> None:
    fleet = Fleet(FleetSpec(machines=3000, seed=1))
    keys = set()
    for i in range(len(fleet)):
        m = fleet.machine(i)
        rid = parse_resource_id(m.resource_id)
        assert rid.key == m.key == fleet.key(i)
        assert (rid.subscription_id, rid.resource_group) == (m.subscription_id, m.resource_group)
        keys.add(m.key)
    assert len(keys) == len(fleet)
    assert any(fleet.machine(i).machine_name.isupper() for i in range(10))
    assert any(not fleet.machine(i).resource_group.islower() for i in range(50))
    spread = Counter(fleet.location(i) for i in range(len(fleet)))
    assert set(spread) == set(FleetSpec().locations)
    assert min(spread.values()) > 800  # roughly uniform
    assert len({fleet.machine(i).subscription_id for i in range(len(fleet))}) == 2
    assert len({fleet.machine(i).os_name for i in range(len(fleet))}) > 5


def test_phases_spread_uniformly_over_one_interval() -> None:
    n = 1000
    fleet = Fleet(FleetSpec(machines=n, seed=3))
    phases = [fleet.phase(i) for i in range(n)]
    assert phases == sorted(phases)  # the sender walks the fleet in index order
    for i, p in enumerate(phases):
        assert i / n <= p < (i + 1) / n  # stratified: one machine per 1/n slot


def test_million_machine_fleet_fits_in_memory(capsys: pytest.CaptureFixture[str]) -> None:
    n = 1_000_000
    settings = Settings()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fleet = Fleet(FleetSpec(machines=n, seed=1))
        schedule = build_schedule(
            fleet, Scenario(), interval=1.0, disconnect_after=3.0, duration=60.0
        )
        sim = Simulator(
            settings,
            fleet,
            schedule,
            interval=1.0,
            topic="t",
            duration=60.0,
            until_count=None,
            groundtruth=None,
            progress=None,
            progress_every=5.0,
            seed=1,
        )
        used, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_machine = (used - before) / n
    with capsys.disabled():
        print(
            f"\n[simulate] 1,000,000-machine fleet + simulator state: "
            f"{per_machine:.1f} bytes/machine (peak {(peak - before) / n:.1f})"
        )
    assert len(sim.state) == n
    assert per_machine < 64  # a dict of objects would be ~1 KiB per machine


# ---------------------------------------------------------------------------------------------
# scenarios


def _schedule(seed: int, names: list[str] = ALL, n: int = 400, **knobs: Any) -> Any:
    fleet = Fleet(FleetSpec(machines=n, seed=seed))
    scenario = Scenario.named(names, **knobs)
    return build_schedule(fleet, scenario, interval=1.0, disconnect_after=3.0, duration=60.0)


def test_schedule_is_deterministic() -> None:
    assert _schedule(5) == _schedule(5)
    assert _schedule(5).actions != _schedule(6).actions


def test_schedule_shape() -> None:
    s = _schedule(2, outage_fraction=0.1, outage_permanent=0.25, flap_machines=2)
    times = [a.at for a in s.actions]
    assert times == sorted(times)
    by_reason: dict[str, set[int]] = {}
    for a in s.actions:
        by_reason.setdefault(a.reason, set()).add(a.machine)
    outage = by_reason["outage"] | by_reason["outage-permanent"]
    assert len(outage) == 40
    assert len(by_reason["outage-permanent"]) == 10
    assert len(by_reason["flap"]) == 2
    assert len(by_reason["disconnect"]) == 4
    # the per-machine scenarios use disjoint machines
    sets = [outage, by_reason["flap"], by_reason["disconnect"]]
    assert sum(map(len, sets)) == len(set().union(*sets))
    # permanent outages never resume; others resume after outage_duration
    for m in by_reason["outage-permanent"]:
        assert [a.kind for a in s.actions if a.machine == m] == ["stop"]
    sc = s.scenario
    for m in by_reason["outage"]:
        stop, resume = (a for a in s.actions if a.machine == m)
        assert (stop.kind, resume.kind) == ("stop", "resume")
        assert resume.at - stop.at == pytest.approx(sc.outage_duration)
    # flapping machines alternate, silent long enough to be disconnected each time
    for m in by_reason["flap"]:
        acts = [a for a in s.actions if a.machine == m]
        assert len(acts) >= 4
        assert [a.kind for a in acts] == ["stop", "resume"] * (len(acts) // 2)
        for stop, resume in zip(acts[::2], acts[1::2], strict=True):
            assert resume.at - stop.at == pytest.approx(sc.flap_down)
            assert sc.flap_down > 3.0
    assert s.skewed and all(abs(v) == sc.skew_seconds for v in s.skewed.values())


def test_location_silent_schedule() -> None:
    s = _schedule(4, ["location-silent"], silent_location="westasia", silent_dead_fraction=0.5)
    fleet = Fleet(FleetSpec(machines=400, seed=4))
    members = set(fleet.in_location("westasia"))
    dead = {a.machine for a in s.actions}
    assert dead <= members
    assert len(dead) == round(0.5 * len(members))
    assert s.silent_window == (2.0, 2.0 + 3.0 + 2 * 1.0)


def test_subscription_degrades_schedule() -> None:
    """One subscription's machines, in every location, and no location's."""
    fleet = Fleet(FleetSpec(machines=400, seed=4, subscriptions=8))
    sub = fleet.subscription_ids[3]
    for given_id, index in (("", 0), (sub.upper(), 3)):
        scenario = Scenario.named(["subscription-degrades"], degrade_subscription=given_id)
        s = build_schedule(fleet, scenario, interval=1.0, disconnect_after=3.0, duration=60.0)
        assert s.degrade_subscription == index and s.degrade_location is None
        assert s.scenario.degrade_subscription == fleet.subscription_ids[index]
    sim = Simulator(
        Settings(), fleet, s, interval=1.0, topic="t", duration=60.0, until_count=None,
        groundtruth=None, progress=None, progress_every=5.0, seed=1,
    )  # fmt: skip
    degrading = {m for m in range(len(fleet)) if sim._degrading(m)}
    assert degrading == {m for m in range(len(fleet)) if fleet.machine(m).subscription_id == sub}
    assert len({fleet.location(m) for m in degrading}) == len(fleet.spec.locations)
    with pytest.raises(ValueError, match="degrade_subscription 'nope' is not one of the fleet"):
        build_schedule(
            fleet,
            Scenario.named(["subscription-degrades"], degrade_subscription="nope"),
            interval=1.0,
            disconnect_after=3.0,
            duration=60.0,
        )


def test_scenario_validation() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        Scenario.named(["nope"])
    with pytest.raises(ValueError, match="outage_fraction must be in"):
        Scenario(outage_fraction=1.5)
    with pytest.raises(ValueError, match="malformed kinds"):
        Scenario(malformed_kinds=cast(Any, ("weird",)))
    with pytest.raises(ValueError, match="silent location 'mars'"):
        _schedule(1, ["location-silent"], silent_location="mars")


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malformed_messages_are_rejected_for_their_reason(kind: MalformedKind) -> None:
    settings = Settings()
    fleet = Fleet(FleetSpec(machines=10))
    rng = random.Random(1)
    for _ in range(20):
        raw, key = malformed_message(fleet, 3, kind, 5, 1.7e9, rng, settings)
        verdict = decode_heartbeat(
            raw,
            key,
            max_bytes=settings.input.max_message_bytes,
            accepts_region=settings.input.accepts_region,
        )
        assert isinstance(verdict, Reject)
        if kind != "random_bytes":
            assert verdict.reason == kind


def test_payload_factory_makes_valid_heartbeats() -> None:
    fleet = Fleet(FleetSpec(machines=100, seed=2))
    factory = PayloadFactory(fleet)
    for m in range(100):
        body, key = factory.payload(m, "heartbeat", b"2024-05-01T12:00:00.000Z", 9)
        hb = decode_heartbeat(
            body, key, max_bytes=8192, accepts_region=Settings().input.accepts_region
        )
        assert isinstance(hb, Heartbeat), hb
        assert hb.resource_id == fleet.resource_id(m)
        assert hb.sequence == 9
        assert hb.tags == fleet.tags(m)


@given(st.binary(max_size=300), st.integers(1, 64))
def test_key_partitioner_matches_kafka(key: bytes, partitions: int) -> None:
    everything = list(range(partitions))
    assert KeyPartitioner(partitions)(key) == DefaultPartitioner()(key, everything, everything)


def test_key_partitioner_on_fleet_keys() -> None:
    fleet = Fleet(FleetSpec(machines=2000, seed=9))
    kp, ref, parts = KeyPartitioner(12), DefaultPartitioner(), list(range(12))
    for i in range(len(fleet)):
        key = fleet.key(i).encode()
        assert kp(key) == ref(key, parts, parts)


# ---------------------------------------------------------------------------------------------
# ground truth


def _line(t: float, event: str, key: str, **extra: Any) -> dict[str, Any]:
    return {"t": t, "event": event, "key": key, "appendedAt": t + 0.01, **extra}


def test_expected_silences() -> None:
    truth = [
        {"t": 0.0, "event": "header"},
        _line(1, "connect", "a"),
        _line(2, "heartbeat", "a"),
        _line(9, "duplicate", "a"),  # never counts as liveness
        _line(10, "heartbeat", "a"),
        _line(11, "heartbeat", "a"),
        _line(1, "connect", "b"),
        _line(2, "heartbeat", "b"),
        _line(3, "malformed", "b", reason="schema"),
        _line(1, "connect", "c"),
        _line(2, "disconnect", "c"),  # deleted: its silence is not a Disconnected
        {"t": 2.5, "event": "heartbeat", "key": "d", "error": "KafkaTimeoutError()"},
        {"t": 3.0, "event": "stop", "key": "b", "reason": "outage"},
        {"t": 20.0, "event": "end"},
    ]
    got = expected_silences(truth, 3.0)
    assert got == {
        "a": [Silence("a", 2.01, 10.01), Silence("a", 11.01, None)],
        "b": [Silence("b", 2.01, None)],
    }
    assert got["a"][0].deadline(3.0) == pytest.approx(5.01)
    arrivals, gone, end = delivered_arrivals(truth)
    assert set(arrivals) == {"a", "b", "c"}
    assert gone == {"c": 2.01}
    assert end == 20.0


# ---------------------------------------------------------------------------------------------
# against the broker


async def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every record of ``topic``, up to the end offsets as of now."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not consumer.assignment():  # without a group, every partition is assigned
            assert loop.time() < deadline, f"no partitions of {topic} assigned"
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        end = await consumer.end_offsets(partitions)
        records: list[Any] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            assert loop.time() < deadline, "timed out reading back"
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


@pytest.mark.services
async def test_simulation_ground_truth_matches_the_topic(stack: Any, tmp_path: Any) -> None:
    prefix = f"test-sim-{uuid.uuid4().hex[:10]}"
    settings = stack.settings.replace(
        topic_prefix=prefix, heartbeat_interval=0.5, disconnect_after=1.0, partitions=4
    )
    await asyncio.to_thread(stack.ensure_topics, prefix, 4)
    truth_path = tmp_path / "truth.jsonl"
    scenario = Scenario.named(
        ALL,
        outage_fraction=0.1,
        outage_window=(0.5, 1.5),
        duplicate_rate=0.1,
        malformed_rate=0.1,
        skew_fraction=0.1,
        disconnect_fraction=0.04,
        flap_machines=2,
        silent_location="westasia",
        silent_at=1.0,
        silent_for=2.0,
    )
    result = await simulate(
        settings,
        fleet=FleetSpec(machines=50, seed=11),
        scenario=scenario,
        duration=4.0,
        groundtruth=truth_path,
        progress=None,
        stop_event=asyncio.Event(),
    )
    assert result.errors == 0
    assert result.by_event["connect"] == 50

    truth = list(read_groundtruth(truth_path))
    assert truth[0]["event"] == "header" and truth[-1]["event"] == "end"
    sent = {(r["partition"], r["offset"]): r for r in truth if "offset" in r}
    assert len(sent) == result.sent
    records = await read_topic(settings, settings.topics.heartbeats)
    assert len(records) == len(sent)

    seen: Counter[str] = Counter()
    for rec in records:
        line = sent[(rec.partition, rec.offset)]
        seen[line["event"]] += 1
        assert rec.timestamp_type == 1  # LogAppendTime
        assert line["appendedAt"] == rec.timestamp / 1000.0
        verdict = decode_heartbeat(
            rec.value,
            rec.key,
            max_bytes=settings.input.max_message_bytes,
            accepts_region=settings.input.accepts_region,
        )
        if line["event"] == "malformed":
            assert isinstance(verdict, Reject)
            assert verdict.reason == line["reason"]
            continue
        assert isinstance(verdict, Heartbeat), verdict
        assert rec.key == line["key"].encode() == verdict.key.encode()
        assert verdict.resource_id == line["resourceId"]
        assert verdict.location == line["location"]
        assert verdict.sequence == line["sequence"]
        assert verdict.kind == line.get("kind", line["event"])
        if "skew" in line:
            assert abs(verdict.sent_at - line["t"] - line["skew"]) < 1.0
    for event in ("connect", "heartbeat", "duplicate", "malformed", "disconnect"):
        assert seen[event] > 0, f"no {event} in {dict(seen)}"
    actions = Counter(
        (r["event"], r.get("reason")) for r in truth if r["event"] in ("stop", "resume")
    )
    assert actions[("stop", "location-silent")] == 1
    assert actions[("stop", "flap")] >= 2

    # machines that stopped for good early enough have an open silence
    silences = expected_silences(truth, settings.timing.disconnect_after)
    end = truth[-1]["t"]
    early = end - settings.timing.disconnect_after - 2 * settings.timing.heartbeat_interval
    for r in truth:
        if r["event"] == "stop" and r.get("reason") == "outage-permanent" and r["t"] < early:
            assert silences[r["key"]][-1].resumed is None
    # location-silent machines went quiet for longer than disconnect_after, then came back
    westasia = {r["key"] for r in truth if r.get("location") == "westasia" and "key" in r}
    assert any(any(s.resumed is not None for s in silences.get(key, [])) for key in westasia), (
        "no westasia machine shows the silence and the recovery"
    )
    assert orjson.loads(orjson.dumps(truth[0]))["fleet"]["machines"] == 50
