"""Per-partition processing: heartbeats and ticks in, decisions and output records out.

Kafka-free on purpose (the worker's batch loop feeds it and sends what it returns), so the
whole decision logic — lag gating by ticks, the deadline wheel, scope counts, mass-silence
holds — is exercised by plain tests. The state of each partition lives in plain memory
(:class:`PartitionIndex`); it is a function of the heartbeats log, so a checkpoint plus the
log after it rebuilds it exactly (:mod:`arcbeat.streams.kafka.checkpoint`).
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from secrets import randbits
from typing import Any, Final, Literal

import orjson
from xxhash import xxh3_64_intdigest

from arcbeat.streams.decide.deadlines import DeadlineWheel, ScopeCounts, late_after, scope_is_silent
from arcbeat.streams.decide.degradation import CREEP, DELAY_BOUNDS, part_scope
from arcbeat.streams.decide.early_warning import EarlyWarning, PartitionSample
from arcbeat.streams.decide.identity import IdentityBindings, load_bindings
from arcbeat.streams.decide.machines import (
    Machine,
    MachineInfo,
    Slot,
    from_slot,
    scopes_of,
    scopes_of_location,
    to_slot,
)
from arcbeat.streams.decide.maintenance import Book, MaintenanceError
from arcbeat.streams.decide.maintenance_codec import from_json as window_from_json
from arcbeat.streams.decide.partitioner import KeyPartitioner
from arcbeat.streams.decide.records import (
    Heartbeat,
    Reject,
    decode_heartbeat,
    dlq_record,
    split_heartbeat,
)
from arcbeat.streams.decide.stats import EngineStats
from arcbeat.streams.decide.status import (
    MachineState,
    Outcome,
    Status,
    Timing,
    Transition,
    deadline,
    deadline_of,
    flap_window,
    on_deadline,
    on_message,
)
from arcbeat.streams.decide.timestamps import rfc3339
from arcbeat.streams.settings import Settings

Topic = Literal["status", "dlq", "fleet"]


@dataclass(frozen=True, slots=True)
class Emit:
    topic: Topic
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Verdict:
    silent: bool
    since: float
    machines: int


CountKey = tuple[str, str, str, str]  # status, location, os_type, subscription_id
_STATUS = {s.value: s for s in Status}
_NOTHING: list[Emit] = []  # returned, never changed
ADOPT_STEP = 20_000  # machines restored between two yields of the event loop


def _digest(head: bytes, seed: int) -> int:
    """60 bits of seeded XXH3: a tenth of a microsecond. The seed is the partition's (random,
    kept in its checkpoints), so no agent can make two heads collide on purpose; 60 bits keep
    the int at 32 bytes; never 0 (0: no fast path)."""
    return (xxh3_64_intdigest(head, seed) >> 4) or 1


_CONNECT: Final = b'"kind":"connect"'
_AS_HEARTBEAT: Final = b'"kind":"heartbeat"'


def _head_digest(raw: bytes, kind: str, seed: int) -> int:
    """The digest a plain heartbeat of this machine will match, or 0 (no fast path) when the
    message has not the usual layout.

    A ``connect`` gives the digest of its head with the kind spelled ``heartbeat``: the next
    heartbeat, identical but for its kind, then takes the fast path. Only when ``"kind"``
    occurs once in the head, so the replaced bytes are the kind itself (not a tag)."""
    parts = split_heartbeat(raw)
    if parts is None:
        return 0
    head = parts[0]
    if kind == "heartbeat":
        return _digest(head, seed)
    if kind == "connect" and head.count(b'"kind"') == 1 and _CONNECT in head:
        return _digest(head.replace(_CONNECT, _AS_HEARTBEAT), seed)
    return 0


class PartitionIndex:
    """One partition's machines and the indexes derived from them.

    ``machines``, ``late``, ``pending``, ``previous_tick`` and ``snapshot_bucket`` are state
    (checkpointed); everything else is derived from them on restore.
    """

    __slots__ = (
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

    def connected_by_scope(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (status, location, _os, _sub), n in self.counts.items():
            if status == "Connected" and n:
                out["fleet"] += n
                out[f"location={location}"] += n
        return out

    def early_counts(self) -> tuple[Counter[str], Counter[str]]:
        """Machines Connected and late per location and per subscription part (early
        warning's interval samples)."""
        connected = self.connected_by_scope()
        for (status, location, _os, sub), n in self.counts.items():
            if status == "Connected" and n:
                connected[part_scope(sub, location)] += n
        return connected, self.late_by_scope + self.late_by_part


def _count_key(state: MachineState, info: MachineInfo) -> CountKey:
    return (state.status.value, info.location, info.os_type, info.subscription_id)


class Engine:
    def __init__(
        self,
        settings: Settings,
        *,
        identity: IdentityBindings | None = None,
        fast_path: bool = True,
        delays: bool = True,
        fp_seed: int | None = None,
        rescan_held: bool = False,
    ) -> None:
        self.settings = settings
        # the fingerprint seed of partitions that start empty; None: a random one each
        self.fp_seed = fp_seed
        self.fast_path = fast_path  # False: every message takes the general path (tests)
        # False: no delivery-delay bookkeeping on the fast path (the bench's reference for
        # what early warning costs the fast path; a worker always keeps it)
        self.delays = delays
        # True: every tick decodes every held machine to find those to look at, and every
        # machine whose wheel bucket came up, the way it was done before the held index (the
        # reference of its property test)
        self.rescan_held = rescan_held
        # True while a partition's log is replayed after a restart: its transitions were
        # emitted (and counted) by the run that committed them
        self.replaying = False
        self._window_starts: dict[float, float] = {}
        self._partitioner = KeyPartitioner(settings.kafka.partitions)
        # signed heartbeats required when bindings are configured (a bad file fails at start)
        if identity is None and settings.identity.bindings:
            identity = load_bindings(settings.identity.bindings)
        self.identity = identity
        self.timing = Timing(
            disconnect_after=settings.timing.disconnect_after,
            expire_after=settings.timing.expire_after,
            outage_hold=settings.timing.outage_hold,
            window=settings.timing.window,
            flap_threshold=settings.timing.flap_threshold,
        )
        self.late_after = settings.timing.late_after or late_after(
            settings.timing.heartbeat_interval, settings.timing.disconnect_after
        )
        # delivery delays and interval samples (docs/early-warning.md); the samples of ticks
        # since the caller last took them
        self.early = EarlyWarning(settings)
        self.early_samples: list[PartitionSample] = []
        self.granularity = min(settings.timing.check_interval, 1.0)
        self.partitions: dict[int, PartitionIndex] = {}
        self.stats = EngineStats()
        self._accepts_region = settings.input.accepts_region
        self._max_bytes = settings.input.max_message_bytes
        self.window = settings.timing.window if settings.worker.availability_windows else 0.0
        self.expected = max(1, round(settings.timing.window / settings.timing.heartbeat_interval))

    # ---- assignment -------------------------------------------------------------------

    def partition_of(self, key: str) -> int:
        return int(self._partitioner(key.encode()))

    def index_for(self, p: int) -> PartitionIndex:
        idx = self.partitions.get(p)
        if idx is None:
            idx = self.partitions[p] = PartitionIndex(self.granularity, self._new_seed())
        return idx

    def _new_seed(self) -> int:
        return randbits(64) if self.fp_seed is None else self.fp_seed

    def release(self, p: int) -> None:
        """Forget a partition this worker no longer owns."""
        self.partitions.pop(p, None)
        self.early.release(p)

    def adopt(
        self,
        p: int,
        machines: dict[str, Slot],
        index: Sequence[tuple[str, str, str, str, float, float | None]],
        *,
        late: Iterable[str] = (),
        pending: Mapping[str, float] | None = None,
        previous_tick: float | None = None,
        snapshot_bucket: int = -1,
        seed: int | None = None,
        maintenance: Sequence[Mapping[str, Any]] = (),
    ) -> PartitionIndex:
        """Install a partition's restored state and derive its indexes in one pass.

        ``index`` holds, per machine in ``machines``' order, the record fields the indexes
        need (status, location, os type, subscription, last status change, held since), so
        that a million machines are indexed without decoding a record or building a state.
        """
        steps = self.adopting(
            p, machines, index, late=late, pending=pending, previous_tick=previous_tick,
            snapshot_bucket=snapshot_bucket, seed=seed, maintenance=maintenance,
        )  # fmt: skip
        for _ in steps:
            pass
        return self.partitions[p]

    def adopting(
        self,
        p: int,
        machines: dict[str, Slot],
        index: Sequence[tuple[str, str, str, str, float, float | None]],
        *,
        late: Iterable[str] = (),
        pending: Mapping[str, float] | None = None,
        previous_tick: float | None = None,
        snapshot_bucket: int = -1,
        seed: int | None = None,
        maintenance: Sequence[Mapping[str, Any]] = (),
        step: int = ADOPT_STEP,
    ) -> Iterator[int]:
        """:meth:`adopt` in steps of ``step`` machines (yields the machines done so far), so
        that a worker restoring a million machines lets its event loop run in between. The
        partition is installed after the last step: nothing sees it half built.
        """
        # the fingerprints in ``machines`` were made with ``seed``; without it they match nothing
        # and every machine's next heartbeat takes the general path once
        idx = PartitionIndex(self.granularity, seed if seed is not None else self._new_seed())
        idx.machines = machines
        idx.previous_tick = previous_tick
        idx.snapshot_bucket = snapshot_bucket
        self._plan(idx, maintenance)
        if pending:
            idx.pending.update(pending)
        counts, windows, timing = idx.counts, idx.windows, self.timing
        counters_for = self.early.counters_for
        schedule, late_after = idx.wheel.schedule, self.late_after
        # a machine's flap window is that of its last status change: one changed before the
        # window of the previous tick cannot be flapping now, so only the others are decoded
        recent = -math.inf if previous_tick is None else flap_window(previous_tick, timing)
        done = 0
        for (key, slot), (status, location, os_type, sub, changed, held) in zip(
            machines.items(), index, strict=True
        ):
            counts[(status, location, os_type, sub)] += 1
            st = _STATUS[status]
            if st is Status.DISCONNECTED:
                idx.disconnected.add(key)
                if changed >= recent:
                    self._mark_flapping(idx, key, from_slot(slot).state)
            if held is not None:
                idx.hold(key, location)
            if slot.wstart is not None:
                windows.setdefault(slot.wstart, set()).add(key)
            slot.loc = counters_for(idx, location, sub)
            at = deadline_of(st, slot.hb, changed, held, timing)
            if at is not None:
                if st is Status.CONNECTED and held is None:
                    at = min(at, slot.hb + late_after)  # late is marked below
                schedule(key, at)
            done += 1
            if done % step == 0:
                yield done
        late = set(late)
        if late:
            for key, (_, location, _os, sub, *_rest) in zip(machines, index, strict=True):
                if key in late:
                    idx.late.add(key)
                    for s in scopes_of_location(location):
                        idx.late_by_scope[s] += 1
                    idx.late_by_part[part_scope(sub, location)] += 1
        self.partitions[p] = idx
        yield done

    def _load(self, idx: PartitionIndex, key: str) -> Machine | None:
        slot = idx.machines.get(key)
        return from_slot(slot) if slot is not None else None

    def _save(self, idx: PartitionIndex, key: str, m: Machine, fp: int) -> None:
        old = idx.machines.get(key)
        slot = idx.machines[key] = to_slot(m, fp)
        slot.loc = self.early.counters_for(idx, m.info.location, m.info.subscription_id)
        if old is not None:
            slot.base = old.base

    def _schedule(self, idx: PartitionIndex, key: str, state: MachineState) -> None:
        at = deadline(state, self.timing)
        if at is None:
            idx.wheel.unschedule(key)
            return
        if state.status is Status.CONNECTED and state.held_since is None and key not in idx.late:
            at = min(at, state.last_heartbeat_at + self.late_after)
        idx.wheel.schedule(key, at)

    # ---- late bookkeeping (leading indicator of mass silence) ------------------------------

    def _plan(self, idx: PartitionIndex, windows: Sequence[Mapping[str, Any]]) -> None:
        """Install the maintenance windows a tick (or a checkpoint) carries."""
        windows = list(windows)
        if windows == idx.planned_json:
            return
        book = Book()
        for w in windows:
            try:
                window = window_from_json(w)
            except MaintenanceError:
                continue  # the writer checked it; a window no worker can read covers nothing
            book.apply(window.id, window)
        idx.planned, idx.planned_json = book, windows

    @staticmethod
    def _planned_window(idx: PartitionIndex, info: MachineInfo, now: float) -> str | None:
        return idx.planned.window_for(
            info.resource_id, info.subscription_id, info.resource_group, info.location,
            info.tags, now,
        )  # fmt: skip

    def _set_late(self, idx: PartitionIndex, key: str, info: MachineInfo, late: bool) -> None:
        if late == (key in idx.late):
            return
        if late:
            idx.late.add(key)
            for s in scopes_of(info):
                idx.late_by_scope[s] += 1
            idx.late_by_part[part_scope(info.subscription_id, info.location)] += 1
        else:
            idx.late.discard(key)
            for s in scopes_of(info):
                idx.late_by_scope[s] -= 1
            part = part_scope(info.subscription_id, info.location)
            idx.late_by_part[part] -= 1
            if idx.late_by_part[part] <= 0:
                del idx.late_by_part[part]

    def _recount(
        self, idx: PartitionIndex, key: str, old: Machine | None, new: Machine | None
    ) -> None:
        if old is not None:
            ck = _count_key(old.state, old.info)
            idx.counts[ck] -= 1
            if idx.counts[ck] <= 0:
                del idx.counts[ck]
            self._set_late(idx, key, old.info, False)
        idx.disconnected.discard(key)
        idx.unflap(key)
        idx.unhold(key)
        idx.pending.pop(key, None)
        if new is not None:
            idx.counts[_count_key(new.state, new.info)] += 1
            if new.state.status is Status.DISCONNECTED:
                idx.disconnected.add(key)
                self._mark_flapping(idx, key, new.state)
            if new.state.held_since is not None:
                idx.hold(key, new.info.location)
        else:
            idx.wheel.unschedule(key)

    def _mark_flapping(self, idx: PartitionIndex, key: str, state: MachineState) -> None:
        if state.flap_count >= self.timing.flap_threshold:
            idx.flap(key, state.flap_window)

    # ---- input --------------------------------------------------------------------------

    def handle_message(
        self,
        p: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        arrived_at: float,
        *,
        topic: str,
        wall_now: float,
        headers: Sequence[tuple[str, bytes | None]] = (),
    ) -> tuple[list[Emit], bool]:
        """One record of the heartbeats topic. Returns outputs and whether it was accepted.

        ``headers``: the record's Kafka headers, checked against the identity bindings
        (signature, allowed machines) when the deployment has them.
        """
        if (
            self.fast_path
            and self.identity is None  # signed heartbeats: every message is checked
            and self.fast_heartbeat(p, key, value, arrived_at)
        ):
            return _NOTHING, True
        stats = self.stats
        stats.last_event_at = arrived_at
        raw = value or b""
        hb: Heartbeat | Reject = decode_heartbeat(
            raw,
            key,
            max_bytes=self.settings.input.max_message_bytes,
            accepts_region=self._accepts_region,
        )
        if self.identity is not None and isinstance(hb, Heartbeat):
            hb = self.identity.check(headers, raw, hb) or hb
        if isinstance(hb, Reject):
            stats.rejects[hb.reason] += 1
            return [
                Emit(
                    "dlq",
                    key,
                    dlq_record(
                        hb, raw, topic=topic, partition=p, offset=offset, received_at=arrived_at
                    ),
                )
            ], False
        stats.heartbeats[hb.kind] += 1
        delay = arrived_at - hb.sent_at
        if abs(delay) > self.settings.input.skew_warn:
            stats.clock_skew += 1

        idx = self.index_for(p)
        mkey = hb.key
        slot = idx.machines.get(mkey)
        old = from_slot(slot) if slot is not None else None
        step = on_message(
            old.state if old else None, hb.kind, arrived_at, hb.sent_at, hb.sequence, self.timing
        )
        stats.outcomes[step.outcome.value] += 1
        if step.outcome is Outcome.STALE or step.outcome is Outcome.UNKNOWN_DISCONNECT:
            return [], True
        info = MachineInfo.from_heartbeat(hb, arrived_at)
        out: list[Emit] = []
        new: Machine | None = None
        if step.state is not None:
            start, received = self._count(idx, mkey, old, hb.kind, arrived_at, out)
            new = Machine(step.state, info, start, received)
            self._save(idx, mkey, new, _head_digest(raw, hb.kind, idx.seed))
            if step.outcome is Outcome.APPLIED or step.transition is not None:
                self._delay(idx.machines[mkey], delay)
        else:
            if old is not None:
                self._close_window(idx, mkey, old, out)
            idx.machines.pop(mkey, None)
        self._recount(idx, mkey, old, new)
        if new is not None:
            self._schedule(idx, mkey, new.state)
        if step.transition is not None:
            out.append(self._status_emit(mkey, info, step.transition, wall_now))
        return out, True

    def takes_fast_path(self) -> bool:
        """Whether :meth:`fast_heartbeat` may be tried before :meth:`handle_message`."""
        return self.fast_path and self.identity is None  # signed: every message is checked

    def fast_heartbeat(
        self, p: int, key: bytes | None, value: bytes | None, arrived_at: float
    ) -> bool:
        """A heartbeat of a Connected machine that changes nothing durable: the common case.

        The machine's slot keeps a digest of the head (the bytes before sentAt) of the last
        heartbeat the full decoder accepted for it. A message with the very same head is the
        same machine, fields and kind, already validated: only its tail (sentAt, sequence) is
        parsed, and only the per-heartbeat fields move. Same result as the general path
        (decode, ``on_message``, ``_count``; a property test holds them equal). False: take
        the general path.
        """
        idx = self.partitions.get(p)
        if idx is None or key is None or value is None or len(value) > self._max_bytes:
            return False
        k = key.decode("utf-8", "replace")
        slot = idx.machines.get(k)
        if slot is None or not slot.ok or not slot.fp or k in idx.late or k in idx.pending:
            return False  # unknown, not plainly Connected, or scope bookkeeping changes
        parts = split_heartbeat(value)
        if parts is None:
            return False
        head, sent, seq = parts
        if _digest(head, idx.seed) != slot.fp:
            return False  # another machine's head, changed fields, or another kind
        if seq is not None and slot.seq is not None and seq <= slot.seq and sent <= slot.sent:
            return False  # stale: counted by the general path
        if self.window:
            if slot.wstart != math.floor(arrived_at / self.window) * self.window:
                return False  # opens (or closes and opens) a window
            slot.received += 1
        if arrived_at > slot.hb:
            slot.hb = arrived_at
        if sent > slot.sent:
            slot.sent = sent
        if seq is not None:
            slot.seq = seq
        stats = self.stats
        stats.last_event_at = arrived_at
        stats.heartbeats["heartbeat"] += 1
        delay = arrived_at - sent
        if abs(delay) > self.settings.input.skew_warn:
            stats.clock_skew += 1
        stats.outcomes["applied"] += 1
        if not self.delays:
            return True
        # delivery delay less the machine's own clock-offset baseline (early warning), into
        # the counters of its partition, location and subscription (the slot holds them)
        base = slot.base
        if delay < base:
            slot.base = base = delay
        else:
            slot.base = base = base + (delay - base) * CREEP
        d = delay - base
        c = slot.loc
        c[bisect_left(DELAY_BOUNDS, d)] += 1
        c[-1] += d
        return True

    @staticmethod
    def _delay(slot: Slot, delay: float) -> None:
        """The general path's share of :meth:`fast_heartbeat`'s delay bookkeeping."""
        base = slot.base
        slot.base = base = delay if delay < base else base + (delay - base) * CREEP
        d = delay - base
        c = slot.loc
        c[bisect_left(DELAY_BOUNDS, d)] += 1
        c[-1] += d

    def handle_tick(
        self,
        p: int,
        now: float,
        verdicts: Mapping[str, Verdict],
        *,
        wall_now: float,
        decided_at: float | None = None,
        maintenance: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[list[Emit], dict[str, ScopeCounts]]:
        """A tick appended to partition ``p`` at broker time ``now``.

        Everything appended to ``p`` before the tick has been processed, so every machine of
        ``p`` due at or before ``now`` really was silent (docs/how-it-decides.md, Lag).

        ``verdicts``, ``decided_at`` (broker time of the latest mass-silence decision; None: no
        decider) and ``maintenance`` (the windows that may cover this tick's decisions, as
        JSON) are the ones the tick record carries, so that a replay of the log decides
        exactly as the first run did.
        """
        idx = self.index_for(p)
        self._plan(idx, maintenance)
        previous_tick, idx.previous_tick = idx.previous_tick, now
        self.stats.last_event_at = max(self.stats.last_event_at, now)
        out: list[Emit] = []
        if idx.windows:
            self._close_windows(idx, now, out)
        due = idx.wheel.pop_due(now)
        if idx.held:
            # a scope that recovered releases its held machines soon (late_after, below),
            # not at the hold's end
            looks = self._held_rescan(idx, verdicts) if self.rescan_held else None
            if looks is None:
                looks = self._held_due(idx, verdicts, now)
            if looks:
                due.extend(looks)
                due = list(dict.fromkeys(due))
        self.stats.tick_looks += len(due)
        # in key order: the records of one tick come out the same in a replay (the wheel's
        # buckets are sets, whose order depends on how they were filled)
        due.sort()
        # First mark who is late now, so that the local evidence of a mass silence (below)
        # counts every machine this tick found late.
        # Machines in a maintenance window are left out of the mass-silence evidence: a planned
        # reboot of a whole location is no outage of it.
        looked: list[tuple[str, Machine, str | None]] = []
        shortcut = not self.rescan_held
        disconnect_after, late_after = self.timing.disconnect_after, self.late_after
        for key in due:
            slot = idx.machines.get(key)
            if slot is None:
                continue
            if shortcut and slot.ok:
                # A plain Connected machine whose wheel bucket came up before its next moment
                # (buckets start before the deadlines they hold): judging it would only book it
                # again, so it is booked again without decoding its record. A late one only
                # without maintenance windows (one may have begun: it would no longer be late).
                if key not in idx.late:
                    if now < slot.hb + late_after:
                        idx.wheel.schedule(key, slot.hb + late_after)
                        continue
                elif now < slot.hb + disconnect_after and not len(idx.planned):
                    idx.wheel.schedule(key, slot.hb + disconnect_after)
                    continue
            m = from_slot(slot)
            planned = self._planned_window(idx, m.info, now) if len(idx.planned) else None
            if planned is not None:
                self._set_late(idx, key, m.info, False)
            elif (
                m.state.status is Status.CONNECTED
                and key not in idx.late
                and now >= m.state.last_heartbeat_at + self.late_after
            ):
                self._set_late(idx, key, m.info, True)
            looked.append((key, m, planned))
        suspicious = self._locally_silent_scopes(idx) if looked else set()
        for key, m, planned in looked:
            state = m.state
            # A held machine stays held for late_after past its scope's recovery: the agents
            # that report again come back over a heartbeat interval, not all at the instant
            # the verdict flips, and they must never flip (docs/how-it-decides.md, Mass silence).
            held = state.held_since is not None
            silent = planned is None and any(
                (v := verdicts.get(s)) is not None
                and (v.silent or (held and now < v.since + self.late_after))
                for s in scopes_of(m.info)
            )
            # late and due in one tick: no tick of this partition fell between the moment it
            # became late and its deadline (judged from the log, not from memory, so that a
            # replay after a crash decides exactly as the first run did)
            unseen_late = (
                previous_tick is not None
                and previous_tick < state.last_heartbeat_at + self.late_after
            )
            waiting = (
                not silent
                and planned is None
                and (
                    key in idx.pending
                    or (unseen_late and not suspicious.isdisjoint(scopes_of(m.info)))
                )
            )
            if waiting and self._await_verdict(idx, key, state, now, decided_at):
                idx.wheel.schedule(key, now)  # look again at the next tick
                continue
            step = on_deadline(state, now, self.timing, scope_silent=silent)
            if step.outcome is Outcome.HELD:
                self.stats.outcomes["held"] += 1
            if step.state is None:  # on_deadline always returns a state
                raise RuntimeError(f"no state after a deadline for {key}")
            if step.state != state:
                new = Machine(step.state, m.info, m.window_start, m.received)
                self._save(idx, key, new, idx.machines[key].fp)
                if step.state.held_since is not None:
                    idx.hold(key, m.info.location)
                if step.transition is not None:
                    self._recount(idx, key, m, new)
                    out.append(self._status_emit(key, m.info, step.transition, wall_now, planned))
                m = new
            self._schedule(idx, key, m.state)
        counts = {
            scope: ScopeCounts(connected, idx.late_by_scope.get(scope, 0))
            for scope, connected in idx.connected_by_scope().items()
        }
        for scope, late in idx.late_by_scope.items():
            if scope not in counts and late:
                counts[scope] = ScopeCounts(0, late)
        sample = self.early.on_tick(p, idx, now, idx.early_counts)
        if sample is not None:
            self.early_samples.append(sample)
        bucket = math.floor(now / self.settings.worker.fleet_snapshot_interval)
        if bucket > idx.snapshot_bucket:
            idx.snapshot_bucket = bucket
            out.append(
                self._snapshot(p, idx, bucket * self.settings.worker.fleet_snapshot_interval)
            )
        return out, counts

    def _held_due(
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
            ) and not self._window_may_cover(idx, location, now):
                continue  # held on for the grace: looking would change nothing
            out.extend(keys)
        return out

    @staticmethod
    def _window_may_cover(idx: PartitionIndex, location: str, now: float) -> bool:
        return len(idx.planned) > 0 and any(
            w.selector.location in (None, location) and w.active_at(now) for w in idx.planned.all()
        )

    def _held_rescan(self, idx: PartitionIndex, verdicts: Mapping[str, Verdict]) -> list[str]:
        """The reference :meth:`_held_due` is tested against (``rescan_held``): every held
        machine of no silent scope, found by decoding each held machine's record."""
        silent_scopes = {s for s, v in verdicts.items() if v.silent}
        if not silent_scopes:
            return list(idx.held)
        out: list[str] = []
        for k in list(idx.held):
            slot = idx.machines.get(k)
            if slot is not None and not (set(scopes_of(from_slot(slot).info)) & silent_scopes):
                out.append(k)
        return out

    # ---- availability windows ---------------------------------------------------------------

    def _count(
        self,
        idx: PartitionIndex,
        key: str,
        old: Machine | None,
        kind: str,
        arrived_at: float,
        out: list[Emit],
    ) -> tuple[float | None, int]:
        """The machine's window start and count with this message counted (broker time).

        A heartbeat of a later window closes the machine's open one first (a tick may not
        have reached its end yet); a disconnect message is not a heartbeat and counts nothing.
        """
        start, received = (old.window_start, old.received) if old is not None else (None, 0)
        if self.window and kind != "disconnect":
            w = math.floor(arrived_at / self.window) * self.window
            # one float object per window for all machines (24 bytes a machine at a million)
            w = self._window_starts.setdefault(w, w)
            if old is not None and start is not None and start != w:
                self._close_window(idx, key, old, out)
                start, received = None, 0
            start, received = w, received + 1
            idx.windows.setdefault(w, set()).add(key)
        return start, received

    def _close_window(self, idx: PartitionIndex, key: str, m: Machine, out: list[Emit]) -> None:
        if m.window_start is None:
            return
        keys = idx.windows.get(m.window_start)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del idx.windows[m.window_start]
        out.append(self._window_emit(idx, key, m))

    def _close_windows(self, idx: PartitionIndex, now: float, out: list[Emit]) -> None:
        """Windows that ended by the tick's time: all of their heartbeats are before the tick
        in the log, so their counts are final.

        Tumbling windows all end at once, so a tick closes at most a budget of them: enough
        to close a whole partition within a quarter of a window, so that a window boundary
        (or a restart after a long stop) cannot stall the partition for one huge tick. A
        machine that reports again closes its own window at once (``_count``); the budget
        paces only the silent ones.
        """
        budget = max(
            10, math.ceil(len(idx.machines) * self.settings.timing.check_interval * 4 / self.window)
        )
        for w in sorted(w for w in idx.windows if w + self.window <= now):
            keys = idx.windows[w]
            if len(keys) <= budget:
                del idx.windows[w]
                batch = sorted(keys)
            else:
                # any `budget` of them: which ones a tick picks is seen by no reader (what a
                # crashed run closed was never committed), only that each closes once
                batch = [keys.pop() for _ in range(budget)]
            budget -= len(batch)
            for key in batch:
                slot = idx.machines.get(key)
                if slot is None or slot.wstart != w:
                    continue
                out.append(self._window_emit(idx, key, from_slot(slot)))
                slot.wstart, slot.received = None, 0
            if budget <= 0:
                break

    def _window_emit(self, idx: PartitionIndex, key: str, m: Machine) -> Emit:
        start = m.window_start or 0.0
        i = m.info
        received, expected, planned = m.received, self.expected, 0.0
        if len(idx.planned):
            planned = idx.planned.planned_seconds(
                i.resource_id, i.subscription_id, i.resource_group, i.location, i.tags,
                start, start + self.window,
            )  # fmt: skip
            if planned > 0.0:
                # availability excludes planned time: heartbeats expected outside it; those
                # that came inside it may stand in for missing ones (capped at 100 %)
                expected = math.floor(self.expected * (1.0 - planned / self.window))
                received = min(received, expected)
        return Emit(
            "fleet",
            key.encode(),
            orjson.dumps(
                {
                    "type": "WindowCounts",
                    "resourceId": i.resource_id,
                    "subscriptionId": i.subscription_id,
                    "location": i.location,
                    "windowStart": rfc3339(start),
                    "windowEnd": rfc3339(start + self.window),
                    "received": received,
                    "expected": expected,
                    "plannedSeconds": round(planned, 3),
                }
            ),
        )

    def _locally_silent_scopes(self, idx: PartitionIndex) -> set[str]:
        """Scopes whose machines in this partition alone look like a mass silence.

        Only then does a machine found late and due in one tick wait for the shared verdict:
        a lone outage seen after a restart is declared at once, as before.
        """
        ratio = self.settings.timing.outage_ratio
        return {
            scope
            for scope, connected in idx.connected_by_scope().items()
            if idx.late_by_scope.get(scope, 0) >= max(1.0, ratio * connected)
        }

    def _await_verdict(
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
        if (
            state.held_since is not None
            or now < state.last_heartbeat_at + self.timing.disconnect_after
        ):
            return False
        since = idx.pending.get(key)
        if since is None:
            since = idx.pending[key] = now
        grace = self.settings.worker.commit_interval + self.settings.timing.check_interval
        if decided_at >= since + grace or now >= since + self.timing.outage_hold:
            del idx.pending[key]
            return False
        return True

    def decide_scopes(
        self, now: float, totals: Mapping[str, ScopeCounts], verdicts: Mapping[str, Verdict]
    ) -> tuple[list[Emit], dict[str, Verdict]]:
        """Mass silence per scope from every partition's counts (run by one partition's owner)."""
        out: list[Emit] = []
        changed: dict[str, Verdict] = {}
        for scope in sorted(set(totals) | {s for s, v in verdicts.items() if v.silent}):
            total = totals.get(scope, ScopeCounts(0, 0))
            silent = scope_is_silent(
                total,
                ratio=self.settings.timing.outage_ratio,
                min_machines=self.settings.timing.outage_min_machines,
            )
            before = verdicts.get(scope)
            was = before is not None and before.silent
            if silent == was:
                continue
            v = Verdict(silent, now, total.late)
            changed[scope] = v
            out.append(
                Emit(
                    "status",
                    f"scope:{scope}".encode(),
                    orjson.dumps(
                        {
                            "type": "ScopeSilent" if silent else "ScopeRecovered",
                            "scope": scope,
                            "machines": total.late,
                            "connected": total.connected,
                            "at": rfc3339(now),
                        }
                    ),
                )
            )
        return out, changed

    # ---- output -------------------------------------------------------------------------

    def _status_emit(
        self,
        key: str,
        info: MachineInfo,
        tr: Transition,
        wall_now: float,
        maintenance: str | None = None,
    ) -> Emit:
        changed_at = max(wall_now, tr.at)
        delay: float | None = None
        if tr.detection_delay is not None:
            # decided at tick time tr.at; reported against when it was really emitted
            delay = round(tr.detection_delay + (changed_at - tr.at), 3)
            if not self.replaying:
                self.stats.detection_delay.observe(max(delay, 0.0))
        prev = tr.previous.value if tr.previous else None
        if not self.replaying:
            self.stats.transitions[(prev or "none", tr.status.value, tr.reason.value)] += 1
        record = {
            "type": "StatusChanged",
            # the decision time keeps ids unique across a Deleted -> re-onboarded machine
            "transitionId": f"{key}#{tr.number}@{round(tr.at * 1000)}",
            "resourceId": info.resource_id,
            "subscriptionId": info.subscription_id,
            "resourceGroup": info.resource_group,
            "machineName": info.machine_name,
            "location": info.location,
            "osType": info.os_type,
            "agentVersion": info.agent_version,
            "tags": info.tags,
            "previousStatus": prev,
            "status": tr.status.value,
            "reason": tr.reason.value,
            "changedAt": rfc3339(changed_at),
            "decidedAt": rfc3339(tr.at),
            "lastHeartbeatAt": rfc3339(tr.last_heartbeat_at),
            "detectionDelaySeconds": delay,
            "flapping": tr.flapping,
            "massOutage": tr.mass_outage,
            # the maintenance window the machine was in when declared (planned: no page)
            "maintenance": maintenance,
        }
        return Emit("status", key.encode(), orjson.dumps(record))

    def _snapshot(self, p: int, idx: PartitionIndex, at: float) -> Emit:
        scopes: dict[str, Counter[str]] = {}
        for (status, location, _os, sub), n in idx.counts.items():
            for scope in ("fleet", f"location={location}", f"subscription={sub}"):
                scopes.setdefault(scope, Counter())[status] += n
        return Emit(
            "fleet",
            f"partition:{p}".encode(),
            orjson.dumps(
                {
                    "type": "PartitionSnapshot",
                    "partition": p,
                    "at": rfc3339(at),
                    "scopes": {s: dict(c) for s, c in scopes.items()},
                }
            ),
        )

    # ---- queries (HTTP API, metrics) -----------------------------------------------------

    def machine(self, key: str) -> Machine | None:
        """A machine of a partition this worker owns (None: unknown here)."""
        idx = self.partitions.get(self.partition_of(key))
        return self._load(idx, key) if idx is not None else None

    def owned_keys(self) -> Iterable[str]:
        for idx in list(self.partitions.values()):
            yield from list(idx.machines)

    def disconnected_keys(self) -> Iterable[str]:
        for idx in self.partitions.values():
            yield from idx.disconnected

    def disconnected_count(self) -> int:
        return sum(len(idx.disconnected) for idx in list(self.partitions.values()))

    def flapping_count(self, now: float) -> int:
        """Disconnected machines flapping at ``now`` (:func:`is_flapping`), from the flap
        index: no machine is looked at."""
        window = flap_window(now, self.timing)
        return sum(idx.flaps_by_window.get(window, 0) for idx in list(self.partitions.values()))

    def late_by_location(self) -> Counter[str]:
        """Late machines by location (owned partitions)."""
        out: Counter[str] = Counter()
        for idx in list(self.partitions.values()):
            for scope, n in idx.late_by_scope.items():
                if scope.startswith("location=") and n > 0:
                    out[scope[len("location=") :]] += n
        return out

    def is_late(self, key: str) -> bool:
        idx = self.partitions.get(self.partition_of(key))
        return idx is not None and key in idx.late

    def held_keys(self) -> list[str]:
        """Machines whose Disconnected a ScopeSilent verdict holds."""
        return [k for idx in list(self.partitions.values()) for k in idx.held]

    def held_by_scope(self) -> Counter[str]:
        """Held machines per scope (the fleet, each location), from the held index: no
        machine is looked at."""
        out: Counter[str] = Counter()
        for idx in list(self.partitions.values()):
            for location, keys in list(idx.held_by_location.items()):
                out["fleet"] += len(keys)
                out[f"location={location}"] += len(keys)
        return out

    def counts(self) -> Counter[CountKey]:
        total: Counter[CountKey] = Counter()
        for idx in self.partitions.values():
            total.update(idx.counts)
        return total
