"""The timing wheel and the mass-silence arithmetic (arcbeat.streams.decide.deadlines). Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from arcbeat.streams.decide.deadlines import (
    DeadlineWheel,
    ScopeCounts,
    late_after,
    scope_is_silent,
    sum_counts,
)
from tests.support.examples import examples

# ---------------------------------------------------------------- wheel: semantics


def test_granularity_must_be_positive() -> None:
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="granularity"):
            DeadlineWheel[str](bad)


def test_empty_wheel() -> None:
    w = DeadlineWheel[str]()
    assert w.pop_due(1e12) == [] and len(w) == 0 and w.next_at() is None
    assert "a" not in w and list(w) == []


def test_pop_due_returns_keys_due_at_or_before_now() -> None:
    w = DeadlineWheel[str](1.0)
    w.schedule("a", 10.0)
    w.schedule("b", 12.0)
    w.schedule("c", 30.0)
    assert w.pop_due(9.75) == []
    assert w.pop_due(10.0) == ["a"]  # due exactly now
    assert "a" not in w and len(w) == 2
    assert w.pop_due(10.0) == []  # popped once only
    assert sorted(w.pop_due(29.0)) == ["b"]
    assert w.next_at() == 30.0
    assert w.pop_due(1e9) == ["c"]
    assert len(w) == 0 and w.next_at() is None


def test_a_bucket_is_due_from_its_start() -> None:
    # Lazy by design: a key may come back up to one granularity early; the caller
    # re-evaluates it and books it again at its real deadline.
    w = DeadlineWheel[str](10.0)
    w.schedule("a", 19.5)
    assert w.pop_due(9.99) == []
    assert w.next_at() == 10.0
    assert w.pop_due(10.0) == ["a"]


def test_key_is_booked_at_most_once() -> None:
    w = DeadlineWheel[str](1.0)
    for t in (5.0, 7.0, 5.0, 6.0, 100.0):
        w.schedule("a", t)
    assert len(w) == 1 and list(w) == ["a"]
    assert w.pop_due(1e9) == ["a"]


def test_rescheduling_earlier_moves_the_key() -> None:
    w = DeadlineWheel[str](1.0)
    w.schedule("a", 50.0)
    w.schedule("a", 20.0)
    assert w.next_at() == 20.0
    assert w.pop_due(20.0) == ["a"]
    assert w.pop_due(50.0) == []  # the old booking left nothing behind


def test_rescheduling_later_keeps_the_earlier_booking() -> None:
    w = DeadlineWheel[str](1.0)
    w.schedule("a", 20.0)
    w.schedule("a", 50.0)
    assert w.next_at() == 20.0
    assert w.pop_due(20.0) == ["a"]
    assert "a" not in w


def test_unschedule_removes() -> None:
    w = DeadlineWheel[str](1.0)
    w.schedule("a", 5.0)
    w.schedule("b", 5.0)
    w.unschedule("a")
    w.unschedule("a")  # twice is fine
    w.unschedule("never")  # unknown is fine
    assert "a" not in w and len(w) == 1
    assert w.pop_due(10.0) == ["b"]
    w.schedule("c", 7.0)
    w.unschedule("c")
    assert w.next_at() is None and w.pop_due(10.0) == []


def test_reschedule_into_an_emptied_bucket() -> None:
    w = DeadlineWheel[str](1.0)
    w.schedule("a", 5.0)
    w.unschedule("a")
    w.schedule("b", 5.5)
    assert w.next_at() == 5.0
    assert w.pop_due(5.0) == ["b"]


def test_rescheduled_after_pop_is_due_again() -> None:
    w = DeadlineWheel[str](1.0)
    w.schedule("a", 5.0)
    assert w.pop_due(5.0) == ["a"]
    w.schedule("a", 8.0)
    assert w.pop_due(7.0) == [] and w.pop_due(8.0) == ["a"]


def test_times_before_now_are_due_at_once_and_negative_times_work() -> None:
    w = DeadlineWheel[str](0.5)
    w.schedule("past", -3.2)
    w.schedule("zero", 0.0)
    assert w.next_at() == -3.5
    assert sorted(w.pop_due(0.0)) == ["past", "zero"]


def test_fractional_granularity() -> None:
    w = DeadlineWheel[str](0.25)
    w.schedule("a", 1.3)  # bucket [1.25, 1.5)
    assert w.pop_due(1.24) == []
    assert w.next_at() == 1.25
    assert w.pop_due(1.25) == ["a"]


# ---------------------------------------------------------------- wheel: against a model


@dataclass(frozen=True)
class Schedule:
    key: int
    at: float


@dataclass(frozen=True)
class Unschedule:
    key: int


@dataclass(frozen=True)
class Pop:
    now: float


WheelOp = Schedule | Unschedule | Pop

times = st.one_of(
    st.integers(0, 400).map(lambda n: n / 4),
    st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
)
keys = st.integers(0, 15)
wheel_ops = st.lists(
    st.one_of(
        st.builds(Schedule, keys, times),
        st.builds(Unschedule, keys),
        st.builds(Pop, times),
    ),
    max_size=80,
)
granularities = st.sampled_from([0.1, 0.25, 1.0, 2.5, 7.0, 60.0])


@dataclass
class NaiveWheel:
    """key -> bucket number; the earliest booking wins; pop everything in a bucket <= now's."""

    g: float
    booked: dict[int, int] = field(default_factory=dict)

    def bucket(self, t: float) -> int:
        return math.floor(t / self.g)

    def schedule(self, key: int, at: float) -> None:
        b = self.bucket(at)
        self.booked[key] = min(b, self.booked.get(key, b))

    def unschedule(self, key: int) -> None:
        self.booked.pop(key, None)

    def pop_due(self, now: float) -> set[int]:
        due = {k for k, b in self.booked.items() if b <= self.bucket(now)}
        for k in due:
            del self.booked[k]
        return due

    def next_at(self) -> float | None:
        return min(self.booked.values()) * self.g if self.booked else None


@settings(max_examples=examples(300), deadline=None)
@given(granularities, wheel_ops)
def test_wheel_matches_naive_model(g: float, ops: list[WheelOp]) -> None:
    wheel = DeadlineWheel[int](g)
    model = NaiveWheel(g)
    for op in ops:
        if isinstance(op, Schedule):
            wheel.schedule(op.key, op.at)
            model.schedule(op.key, op.at)
        elif isinstance(op, Unschedule):
            wheel.unschedule(op.key)
            model.unschedule(op.key)
        else:
            got = wheel.pop_due(op.now)
            assert len(got) == len(set(got)), "a key was returned twice"
            assert set(got) == model.pop_due(op.now)
        assert len(wheel) == len(model.booked)
        assert set(wheel) == set(model.booked)
        for k in range(16):
            assert (k in wheel) == (k in model.booked)
        assert wheel.next_at() == model.next_at()
    # drain: everything comes back exactly once
    assert sorted(wheel.pop_due(2e9)) == sorted(model.booked)
    assert len(wheel) == 0


@settings(max_examples=examples(200), deadline=None)
@given(granularities, wheel_ops, st.lists(times, min_size=1, max_size=10))
def test_internal_heap_and_buckets_stay_in_step(
    g: float, ops: list[WheelOp], nows: list[float]
) -> None:
    """Every bucket is on the heap exactly once, and every booked key is in its bucket."""
    wheel = DeadlineWheel[int](g)
    for op in ops:
        if isinstance(op, Schedule):
            wheel.schedule(op.key, op.at)
        elif isinstance(op, Unschedule):
            wheel.unschedule(op.key)
        else:
            wheel.pop_due(op.now)
        heap, buckets, at = wheel._heap, wheel._buckets, wheel._at
        assert sorted(heap) == sorted(buckets) and len(heap) == len(set(heap))
        for k, b in at.items():
            assert k in buckets[b]
        assert sum(len(s) for s in buckets.values()) == len(at)
    for now in sorted(nows):
        wheel.pop_due(now)
        assert all(b > wheel._bucket(now) for b in wheel._heap)


# ---------------------------------------------------------------- wheel: cost


class CountingKey:
    """A key that counts every hash/equality the wheel spends on it."""

    __slots__ = ("n",)
    touches = 0

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        CountingKey.touches += 1
        return hash(self.n)

    def __eq__(self, other: object) -> bool:
        CountingKey.touches += 1
        return isinstance(other, CountingKey) and other.n == self.n


def test_pop_due_work_grows_with_due_keys_not_fleet() -> None:
    g = 1.0
    w = DeadlineWheel[CountingKey](g)
    fleet = 100_000
    far_buckets = 5_000
    for i in range(fleet):  # far future, spread over many buckets
        w.schedule(CountingKey(i), 10_000.0 + (i % far_buckets) * g)
    due = [CountingKey(fleet + i) for i in range(40)]
    for i, k in enumerate(due):  # 4 due buckets
        w.schedule(k, 100.0 + (i % 4) * g)
    heap_before, buckets_before = len(w._heap), len(w._buckets)
    assert heap_before == buckets_before == far_buckets + 4

    CountingKey.touches = 0
    got = w.pop_due(103.0)
    assert {k.n for k in got} == {k.n for k in due}
    # Only the 4 due buckets were taken off the heap; the fleet's buckets are untouched.
    assert len(w._heap) == heap_before - 4 and len(w._buckets) == buckets_before - 4
    assert len(w) == fleet
    # A few dict operations per due key, none per far-future key.
    assert CountingKey.touches <= 4 * len(due), CountingKey.touches

    CountingKey.touches = 0
    assert w.pop_due(9_999.0) == []
    assert CountingKey.touches == 0 and len(w._heap) == far_buckets
    assert w.next_at() == 10_000.0


def test_pop_due_skips_emptied_buckets_without_touching_keys() -> None:
    w = DeadlineWheel[CountingKey](1.0)
    ks = [CountingKey(i) for i in range(1000)]
    for i, k in enumerate(ks):
        w.schedule(k, float(i))
    for k in ks[:900]:  # heartbeats moved them: unscheduled, buckets left empty (lazy)
        w.unschedule(k)
    CountingKey.touches = 0
    got = w.pop_due(950.0)
    assert sorted(k.n for k in got) == list(range(900, 951))
    assert CountingKey.touches <= 4 * len(got)
    assert len(w._heap) == 1000 - 951


# ---------------------------------------------------------------- late_after


@pytest.mark.parametrize(
    ("interval", "disconnect_after", "expected"),
    [
        (300.0, 900.0, 450.0),  # defaults: both rules agree
        (300.0, 1800.0, 450.0),  # 1.5 intervals is the earlier sign
        (300.0, 600.0, 300.0),  # half the deadline is the earlier sign
        (1.0, 2.0, 1.0),
        (2.0, 10.0, 3.0),
    ],
)
def test_late_after(interval: float, disconnect_after: float, expected: float) -> None:
    assert late_after(interval, disconnect_after) == expected


@given(st.floats(0.01, 1e6), st.floats(2, 100))
def test_late_comes_after_a_missed_heartbeat_and_well_before_the_deadline(
    interval: float, factor: float
) -> None:
    disconnect_after = interval * factor  # settings enforce disconnect_after >= 2 x interval
    late = late_after(interval, disconnect_after)
    assert interval <= late * (1 + 1e-12)
    assert late <= disconnect_after / 2 and late <= 1.5 * interval


# ---------------------------------------------------------------- scope_is_silent, sum_counts


@pytest.mark.parametrize(
    ("connected", "late", "ratio", "min_machines", "silent"),
    [
        (40, 20, 0.5, 20, True),  # both boundaries met exactly
        (40, 19, 0.5, 19, False),  # ratio one short
        (41, 20, 0.5, 20, False),  # 20 < 20.5
        (41, 21, 0.5, 20, True),
        (30, 19, 0.5, 20, False),  # ratio met, min_machines one short
        (30, 20, 0.5, 20, True),
        (10, 10, 0.5, 20, False),  # a small scope never goes silent
        (100, 100, 1.0, 20, True),
        (100, 99, 1.0, 20, False),
        (0, 0, 0.5, 1, False),  # empty scope
        (100_000, 50_000, 0.5, 20, True),
        (100_000, 49_999, 0.5, 20, False),
    ],
)
def test_scope_is_silent_boundaries(
    connected: int, late: int, ratio: float, min_machines: int, silent: bool
) -> None:
    counts = ScopeCounts(connected=connected, late=late)
    assert scope_is_silent(counts, ratio=ratio, min_machines=min_machines) is silent


@settings(max_examples=examples(300), deadline=None)
@given(
    st.integers(1, 100),  # ratio in percent, as an operator writes it (0.55)
    st.integers(0, 2000),
    st.data(),
    st.integers(1, 50),
)
@example(55, 100, None, 20)  # 55 of 100 at outage_ratio 0.55 (Kubernetes' own threshold)
def test_scope_is_silent_at_least_ratio_exactly(
    percent: int, connected: int, data: st.DataObject | None, min_machines: int
) -> None:
    """'At least outage_ratio' must hold for the decimal ratio the operator configured."""
    ratio = percent / 100
    exact = Fraction(percent, 100) * connected
    boundary = math.ceil(exact)  # the fewest late machines that reach the ratio
    candidates = {boundary - 1, boundary, boundary + 1}
    if data is not None:
        candidates.add(data.draw(st.integers(0, connected), label="late"))
    for late in sorted(c for c in candidates if 0 <= c <= connected):
        want = late >= min_machines and late >= exact
        got = scope_is_silent(ScopeCounts(connected, late), ratio=ratio, min_machines=min_machines)
        assert got is want, (
            f"ratio={ratio} connected={connected} late={late} min={min_machines}: "
            f"{late}/{connected} {'reaches' if late >= exact else 'misses'} the ratio, "
            f"got silent={got}"
        )


def test_sum_counts() -> None:
    assert sum_counts([]) == ScopeCounts(0, 0)
    assert sum_counts([ScopeCounts(10, 3)]) == ScopeCounts(10, 3)
    assert sum_counts([ScopeCounts(10, 3), ScopeCounts(0, 0), ScopeCounts(7, 7)]) == (
        ScopeCounts(17, 10)
    )


@given(
    st.lists(st.builds(ScopeCounts, st.integers(0, 10_000), st.integers(0, 10_000)), max_size=24)
)
def test_sum_counts_is_fieldwise_and_order_free(parts: list[ScopeCounts]) -> None:
    total = sum_counts(parts)
    assert total.connected == sum(p.connected for p in parts)
    assert total.late == sum(p.late for p in parts)
    assert sum_counts(list(reversed(parts))) == total


def test_silence_is_decided_on_the_fleet_total_not_per_partition() -> None:
    # 4 workers, each below min_machines alone, together past both thresholds.
    parts = [ScopeCounts(20, 12)] * 4
    assert not any(scope_is_silent(p, ratio=0.5, min_machines=20) for p in parts)
    assert scope_is_silent(sum_counts(parts), ratio=0.5, min_machines=20)


def test_scope_counts_is_immutable() -> None:
    c = ScopeCounts(1, 0)
    with pytest.raises(AttributeError):
        c.late = 1  # type: ignore[misc, unused-ignore]
