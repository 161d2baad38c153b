"""The status machine (arcbeat.streams.decide.status): every table row, then properties.

Pure and I/O-free. Times are multiples of 0.25 s so every comparison below is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from arcbeat.streams.decide.status import (
    Kind,
    MachineState,
    Outcome,
    Reason,
    Status,
    Step,
    Timing,
    Transition,
    deadline,
    is_flapping,
    is_stale,
    on_deadline,
    on_message,
)
from tests.support.examples import examples

T = Timing(
    disconnect_after=900.0, expire_after=3600.0, outage_hold=600.0, window=3600.0, flap_threshold=4
)


def onboard(
    t: float = 1000.0, *, kind: Kind = "heartbeat", seq: int | None = 0, timing: Timing = T
) -> MachineState:
    step = on_message(None, kind, t, t, seq, timing)
    assert step.state is not None
    return step.state


def disconnected(t: float = 1000.0, *, timing: Timing = T) -> MachineState:
    s = on_deadline(onboard(t, timing=timing), t + timing.disconnect_after, timing).state
    assert s is not None and s.status is Status.DISCONNECTED
    return s


def expired(t: float = 1000.0, *, timing: Timing = T) -> MachineState:
    d = disconnected(t, timing=timing)
    s = on_deadline(d, d.last_status_change + timing.expire_after, timing).state
    assert s is not None and s.status is Status.EXPIRED
    return s


def must(step: Step) -> tuple[MachineState, Transition]:
    assert step.state is not None and step.transition is not None
    return step.state, step.transition


# ---------------------------------------------------------------- onboarding


@pytest.mark.parametrize("kind", ["connect", "heartbeat"])
def test_unknown_machine_is_onboarded_by_connect_or_first_heartbeat(kind: Kind) -> None:
    state, tr = must(on_message(None, kind, 1000.0, 995.0, 7, T))
    assert on_message(None, kind, 1000.0, 995.0, 7, T).outcome is Outcome.APPLIED
    assert (tr.previous, tr.status, tr.reason) == (None, Status.CONNECTED, Reason.ONBOARDED)
    assert tr.at == tr.last_heartbeat_at == 1000.0
    assert tr.number == 1 and tr.detection_delay is None
    assert not tr.flapping and not tr.mass_outage
    assert state.status is Status.CONNECTED
    assert state.last_heartbeat_at == state.last_status_change == 1000.0
    assert state.last_sent_at == 995.0 and state.sequence == 7
    assert state.transitions == 1 and state.held_since is None
    assert state.expired_heartbeats == 0


def test_onboarding_without_sequence_keeps_none() -> None:
    state = onboard(seq=None)
    assert state.sequence is None


# ---------------------------------------------------------------- Connected → Disconnected


def test_connected_heartbeat_moves_last_seen_without_transition() -> None:
    s = onboard(1000.0)
    step = on_message(s, "heartbeat", 1300.0, 1299.0, 1, T)
    assert step.transition is None and step.outcome is Outcome.APPLIED
    assert step.state is not None
    assert step.state.last_heartbeat_at == 1300.0
    assert step.state.last_status_change == 1000.0
    assert step.state.sequence == 1 and step.state.last_sent_at == 1299.0
    assert deadline(step.state, T) == 1300.0 + T.disconnect_after


def test_connect_on_connected_machine_acts_as_heartbeat() -> None:
    s = onboard(1000.0)
    step = on_message(s, "connect", 1300.0, 1300.0, 1, T)
    assert step.transition is None and step.state is not None
    assert step.state.status is Status.CONNECTED and step.state.last_heartbeat_at == 1300.0


def test_timeout_fires_exactly_at_last_heartbeat_plus_disconnect_after_not_before() -> None:
    s = onboard(1000.0)
    due = 1000.0 + T.disconnect_after
    assert deadline(s, T) == due
    for before in (1000.0, due - 1.0, math.nextafter(due, 0.0)):
        step = on_deadline(s, before, T)
        assert step == Step(s, None, Outcome.APPLIED)
    state, tr = must(on_deadline(s, due, T))
    assert (tr.previous, tr.status, tr.reason) == (
        Status.CONNECTED,
        Status.DISCONNECTED,
        Reason.HEARTBEAT_TIMEOUT,
    )
    assert tr.at == due and tr.detection_delay == 0.0
    assert tr.last_heartbeat_at == 1000.0 and tr.number == 2
    assert not tr.mass_outage
    assert state.status is Status.DISCONNECTED and state.last_status_change == due
    assert state.last_heartbeat_at == 1000.0


def test_detection_delay_is_now_minus_deadline() -> None:
    s = onboard(1000.0)
    _, tr = must(on_deadline(s, 1000.0 + T.disconnect_after + 3.25, T))
    assert tr.detection_delay == 3.25
    assert tr.at == 1000.0 + T.disconnect_after + 3.25


def test_deadline_follows_the_latest_heartbeat() -> None:
    s = onboard(1000.0)
    s2 = on_message(s, "heartbeat", 1500.0, 1500.0, 1, T).state
    assert s2 is not None
    # The old deadline passes without a transition: the machine is alive.
    assert on_deadline(s2, 1000.0 + T.disconnect_after, T).transition is None
    _, tr = must(on_deadline(s2, 1500.0 + T.disconnect_after, T))
    assert tr.status is Status.DISCONNECTED


def test_out_of_order_arrival_never_moves_last_seen_backwards() -> None:
    s = onboard(1000.0, seq=None)
    s2 = on_message(s, "heartbeat", 1500.0, 1500.0, None, T).state
    assert s2 is not None
    s3 = on_message(s2, "heartbeat", 1200.0, 1200.0, None, T).state
    assert s3 is not None and s3.last_heartbeat_at == 1500.0 and s3.last_sent_at == 1500.0


# ---------------------------------------------------------------- Disconnected → Connected, Expired


def test_disconnected_heartbeat_resumes() -> None:
    d = disconnected(1000.0)
    state, tr = must(on_message(d, "heartbeat", 2500.0, 2500.0, 1, T))
    assert (tr.previous, tr.status, tr.reason) == (
        Status.DISCONNECTED,
        Status.CONNECTED,
        Reason.HEARTBEAT_RESUMED,
    )
    assert tr.at == tr.last_heartbeat_at == 2500.0 and tr.number == 3
    assert tr.detection_delay is None and not tr.mass_outage
    assert state.status is Status.CONNECTED
    assert state.last_heartbeat_at == state.last_status_change == 2500.0
    assert deadline(state, T) == 2500.0 + T.disconnect_after


def test_disconnected_expires_after_expire_after_from_the_status_change() -> None:
    d = disconnected(1000.0)
    changed = d.last_status_change
    assert deadline(d, T) == changed + T.expire_after
    # Measured from the status change, not from the last heartbeat.
    assert on_deadline(d, 1000.0 + T.expire_after, T) == Step(d, None, Outcome.APPLIED)
    assert on_deadline(d, changed + T.expire_after - 0.25, T) == Step(d, None, Outcome.APPLIED)
    state, tr = must(on_deadline(d, changed + T.expire_after, T))
    assert (tr.previous, tr.status, tr.reason) == (
        Status.DISCONNECTED,
        Status.EXPIRED,
        Reason.EXPIRED,
    )
    assert tr.detection_delay is None and tr.number == 3 and tr.last_heartbeat_at == 1000.0
    assert state.status is Status.EXPIRED
    assert state.last_status_change == changed + T.expire_after


def test_disconnected_expiry_ignores_scope_silence() -> None:
    d = disconnected(1000.0)
    step = on_deadline(d, d.last_status_change + T.expire_after, T, scope_silent=True)
    assert step.transition is not None and step.transition.status is Status.EXPIRED


# ---------------------------------------------------------------- Expired


def test_expired_ignores_heartbeats_and_counts_them() -> None:
    e = expired()
    assert deadline(e, T) is None
    s = e
    for i in range(3):
        step = on_message(s, "heartbeat", 1e6 + i, 1e6 + i, 10 + i, T)
        assert step.transition is None and step.outcome is Outcome.EXPIRED_IGNORED
        assert step.state is not None
        assert step.state.expired_heartbeats == i + 1
        assert step.state._replace(expired_heartbeats=0) == e._replace(expired_heartbeats=0)
        s = step.state
    # Deadlines never wake an Expired machine either.
    assert on_deadline(s, 1e9, T, scope_silent=True) == Step(s, None, Outcome.APPLIED)
    assert on_deadline(s, 1e9, T) == Step(s, None, Outcome.APPLIED)


def test_expired_connect_reonboards() -> None:
    ignored = on_message(expired(), "heartbeat", 1e6, 1e6, 5, T).state  # counted, ignored
    assert ignored is not None and ignored.expired_heartbeats == 1
    e = ignored
    state, tr = must(on_message(e, "connect", 2e6, 2e6, 0, T))
    assert (tr.previous, tr.status, tr.reason) == (
        Status.EXPIRED,
        Status.CONNECTED,
        Reason.REONBOARDED,
    )
    assert tr.at == tr.last_heartbeat_at == 2e6 and tr.number == e.transitions + 1
    assert state.status is Status.CONNECTED
    assert state.last_heartbeat_at == state.last_status_change == 2e6
    assert state.sequence == 0 and state.last_sent_at == 2e6
    assert state.expired_heartbeats == 0 and state.held_since is None
    assert deadline(state, T) == 2e6 + T.disconnect_after


# ---------------------------------------------------------------- disconnect → Deleted


@pytest.mark.parametrize("make", [onboard, disconnected, expired])
def test_disconnect_deletes_from_any_state(make: object) -> None:
    assert callable(make)
    s: MachineState = make()
    step = on_message(s, "disconnect", 1e7, 1e7, None, T)
    assert step.state is None and step.outcome is Outcome.APPLIED
    tr = step.transition
    assert tr is not None
    assert (tr.previous, tr.status, tr.reason) == (
        s.status,
        Status.DELETED,
        Reason.AGENT_DISCONNECTED,
    )
    assert tr.at == 1e7 and tr.last_heartbeat_at == s.last_heartbeat_at
    assert tr.number == s.transitions + 1 and not tr.mass_outage


def test_disconnect_of_unknown_machine_is_counted_not_a_transition() -> None:
    assert on_message(None, "disconnect", 1.0, 1.0, 3, T) == Step(
        None, None, Outcome.UNKNOWN_DISCONNECT
    )


def test_after_delete_the_machine_onboards_again() -> None:
    s = onboard(1000.0)
    gone = on_message(s, "disconnect", 1100.0, 1100.0, 1, T)
    assert gone.state is None
    _, tr = must(on_message(gone.state, "heartbeat", 1200.0, 1200.0, 2, T))
    assert (tr.previous, tr.reason) == (None, Reason.ONBOARDED)


# ---------------------------------------------------------------- sequences


# docs/heartbeat-contract.md: duplicates and older messages do not change state. Only
# `disconnect` is exempt (any -> Deleted); a duplicate of it finds no state and is an
# UNKNOWN_DISCONNECT.
STALE_KINDS: tuple[Kind, ...] = ("heartbeat", "connect")
STALE_CASES = [(5, 0.0), (5, -10.0), (4, 0.0), (0, -50.0)]  # (sequence, sentAt - last sentAt)


def stale_target(make: object) -> MachineState:
    assert callable(make)
    base: MachineState = make()
    return base._replace(sequence=5, last_sent_at=base.last_heartbeat_at + 100.0)


@pytest.mark.parametrize("make", [onboard, disconnected, expired])
@pytest.mark.parametrize(("seq", "sent_delta"), STALE_CASES)
def test_duplicate_or_older_heartbeat_changes_nothing(
    make: object, seq: int, sent_delta: float
) -> None:
    s = stale_target(make)
    assert is_stale(s, seq, s.last_sent_at + sent_delta)
    step = on_message(
        s, "heartbeat", s.last_heartbeat_at + 200.0, s.last_sent_at + sent_delta, seq, T
    )
    assert step == Step(s, None, Outcome.STALE)


def test_duplicate_or_older_connect_changes_nothing() -> None:
    """A replayed `connect` is as stale as a replayed heartbeat.

    A real re-onboarding is never stale: the agent either keeps counting (higher sequence)
    or restarts (lower sequence, later sentAt).
    """
    wrong = []
    for make in (onboard, disconnected, expired):
        for seq, sent_delta in STALE_CASES:
            s = stale_target(make)
            step = on_message(
                s, "connect", s.last_heartbeat_at + 200.0, s.last_sent_at + sent_delta, seq, T
            )
            if step != Step(s, None, Outcome.STALE):
                tr = step.transition
                wrong.append(
                    f"{s.status.value} seq={seq} sentAt{sent_delta:+g}: got {step.outcome.value}, "
                    f"transition={tr.reason.value if tr else None}, "
                    f"sequence {s.sequence}->{step.state.sequence if step.state else None}, "
                    f"last_heartbeat_at {s.last_heartbeat_at}->"
                    f"{step.state.last_heartbeat_at if step.state else None}"
                )
    assert not wrong, "stale connect changed state:\n" + "\n".join(wrong)


def test_lower_sequence_sent_later_is_a_reboot_and_is_applied() -> None:
    s = onboard(1000.0, seq=9)._replace(last_sent_at=1000.0)
    assert not is_stale(s, 0, 1001.0)
    step = on_message(s, "heartbeat", 1200.0, 1001.0, 0, T)
    assert step.outcome is Outcome.APPLIED and step.state is not None
    assert step.state.sequence == 0 and step.state.last_heartbeat_at == 1200.0
    assert step.state.last_sent_at == 1001.0
    # and on a Disconnected machine a reboot heartbeat resumes it
    d = disconnected(1000.0)._replace(sequence=9, last_sent_at=1000.0)
    assert must(on_message(d, "heartbeat", 3000.0, 2999.0, 0, T))[1].reason is (
        Reason.HEARTBEAT_RESUMED
    )


def test_higher_sequence_or_missing_sequence_is_never_stale() -> None:
    s = onboard(seq=3)._replace(last_sent_at=5000.0)
    assert not is_stale(s, 4, 1.0)
    assert not is_stale(s, None, 1.0)
    assert not is_stale(s._replace(sequence=None), 0, 1.0)
    assert is_stale(s, 3, 5000.0) and is_stale(s, 2, 4999.0)


def test_heartbeat_without_sequence_keeps_the_known_sequence() -> None:
    s = onboard(seq=3)
    s2 = on_message(s, "heartbeat", 1300.0, 1300.0, None, T).state
    assert s2 is not None and s2.sequence == 3


def test_stale_heartbeat_on_disconnected_machine_does_not_resume_it() -> None:
    d = disconnected(1000.0)  # sequence 0, sent 1000
    assert on_message(d, "heartbeat", 5000.0, 1000.0, 0, T) == Step(d, None, Outcome.STALE)


# ---------------------------------------------------------------- ScopeSilent hold


def test_deadline_in_silent_scope_is_held() -> None:
    s = onboard(1000.0)
    due = 1000.0 + T.disconnect_after
    assert on_deadline(s, due - 0.25, T, scope_silent=True) == Step(s, None, Outcome.APPLIED)
    step = on_deadline(s, due + 2.0, T, scope_silent=True)
    assert step.outcome is Outcome.HELD and step.transition is None
    assert step.state == s._replace(held_since=due + 2.0)
    assert deadline(step.state, T) == due + 2.0 + T.outage_hold


def test_held_machine_stays_held_while_scope_silent_until_hold_ends() -> None:
    s = onboard(1000.0)
    due = 1000.0 + T.disconnect_after
    held = on_deadline(s, due, T, scope_silent=True).state
    assert held is not None
    for now in (due, due + 1.0, due + T.outage_hold - 0.25):
        assert on_deadline(held, now, T, scope_silent=True) == Step(held, None, Outcome.HELD)
    state, tr = must(on_deadline(held, due + T.outage_hold, T, scope_silent=True))
    assert (tr.status, tr.reason, tr.mass_outage) == (
        Status.DISCONNECTED,
        Reason.HEARTBEAT_TIMEOUT,
        True,
    )
    # detection delay still counts from the machine's own deadline
    assert tr.detection_delay == T.outage_hold
    assert state.held_since is None and state.status is Status.DISCONNECTED


def test_heartbeat_during_hold_clears_it_without_transition() -> None:
    s = onboard(1000.0)
    due = 1000.0 + T.disconnect_after
    held = on_deadline(s, due, T, scope_silent=True).state
    assert held is not None and held.held_since == due
    step = on_message(held, "heartbeat", due + 10.0, due + 10.0, 1, T)
    assert step.transition is None and step.outcome is Outcome.APPLIED
    assert step.state is not None
    assert step.state.held_since is None and step.state.status is Status.CONNECTED
    assert deadline(step.state, T) == due + 10.0 + T.disconnect_after
    # the old hold end passes quietly, even if the scope is still silent
    after = on_deadline(step.state, due + T.outage_hold, T, scope_silent=True)
    assert after == Step(step.state, None, Outcome.APPLIED)


def test_scope_recovered_while_held_declares_with_mass_outage() -> None:
    s = onboard(1000.0)
    due = 1000.0 + T.disconnect_after
    held = on_deadline(s, due, T, scope_silent=True).state
    assert held is not None
    _, tr = must(on_deadline(held, due + 5.0, T, scope_silent=False))
    assert tr.status is Status.DISCONNECTED and tr.mass_outage
    assert tr.detection_delay == 5.0


def test_outage_hold_zero_declares_on_the_next_evaluation() -> None:
    timing = replace(T, outage_hold=0.0)
    s = onboard(1000.0, timing=timing)
    due = 1000.0 + timing.disconnect_after
    held = on_deadline(s, due, timing, scope_silent=True).state
    assert held is not None and held.held_since == due
    _, tr = must(on_deadline(held, due, timing, scope_silent=True))
    assert tr.mass_outage


# ---------------------------------------------------------------- numbering, flapping


def test_transition_numbers_increase_by_one() -> None:
    timing = replace(T, disconnect_after=10.0, expire_after=20.0)
    s: MachineState | None = None
    numbers: list[int] = []
    t = 0.0
    script: list[tuple[Kind | Literal["tick"], float]] = [
        ("heartbeat", 0.0),
        ("tick", 10.0),
        ("heartbeat", 12.0),
        ("tick", 22.0),
        ("tick", 42.0),
        ("connect", 50.0),
        ("tick", 60.0),
        ("disconnect", 61.0),
    ]
    for what, t in script:
        if what == "tick":
            assert s is not None
            step = on_deadline(s, t, timing)
        else:
            step = on_message(s, what, t, t, None, timing)
        assert step.transition is not None, (what, t)
        numbers.append(step.transition.number)
        if step.state is not None:
            assert step.state.transitions == step.transition.number
        s = step.state
    assert numbers == list(range(1, len(script) + 1))


def test_flapping_at_threshold_within_a_window_and_reset_next_window() -> None:
    timing = Timing(
        disconnect_after=10.0, expire_after=1e6, outage_hold=0.0, window=100.0, flap_threshold=4
    )
    s = onboard(0.0, timing=timing)  # 1
    s, tr = must(on_deadline(s, 10.0, timing))  # 2
    assert not tr.flapping and not is_flapping(s, 10.0, timing)
    s, tr = must(on_message(s, "heartbeat", 11.0, 11.0, 1, timing))  # 3
    assert not tr.flapping and not is_flapping(s, 11.0, timing)
    s, tr = must(on_deadline(s, 21.0, timing))  # 4: threshold reached
    assert tr.flapping and is_flapping(s, 21.0, timing) and is_flapping(s, 99.75, timing)
    s, tr = must(on_message(s, "heartbeat", 30.0, 30.0, 2, timing))  # 5
    assert tr.flapping
    # A new window starts the count again.
    assert not is_flapping(s, 100.0, timing)
    s, tr = must(on_deadline(s, 105.0, timing))
    assert not tr.flapping and s.flap_count == 1 and s.flap_window == 100.0
    assert not is_flapping(s, 105.0, timing)


def test_flap_threshold_one_flags_every_transition() -> None:
    timing = replace(T, flap_threshold=1)
    _, tr = must(on_message(None, "heartbeat", 5.0, 5.0, None, timing))
    assert tr.flapping


# ---------------------------------------------------------------- properties


@dataclass(frozen=True)
class Msg:
    dt: float
    kind: Kind
    skew: float
    seq: int | None


@dataclass(frozen=True)
class Tick:
    dt: float
    silent: bool
    at_deadline: float | None  # jump to deadline(state) + this offset (never backwards)


Op = Msg | Tick

quarter = st.integers(0, 400).map(lambda n: n / 4)
timings = st.builds(
    Timing,
    disconnect_after=st.integers(1, 200).map(lambda n: n / 4),
    expire_after=st.integers(1, 400).map(lambda n: n / 4),
    outage_hold=st.integers(0, 120).map(lambda n: n / 4),
    window=st.integers(1, 400).map(lambda n: n / 4),
    flap_threshold=st.integers(1, 6),
)
msgs = st.builds(
    Msg,
    dt=quarter,
    kind=st.sampled_from(["heartbeat"] * 6 + ["connect", "disconnect"]),
    skew=st.integers(-80, 80).map(lambda n: n / 4),
    seq=st.none() | st.integers(0, 4),
)
ticks = st.builds(
    Tick,
    dt=quarter,
    silent=st.booleans(),
    at_deadline=st.none() | st.sampled_from([-0.25, 0.0, 0.0, 0.25, 3.0]),
)
op_lists = st.lists(st.one_of(msgs, ticks), max_size=60)

Trace = list[tuple[float, Op, MachineState | None, Step | None]]


def run(timing: Timing, ops: list[Op]) -> Trace:
    """Drive the machine; returns (time, op, state before, step) per op."""
    state: MachineState | None = None
    t = 0.0
    out: Trace = []
    for op in ops:
        t += op.dt
        if isinstance(op, Tick) and op.at_deadline is not None and state is not None:
            dl = deadline(state, timing)
            if dl is not None:
                t = max(t, dl + op.at_deadline)
        step: Step | None
        if isinstance(op, Msg):
            step = on_message(state, op.kind, t, t + op.skew, op.seq, timing)
        elif state is None:
            step = None
        else:
            step = on_deadline(state, t, timing, scope_silent=op.silent)
        out.append((t, op, state, step))
        if step is not None:
            state = step.state
    return out


@dataclass
class Model:
    """An independent reading of docs/heartbeat-contract.md and docs/how-it-decides.md, used as
    an oracle."""

    status: Status
    last_hb: float
    changed: float
    sent: float
    seq: int | None
    held: float | None
    ignored: int
    number: int
    times: list[float]  # transition times in this machine's life, for flapping


def model_run(timing: Timing, ops: list[Op]) -> list[tuple[Outcome, tuple[object, ...] | None]]:
    m: Model | None = None
    t = 0.0
    out: list[tuple[Outcome, tuple[object, ...] | None]] = []

    def emit(
        prev: Status | None,
        to: Status,
        reason: Reason,
        last: float,
        delay: float | None = None,
        mass: bool = False,
    ) -> tuple[object, ...]:
        assert m is not None
        m.number += 1
        m.times.append(t)
        win = math.floor(t / timing.window)
        flaps = sum(1 for x in m.times if math.floor(x / timing.window) == win)
        return (prev, to, reason, t, last, m.number, delay, flaps >= timing.flap_threshold, mass)

    for op in ops:
        t += op.dt
        if isinstance(op, Tick) and op.at_deadline is not None and m is not None:
            dl = {
                Status.CONNECTED: (m.held + timing.outage_hold)
                if m.held is not None
                else m.last_hb + timing.disconnect_after,
                Status.DISCONNECTED: m.changed + timing.expire_after,
            }.get(m.status)
            if dl is not None:
                t = max(t, dl + op.at_deadline)
        if isinstance(op, Msg):
            sent = t + op.skew
            if op.kind == "disconnect":
                if m is None:
                    out.append((Outcome.UNKNOWN_DISCONNECT, None))
                    continue
                tr = emit(m.status, Status.DELETED, Reason.AGENT_DISCONNECTED, m.last_hb)
                m = None
                out.append((Outcome.APPLIED, tr))
                continue
            if m is None:
                m = Model(Status.CONNECTED, t, t, sent, op.seq, None, 0, 0, [])
                out.append((Outcome.APPLIED, emit(None, Status.CONNECTED, Reason.ONBOARDED, t)))
                continue
            if (
                op.kind in STALE_KINDS
                and op.seq is not None
                and m.seq is not None
                and op.seq <= m.seq
                and sent <= m.sent
            ):
                out.append((Outcome.STALE, None))
                continue
            if m.status is Status.EXPIRED:
                if op.kind == "heartbeat":
                    m.ignored += 1
                    out.append((Outcome.EXPIRED_IGNORED, None))
                    continue
                m.status, m.last_hb, m.changed, m.sent, m.seq = (
                    Status.CONNECTED,
                    t,
                    t,
                    sent,
                    op.seq,
                )
                m.held, m.ignored = None, 0
                out.append(
                    (Outcome.APPLIED, emit(Status.EXPIRED, Status.CONNECTED, Reason.REONBOARDED, t))
                )
                continue
            m.last_hb, m.sent = max(m.last_hb, t), max(m.sent, sent)
            m.seq = op.seq if op.seq is not None else m.seq
            m.held = None
            if m.status is Status.DISCONNECTED:
                m.status, m.changed = Status.CONNECTED, t
                out.append(
                    (
                        Outcome.APPLIED,
                        emit(
                            Status.DISCONNECTED,
                            Status.CONNECTED,
                            Reason.HEARTBEAT_RESUMED,
                            m.last_hb,
                        ),
                    )
                )
            else:
                out.append((Outcome.APPLIED, None))
            continue
        if m is None:
            continue
        if m.status is Status.CONNECTED and t >= m.last_hb + timing.disconnect_after:
            if op.silent and m.held is None:
                m.held = t
                out.append((Outcome.HELD, None))
            elif op.silent and m.held is not None and t < m.held + timing.outage_hold:
                out.append((Outcome.HELD, None))
            else:
                mass = m.held is not None
                m.status, m.changed, m.held = Status.DISCONNECTED, t, None
                out.append(
                    (
                        Outcome.APPLIED,
                        emit(
                            Status.CONNECTED,
                            Status.DISCONNECTED,
                            Reason.HEARTBEAT_TIMEOUT,
                            m.last_hb,
                            t - (m.last_hb + timing.disconnect_after),
                            mass,
                        ),
                    )
                )
        elif m.status is Status.DISCONNECTED and t >= m.changed + timing.expire_after:
            m.status, m.changed = Status.EXPIRED, t
            out.append(
                (
                    Outcome.APPLIED,
                    emit(Status.DISCONNECTED, Status.EXPIRED, Reason.EXPIRED, m.last_hb),
                )
            )
        else:
            out.append((Outcome.APPLIED, None))
    return out


def as_tuple(tr: Transition | None) -> tuple[object, ...] | None:
    if tr is None:
        return None
    return (
        tr.previous,
        tr.status,
        tr.reason,
        tr.at,
        tr.last_heartbeat_at,
        tr.number,
        tr.detection_delay,
        tr.flapping,
        tr.mass_outage,
    )


PROPS = settings(max_examples=examples(200), deadline=None)


REPLAYED_CONNECT = [Msg(0.0, "connect", 0.0, 3), Msg(5.0, "connect", -5.0, 3)]


@PROPS
@given(timings, op_lists)
@example(T, REPLAYED_CONNECT)
def test_matches_the_independent_model(timing: Timing, ops: list[Op]) -> None:
    got = [(s.outcome, as_tuple(s.transition)) for _, _, _, s in run(timing, ops) if s is not None]
    assert got == model_run(timing, ops)


@PROPS
@given(timings, op_lists)
def test_transition_chain_is_consistent(timing: Timing, ops: list[Op]) -> None:
    last: Transition | None = None
    for _, _, _, step in run(timing, ops):
        if step is None or step.transition is None:
            continue
        tr = step.transition
        if last is not None:
            assert tr.status != last.status
        expected_prev = None if last is None or last.status is Status.DELETED else last.status
        assert tr.previous == expected_prev
        assert tr.previous != tr.status
        assert tr.number == (1 if last is None or expected_prev is None else last.number + 1)
        if step.state is not None:
            assert step.state.status == tr.status and step.state.transitions == tr.number
        else:
            assert tr.status is Status.DELETED
        last = tr


@PROPS
@given(timings, op_lists)
def test_never_disconnected_before_deadline(timing: Timing, ops: list[Op]) -> None:
    for t, _, before, step in run(timing, ops):
        if step is None or step.transition is None:
            continue
        tr = step.transition
        if tr.status is Status.DISCONNECTED:
            assert before is not None and before.status is Status.CONNECTED
            due = before.last_heartbeat_at + timing.disconnect_after
            assert tr.at == t >= due
            assert tr.detection_delay == t - due >= 0
            assert tr.reason is Reason.HEARTBEAT_TIMEOUT
        else:
            assert tr.detection_delay is None
        if tr.status is Status.EXPIRED:
            assert before is not None and before.status is Status.DISCONNECTED
            assert t >= before.last_status_change + timing.expire_after


@settings(max_examples=examples(100), deadline=None)
@given(timings, op_lists)
def test_replay_is_deterministic(timing: Timing, ops: list[Op]) -> None:
    assert run(timing, ops) == run(timing, list(ops))


@PROPS
@given(timings, op_lists)
def test_expired_changes_only_through_connect_or_disconnect(timing: Timing, ops: list[Op]) -> None:
    for _, op, before, step in run(timing, ops):
        if before is None or before.status is not Status.EXPIRED or step is None:
            continue
        if isinstance(op, Msg) and op.kind in ("connect", "disconnect"):
            continue
        assert step.transition is None
        assert step.state is not None and step.state.status is Status.EXPIRED
        assert step.state._replace(expired_heartbeats=0) == before._replace(expired_heartbeats=0)
        assert step.state.expired_heartbeats - before.expired_heartbeats in (0, 1)


@PROPS
@given(timings, op_lists)
def test_deadline_agrees_with_on_deadline(timing: Timing, ops: list[Op]) -> None:
    for t, op, before, step in run(timing, ops):
        if not isinstance(op, Tick) or before is None or step is None:
            continue
        dl = deadline(before, timing)
        if dl is None:
            assert before.status is Status.EXPIRED
            assert step == Step(before, None, Outcome.APPLIED)
            continue
        if t < dl and (before.held_since is None or op.silent):
            # Before its deadline nothing changes (a held machine whose scope recovered is
            # the one exception: it is declared at once).
            assert step.state == before and step.transition is None
        if t >= dl and not op.silent:
            assert step.transition is not None
        if t >= dl:
            assert step.state != before or step.transition is not None
        # Evaluating again at the same moment is a no-op (a zero hold ends at once).
        if step.state is not None and not (
            step.outcome is Outcome.HELD and timing.outage_hold == 0
        ):
            again = on_deadline(step.state, t, timing, scope_silent=op.silent)
            assert again.state == step.state and again.transition is None
            nxt = deadline(step.state, timing)
            assert nxt is None or nxt > t


@PROPS
@given(timings, st.lists(msgs, min_size=1, max_size=30), st.integers(0, 4), quarter)
@example(T, REPLAYED_CONNECT[:1], 3, 0.0)
def test_stale_messages_change_nothing(
    timing: Timing, ops: list[Msg], seq: int, back: float
) -> None:
    trace = run(timing, list(ops))
    state = trace[-1][3].state if trace[-1][3] is not None else None
    if state is None or state.sequence is None:
        return
    dup_seq = min(seq, state.sequence)
    t = trace[-1][0] + 1.0
    for kind in STALE_KINDS:
        step = on_message(state, kind, t, state.last_sent_at - back, dup_seq, timing)
        assert step == Step(state, None, Outcome.STALE), kind
