"""One partition's machines and the indexes derived from them: counts by status and scope,
late machines, held machines by location, open availability windows, the deadline wheel.

``machines``, ``late``, ``pending``, ``previous_tick``, ``snapshot_bucket`` and the planned
maintenance windows are state (checkpointed); everything else is derived from them on restore
(:mod:`.restore`).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from arcbeat.streams.decide.deadlines import DeadlineWheel, ScopeCounts
from arcbeat.streams.decide.degradation import part_scope
from arcbeat.streams.decide.machines import Machine, MachineInfo, Slot, scopes_of
from arcbeat.streams.decide.maintenance import Book, MaintenanceError
from arcbeat.streams.decide.maintenance_codec import from_json as window_from_json
from arcbeat.streams.decide.output_records import CountKey
from arcbeat.streams.decide.status import MachineState, Status

_PLAIN: dict[Status, str] = {s: s.value for s in Status}  # a dict: 1/8 of .value's cost


def count_key(state: MachineState, info: MachineInfo) -> CountKey:
    return (_PLAIN[state.status], info.location, info.os_type, info.subscription_id)


class PartitionIndex:
    """One partition's machines and the indexes derived from them."""

    __slots__ = (
        "_connected",
        "counts",
        "disconnected",
        "flapping",
        "flaps_by_window",
        "held",
        "held_by_location",
        "late",
        "late_by_part",
        "late_by_scope",
        "machines",
        "pending",
        "planned",
        "planned_json",
        "previous_tick",
        "seed",
        "snapshot_bucket",
        "wheel",
        "windows",
    )

    def __init__(self, granularity: float, seed: int) -> None:
        self.seed = seed  # of the heartbeat fingerprints (Slot.fp); kept in checkpoints
        self.wheel: DeadlineWheel[str] = DeadlineWheel(granularity)
        self.counts: Counter[CountKey] = Counter()
        # connected_by_scope() as of the latest change of ``counts`` (None: to be summed
        # again): every tick asks for it, and a held fleet's counts do not move between ticks
        self._connected: Counter[str] | None = None
        self.late: set[str] = set()
        self.late_by_scope: Counter[str] = Counter()
        # late machines by subscription part (a subscription in a location: early warning)
        self.late_by_part: Counter[str] = Counter()
        self.machines: dict[str, Slot] = {}
        self.disconnected: set[str] = set()  # for the per-machine offline series
        # Disconnected machines past flap_threshold transitions in their flap window: key ->
        # that window, and how many per window, so that a scrape counts the flapping machines
        # of the current window without decoding a Disconnected machine
        self.flapping: dict[str, float] = {}
        self.flaps_by_window: Counter[float] = Counter()
        # Disconnected held by a ScopeSilent verdict: key -> its location, and the same keys
        # by location (a machine's scopes are the fleet and its location), so that a scope's
        # recovery releases its machines in one step and a tick never looks at the others
        self.held: dict[str, str] = {}
        self.held_by_location: dict[str, set[str]] = {}
        # key -> tick time: late and due in one tick (a backlog was just read), waiting for a
        # scope verdict that has seen it late before it may be declared
        self.pending: dict[str, float] = {}
        # availability: window start -> machines with an open count in that window
        self.windows: dict[float, set[str]] = {}
        self.snapshot_bucket = -1
        # the maintenance windows the latest tick carried (as JSON: how they are compared and
        # checkpointed), so that a replay decides with the windows the first run had
        self.planned = Book()
        self.planned_json: list[Mapping[str, Any]] = []
        # broker time of this partition's previous tick: judged from the log, so that a
        # replay decides exactly as the first run did
        self.previous_tick: float | None = None

    def plan(self, windows: Sequence[Mapping[str, Any]]) -> None:
        """Install the maintenance windows a tick (or a checkpoint) carries."""
        windows = list(windows)
        if windows == self.planned_json:
            return
        book = Book()
        for w in windows:
            try:
                window = window_from_json(w)
            except MaintenanceError:
                continue  # the writer checked it; a window no worker can read covers nothing
            book.apply(window.id, window)
        self.planned, self.planned_json = book, windows

    def planned_window(self, info: MachineInfo, now: float) -> str | None:
        """The maintenance window covering the machine at ``now`` (its id), if any."""
        return self.planned.window_for(
            info.resource_id, info.subscription_id, info.resource_group, info.location,
            info.tags, now,
        )  # fmt: skip

    def hold(self, key: str, location: str) -> None:
        if key in self.held:
            return
        location = sys.intern(location)  # one string per location, not one per machine
        self.held[key] = location
        keys = self.held_by_location.get(location)
        if keys is None:
            self.held_by_location[location] = {key}
        else:
            keys.add(key)

    def unhold(self, key: str) -> None:
        location = self.held.pop(key, None)
        if location is None:
            return
        keys = self.held_by_location[location]
        keys.discard(key)
        if not keys:
            del self.held_by_location[location]

    def flap(self, key: str, window: float) -> None:
        self.unflap(key)
        self.flapping[key] = window
        self.flaps_by_window[window] += 1

    def unflap(self, key: str) -> None:
        window = self.flapping.pop(key, None)
        if window is None:
            return
        self.flaps_by_window[window] -= 1
        if self.flaps_by_window[window] <= 0:
            del self.flaps_by_window[window]

    def mark_flapping(self, key: str, state: MachineState, flap_threshold: int) -> None:
        """Index a Disconnected machine as flapping when it is (in its flap window)."""
        if state.flap_count >= flap_threshold:
            self.flap(key, state.flap_window)

    def set_late(self, key: str, info: MachineInfo, late: bool) -> None:
        """Mark the machine late or not, with its scopes' late counts (the leading indicator
        of a mass silence)."""
        if late == (key in self.late):
            return
        if late:
            self.late.add(key)
            for s in scopes_of(info):
                self.late_by_scope[s] += 1
            self.late_by_part[part_scope(info.subscription_id, info.location)] += 1
        else:
            self.late.discard(key)
            for s in scopes_of(info):
                self.late_by_scope[s] -= 1
            part = part_scope(info.subscription_id, info.location)
            self.late_by_part[part] -= 1
            if self.late_by_part[part] <= 0:
                del self.late_by_part[part]

    def recount(
        self, key: str, old: Machine | None, new: Machine | None, flap_threshold: int
    ) -> None:
        """Move the machine's share of the indexes from its old record to its new one (None:
        unknown before, or forgotten now)."""
        self._connected = None
        if old is not None:
            ck = count_key(old.state, old.info)
            self.counts[ck] -= 1
            if self.counts[ck] <= 0:
                del self.counts[ck]
            self.set_late(key, old.info, False)
        self.disconnected.discard(key)
        self.unflap(key)
        self.unhold(key)
        self.pending.pop(key, None)
        if new is not None:
            self.counts[count_key(new.state, new.info)] += 1
            if new.state.status is Status.DISCONNECTED:
                self.disconnected.add(key)
                self.mark_flapping(key, new.state, flap_threshold)
            if new.state.held_since is not None:
                self.hold(key, new.info.location)
        else:
            self.wheel.unschedule(key)

    def connected_by_scope(self) -> Counter[str]:
        """Connected machines per scope (the fleet, each location); not to be changed."""
        out = self._connected
        if out is None:
            out = Counter()
            for (status, location, _os, _sub), n in self.counts.items():
                if status == "Connected" and n:
                    out["fleet"] += n
                    out[f"location={location}"] += n
            self._connected = out
        return out

    def counts_changed(self) -> None:
        """``counts`` was changed other than by :meth:`recount` (a restore)."""
        self._connected = None

    def early_counts(self) -> tuple[Counter[str], Counter[str]]:
        """Machines Connected and late per location and per subscription part (early
        warning's interval samples)."""
        connected = self.connected_by_scope().copy()
        for (status, location, _os, sub), n in self.counts.items():
            if status == "Connected" and n:
                connected[part_scope(sub, location)] += n
        return connected, self.late_by_scope + self.late_by_part

    def scope_counts(self) -> dict[str, ScopeCounts]:
        """Connected and late machines per scope: this partition's share of the mass-silence
        evidence every worker publishes."""
        counts = {
            scope: ScopeCounts(connected, self.late_by_scope.get(scope, 0))
            for scope, connected in self.connected_by_scope().items()
        }
        for scope, late in self.late_by_scope.items():
            if scope not in counts and late:
                counts[scope] = ScopeCounts(0, late)
        return counts
