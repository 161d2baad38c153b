"""A tick: every machine of a partition whose moment came is judged (docs/how-it-decides.md,
Lag). The gates a due machine passes, in order, each a function of its own:

1. :func:`rebook_early`: a plain Connected machine whose wheel bucket came up early is booked
   again without decoding its record;
2. :func:`mark_late`: late now, or covered by a maintenance window (then never late);
3. :meth:`.MassSilence.silences` and :func:`must_wait`: a silent scope holds its Disconnected;
   a machine found late and due in one tick waits for the mass-silence verdict;
4. :func:`.status.on_deadline`: the status machine's step.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from arcbeat.streams.decide.deadlines import ScopeCounts
from arcbeat.streams.decide.machines import Machine, Slot, from_slot, scopes_of
from arcbeat.streams.decide.mass_silence import Verdict, held_rescan
from arcbeat.streams.decide.output_records import Emit, partition_snapshot
from arcbeat.streams.decide.partition_index import PartitionIndex
from arcbeat.streams.decide.status import MachineState, Outcome, Status, on_deadline

if TYPE_CHECKING:
    from arcbeat.streams.decide.engine import Engine

Looked = tuple[str, Machine, str | None]  # key, machine, the maintenance window covering it


# machines a tick step judges before it yields: a tick that releases a held location of
# 30,000 machines lets the worker's event loop run every few milliseconds
TICK_STEP: Final = 256

TickResult = tuple[list[Emit], dict[str, ScopeCounts]]


def run_steps(steps: Generator[int, None, TickResult]) -> TickResult:
    """:func:`tick_steps` in one go (:meth:`.Engine.handle_tick`)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: TickResult = done.value
            return result


def tick_steps(
    engine: Engine,
    p: int,
    now: float,
    verdicts: Mapping[str, Verdict],
    *,
    wall_now: float,
    decided_at: float | None,
    maintenance: Sequence[Mapping[str, Any]],
    step: int = TICK_STEP,
) -> Generator[int, None, TickResult]:
    """A tick in steps: yields the machines done so far every ``step`` machines, returns
    the outputs and the partition's scope counts. The caller runs the steps to the end
    before anything else touches the partition (the batch loop holds its lock), so the
    outcome is that of one step: same records, same order, same state."""
    idx = engine.index_for(p)
    idx.plan(maintenance)
    previous_tick, idx.previous_tick = idx.previous_tick, now
    stats = engine.stats
    stats.last_event_at = max(stats.last_event_at, now)
    out: list[Emit] = []
    if idx.windows:
        engine.availability.close_ended(idx, now, out)
    due = _due(engine, idx, verdicts, now)
    stats.tick_looks += len(due)
    # First mark who is late now, so that the local evidence of a mass silence (below)
    # counts every machine this tick found late.
    looked: list[Looked] = []
    shortcut = not engine.rescan_held
    done = 0
    for key in due:
        done += 1
        if done % step == 0:
            yield done
        slot = idx.machines.get(key)
        if slot is None:
            continue
        if shortcut and slot.ok and rebook_early(engine, idx, key, slot, now):
            continue
        m = from_slot(slot)
        looked.append((key, m, mark_late(engine, idx, key, m, now)))
    suspicious = engine.silence.locally_silent_scopes(idx) if looked else set()
    for key, m, planned in looked:
        done += 1
        if done % step == 0:
            yield done
        _judge(engine, idx, key, m, planned, now, verdicts, previous_tick, suspicious,
               decided_at, wall_now, out)  # fmt: skip
    counts = idx.scope_counts()
    sample = engine.early.on_tick(p, idx, now, idx.early_counts)
    if sample is not None:
        engine.early_samples.append(sample)
    every = engine.settings.worker.fleet_snapshot_interval
    bucket = math.floor(now / every)
    if bucket > idx.snapshot_bucket:
        idx.snapshot_bucket = bucket
        out.append(partition_snapshot(p, idx.counts, bucket * every))
    return out, counts


def _due(
    engine: Engine, idx: PartitionIndex, verdicts: Mapping[str, Verdict], now: float
) -> list[str]:
    """The machines to look at: those the wheel holds due, and the held ones a recovered
    scope may release (soon after it recovered, not at the hold's end), in key order: the
    records of one tick come out the same in a replay (the wheel's buckets are sets, whose
    order depends on how they were filled)."""
    due = idx.wheel.pop_due(now)
    if idx.held:
        looks = held_rescan(idx, verdicts) if engine.rescan_held else None
        if looks is None:
            looks = engine.silence.held_due(idx, verdicts, now)
        if looks:
            due.extend(looks)
            due = list(dict.fromkeys(due))
    due.sort()
    return due


def rebook_early(engine: Engine, idx: PartitionIndex, key: str, slot: Slot, now: float) -> bool:
    """A plain Connected machine whose wheel bucket came up before its next moment (buckets
    start before the deadlines they hold): judging it would only book it again, so it is booked
    again without decoding its record. A late one only without maintenance windows (one may
    have begun: it would no longer be late). False: judge it."""
    if key not in idx.late:
        if now < slot.hb + engine.late_after:
            idx.wheel.schedule(key, slot.hb + engine.late_after)
            return True
    elif now < slot.hb + engine.timing.disconnect_after and not len(idx.planned):
        idx.wheel.schedule(key, slot.hb + engine.timing.disconnect_after)
        return True
    return False


def mark_late(engine: Engine, idx: PartitionIndex, key: str, m: Machine, now: float) -> str | None:
    """Mark the machine late when it is; returns the maintenance window covering it (then it
    is never late: a planned reboot of a whole location is no evidence of its outage)."""
    planned = idx.planned_window(m.info, now) if len(idx.planned) else None
    if planned is not None:
        idx.set_late(key, m.info, False)
    elif (
        m.state.status is Status.CONNECTED
        and key not in idx.late
        and now >= m.state.last_heartbeat_at + engine.late_after
    ):
        idx.set_late(key, m.info, True)
    return planned


def must_wait(
    engine: Engine,
    idx: PartitionIndex,
    key: str,
    m: Machine,
    now: float,
    previous_tick: float | None,
    suspicious: set[str],
    decided_at: float | None,
) -> bool:
    """Whether a due machine, of no silent scope and no maintenance window, waits for the
    mass-silence verdict: it is waiting already, or it was late and due in one tick (no tick
    of this partition fell between the moment it became late and its deadline, judged from the
    log so that a replay after a crash decides exactly as the first run did) in a scope that
    looks silent here."""
    state = m.state
    unseen_late = (
        previous_tick is not None and previous_tick < state.last_heartbeat_at + engine.late_after
    )
    waiting = key in idx.pending or (unseen_late and not suspicious.isdisjoint(scopes_of(m.info)))
    return waiting and engine.silence.await_verdict(idx, key, state, now, decided_at)


def _judge(
    engine: Engine,
    idx: PartitionIndex,
    key: str,
    m: Machine,
    planned: str | None,
    now: float,
    verdicts: Mapping[str, Verdict],
    previous_tick: float | None,
    suspicious: set[str],
    decided_at: float | None,
    wall_now: float,
    out: list[Emit],
) -> None:
    state: MachineState = m.state
    held = state.held_since is not None
    silent = planned is None and engine.silence.silences(m.info, held, verdicts, now)
    if (
        not silent
        and planned is None
        and must_wait(engine, idx, key, m, now, previous_tick, suspicious, decided_at)
    ):
        idx.wheel.schedule(key, now)  # look again at the next tick
        return
    step = on_deadline(state, now, engine.timing, scope_silent=silent)
    if step.outcome is Outcome.HELD:
        engine.stats.outcomes["held"] += 1
    if step.state is None:  # on_deadline always returns a state
        raise RuntimeError(f"no state after a deadline for {key}")
    if step.state != state:
        new = Machine(step.state, m.info, m.window_start, m.received)
        engine.restate(idx, key, step.state, m.info)
        if step.state.held_since is not None:
            idx.hold(key, m.info.location)
        if step.transition is not None:
            idx.recount(key, m, new, engine.timing.flap_threshold)
            out.append(engine.status_emit(key, m.info, step.transition, wall_now, planned))
        m = new
    engine.schedule(idx, key, m.state)
