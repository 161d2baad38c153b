"""Per-subscription degradation, pure: a subscription's sample from its parts (its machines
in each location), the parts left out, and the maintenance windows that quiet a subscription."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from arcbeat.streams.decide.degradation import (
    DELAY_BOUNDS,
    Detector,
    Rule,
    ScopeSample,
    part_scope,
    subscriptions,
)
from arcbeat.streams.decide.early_warning import planned_scopes
from arcbeat.streams.decide.maintenance import Selector, Window

SUBS = ("0000000a-0000-0000-0000-000000000001", "0000000b-0000-0000-0000-000000000002")
LOCS = ("westeurope", "westus2", "westasia")
N = len(DELAY_BOUNDS) + 1

samples_st = st.dictionaries(
    st.tuples(st.sampled_from(SUBS), st.sampled_from(LOCS)),
    st.builds(
        ScopeSample,
        st.integers(0, 500),
        st.integers(0, 50),
        st.lists(st.integers(0, 100), min_size=N, max_size=N).map(tuple),
    ),
)


@given(samples_st, st.sets(st.sampled_from(LOCS)))
def test_a_subscription_is_the_sum_of_its_parts_left_in(
    parts: dict[tuple[str, str], ScopeSample], left_out: set[str]
) -> None:
    samples = {part_scope(s, loc): x for (s, loc), x in parts.items()}
    samples["location=westeurope"] = ScopeSample(1000, 0, ())  # locations are not parts
    out = subscriptions(samples, {f"location={loc}" for loc in left_out})
    for sub in SUBS:
        kept = [x for (s, loc), x in parts.items() if s == sub and loc not in left_out]
        if not kept:
            assert f"subscription={sub}" not in out
            continue
        got = out[f"subscription={sub}"]
        assert got.connected == sum(x.connected for x in kept)
        assert got.late == sum(x.late for x in kept)
        assert sum(got.delays) == sum(sum(x.delays) for x in kept)
    assert subscriptions(samples, {"fleet"}) == {}


def test_the_part_scope_names_the_subscription_lower_cased() -> None:
    assert part_scope(SUBS[0].upper(), "westus2") == f"subscription={SUBS[0]}|location=westus2"


@given(st.sampled_from(LOCS))
def test_a_subscription_degraded_in_one_location_only_warns_as_the_subscription(
    loc: str,
) -> None:
    # one subscription slow in one location (too few machines there for the location to move)
    rule = Rule(factor=3.0, sustain=300.0, min_machines=20, min_delay=30.0)
    d = Detector(rule)
    quick = tuple([0, 10, 10] + [0] * (N - 3))
    slow = tuple([0] * 10 + [20] + [0] * (N - 11))
    t = 0.0
    decisions = []
    for i in range(12):
        t += 300.0
        sick = i >= 5
        samples = {}
        for other in LOCS:
            samples[f"location={other}"] = ScopeSample(200, 0, quick)
            samples[part_scope(SUBS[1], other)] = ScopeSample(180, 0, quick)
            samples[part_scope(SUBS[0], other)] = ScopeSample(
                20, 0, slow if sick and other == loc else quick
            )
        decisions += d.step(t, samples)
    assert [(x.type, x.scope) for x in decisions] == [("ScopeDegraded", f"subscription={SUBS[0]}")]
    assert decisions[0].signal == "deliveryDelay"
    # the same in a maintenance window of the subscription: nothing, and the warning ends
    [cleared] = d.step(t + 300.0, samples, planned=[f"subscription={SUBS[0]}"])
    assert cleared.type == "ScopeDegradationCleared"


def test_maintenance_windows_quiet_a_subscription_or_its_part_in_a_location() -> None:
    def window(sel: Selector) -> Window:
        return Window(id="w", selector=sel, start=0.0, end=100.0, recurrence=None,
                      reason="r", created_by="t", created_at=0.0)  # fmt: skip

    assert planned_scopes([window(Selector(subscription_id=SUBS[0].upper()))], 50.0) == {
        f"subscription={SUBS[0]}"
    }
    assert planned_scopes(
        [window(Selector(subscription_id=SUBS[0], location="westus2"))], 50.0
    ) == {part_scope(SUBS[0], "westus2")}
    assert (
        planned_scopes([window(Selector(subscription_id=SUBS[0], resource_group="rg"))], 50.0)
        == set()
    )
    assert planned_scopes([window(Selector(location="westus2"))], 150.0) == set()  # ended


@given(
    st.lists(samples_st, min_size=1, max_size=12),
    st.sampled_from(["fleet", "maintenance", "locations"]),
)
def test_a_silent_or_planned_subscription_raises_nothing(
    intervals: list[dict[tuple[str, str], ScopeSample]], why: str
) -> None:
    rule = Rule(factor=3.0, sustain=300.0, min_machines=20, min_delay=30.0)
    d = Detector(rule)
    quiet = {
        "fleet": {"fleet"},
        "maintenance": {f"subscription={s}" for s in SUBS},
        "locations": {f"location={loc}" for loc in LOCS},  # every location silent or planned
    }[why]
    for i, parts in enumerate(intervals):
        samples = {part_scope(s, loc): x for (s, loc), x in parts.items()}
        decisions = d.step(300.0 * (i + 1), samples, planned=quiet)
        assert not [x for x in decisions if x.scope.startswith("subscription=")], decisions
