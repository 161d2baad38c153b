"""Mass silence (docs/how-it-decides.md, Mass silence): a scope's verdict from every
partition's counts, which held machines a tick looks at, and when a due machine waits for the
verdict to catch up before it may be declared Disconnected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from arcbeat.streams.decide.deadlines import ScopeCounts, scope_is_silent
from arcbeat.streams.decide.machines import MachineInfo, from_slot, scopes_of
from arcbeat.streams.decide.output_records import Emit, scope_changed
from arcbeat.streams.decide.partition_index import PartitionIndex
from arcbeat.streams.decide.status import MachineState, Status


@dataclass(frozen=True, slots=True)
class Verdict:
    """A scope's mass-silence verdict, since broker time ``since``, over ``machines`` late."""

    silent: bool
    since: float
    machines: int


@dataclass(frozen=True, slots=True)
class MassSilence:
    """The mass-silence rules, with the settings they depend on."""

    ratio: float  # outage_ratio
    min_machines: int  # outage_min_machines
    late_after: float
    disconnect_after: float
    outage_hold: float
    # how long after a machine's counts a decision must be taken to have seen them
    grace: float  # commit_interval + check_interval

    def decide(
        self, now: float, totals: Mapping[str, ScopeCounts], verdicts: Mapping[str, Verdict]
    ) -> tuple[list[Emit], dict[str, Verdict]]:
        """Mass silence per scope from every partition's counts (run by one partition's
        owner): the records of the verdicts that flipped, and those verdicts."""
        out: list[Emit] = []
        changed: dict[str, Verdict] = {}
        for scope in sorted(set(totals) | {s for s, v in verdicts.items() if v.silent}):
            total = totals.get(scope, ScopeCounts(0, 0))
            silent = scope_is_silent(total, ratio=self.ratio, min_machines=self.min_machines)
            before = verdicts.get(scope)
            was = before is not None and before.silent
            if silent == was:
                continue
            changed[scope] = Verdict(silent, now, total.late)
            out.append(scope_changed(scope, silent, total, now))
        return out, changed

    def silences(
        self, info: MachineInfo, held: bool, verdicts: Mapping[str, Verdict], now: float
    ) -> bool:
        """Whether a scope of the machine is silent, for its deadline.

        A held machine stays held for late_after past its scope's recovery: the agents that
        report again come back over a heartbeat interval, not all at the instant the verdict
        flips, and they must never flip.
        """
        # a loop, not any() over a generator: a release asks for every machine it releases
        for s in scopes_of(info):
            v = verdicts.get(s)
            if v is not None and (v.silent or (held and now < v.since + self.late_after)):
                return True
        return False

    def locally_silent_scopes(self, idx: PartitionIndex) -> set[str]:
        """Scopes whose machines in this partition alone look like a mass silence.

        Only then does a machine found late and due in one tick wait for the shared verdict:
        a lone outage seen after a restart is declared at once.
        """
        ratio = self.ratio
        return {
            scope
            for scope, connected in idx.connected_by_scope().items()
            if idx.late_by_scope.get(scope, 0) >= max(1.0, ratio * connected)
        }

    def await_verdict(
        self,
        idx: PartitionIndex,
        key: str,
        state: MachineState,
        now: float,
        decided_at: float | None,
    ) -> bool:
        """Whether a due machine must wait for the mass-silence decision to catch up.

        Normally a machine is late long before its deadline, so the scope verdict already
        counts it. After a stall, restart or rebalance, a backlog makes machines late and due
        in the same tick: declaring them at once would flip a whole silent location one by one
        before the decider (the owner of partition 0) has seen the counts. They wait until a
        decision taken after their counts were published (commit + one tick), or outage_hold.
        """
        if decided_at is None or state.status is not Status.CONNECTED:
            return False
        if state.held_since is not None or now < state.last_heartbeat_at + self.disconnect_after:
            return False
        since = idx.pending.get(key)
        if since is None:
            since = idx.pending[key] = now
        if decided_at >= since + self.grace or now >= since + self.outage_hold:
            del idx.pending[key]
            return False
        return True

    def held_due(
        self, idx: PartitionIndex, verdicts: Mapping[str, Verdict], now: float
    ) -> list[str]:
        """The held machines this tick must look at, by location: O(locations held + released).

        A held machine is looked at when none of its scopes (the fleet, its location) is
        silent. It is then released unless a scope recovered less than ``late_after`` ago
        (the grace of a recovering region) and no maintenance window covers it. So a location
        past its grace is released whole, a location in its grace is looked at only when an
        active window might cover some of its machines, and the others are not touched.
        """
        fleet = verdicts.get("fleet")
        if fleet is not None and fleet.silent:
            return []
        grace_fleet = fleet is not None and now < fleet.since + self.late_after
        out: list[str] = []
        for location, keys in idx.held_by_location.items():
            v = verdicts.get(f"location={location}")
            if v is not None and v.silent:
                continue
            if (
                grace_fleet or (v is not None and now < v.since + self.late_after)
            ) and not _window_may_cover(idx, location, now):
                continue  # held on for the grace: looking would change nothing
            out.extend(keys)
        return out


def _window_may_cover(idx: PartitionIndex, location: str, now: float) -> bool:
    return len(idx.planned) > 0 and any(
        w.selector.location in (None, location) and w.active_at(now) for w in idx.planned.all()
    )


def held_rescan(idx: PartitionIndex, verdicts: Mapping[str, Verdict]) -> list[str]:
    """The reference :meth:`MassSilence.held_due` is tested against (``rescan_held``): every
    held machine of no silent scope, found by decoding each held machine's record."""
    silent_scopes = {s for s, v in verdicts.items() if v.silent}
    if not silent_scopes:
        return list(idx.held)
    out: list[str] = []
    for k in list(idx.held):
        slot = idx.machines.get(k)
        if slot is not None and not (set(scopes_of(from_slot(slot).info)) & silent_scopes):
            out.append(k)
    return out
