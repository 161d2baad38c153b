"""Per-partition processing: heartbeats and ticks in, decisions and output records out.

Kafka-free on purpose (the worker's batch loop feeds it and sends what it returns), so the
whole decision logic is exercised by plain tests. The engine routes; each rule lives in a
module of its own: the status machine (:mod:`.status`), a tick's gates (:mod:`.tick`), mass
silence (:mod:`.mass_silence`), availability windows (:mod:`.availability`), the records
written (:mod:`.output_records`). The state of each partition lives in plain memory
(:class:`.PartitionIndex`); it is a function of the heartbeats log, so a checkpoint plus the
log after it rebuilds it exactly (:mod:`arcbeat.streams.kafka.checkpoint`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from secrets import randbits
from typing import Any, Final, Literal

from arcbeat.streams.decide.availability import AvailabilityWindows, window_start
from arcbeat.streams.decide.deadlines import ScopeCounts, late_after, next_look
from arcbeat.streams.decide.degradation import CREEP, DELAY_BOUNDS, DELAY_SUM
from arcbeat.streams.decide.early_warning import EarlyWarning, PartitionSample
from arcbeat.streams.decide.heartbeat_heads import Parts, digest, head_digest, split_heartbeat
from arcbeat.streams.decide.identity import IdentityBindings, load_bindings
from arcbeat.streams.decide.machines import (
    Machine,
    MachineInfo,
    Slot,
    encode_record,
    from_slot,
    to_slot,
)
from arcbeat.streams.decide.mass_silence import MassSilence, Verdict
from arcbeat.streams.decide.output_records import Emit, status_changed
from arcbeat.streams.decide.owned_partitions import OwnedPartitions
from arcbeat.streams.decide.partition_index import PartitionIndex
from arcbeat.streams.decide.records import Heartbeat, Reject, decode_heartbeat, dlq_record
from arcbeat.streams.decide.restore import ADOPT_STEP, IndexRow, build_index
from arcbeat.streams.decide.stats import EngineStats
from arcbeat.streams.decide.status import (
    MachineState,
    Outcome,
    Status,
    Timing,
    Transition,
    deadline,
    on_message,
)
from arcbeat.streams.decide.tick import TickResult, run_steps, tick_steps
from arcbeat.streams.settings import Settings

_NOTHING: Final[list[Emit]] = []  # returned, never changed
UNSPLIT: Final[Literal[False]] = False  # handle_message's ``parts``: not split yet
_FIRST_BOUND: Final = DELAY_BOUNDS[0]  # delays up to it: bucket 0, as bisect_left gives


class Engine(OwnedPartitions):
    def __init__(
        self,
        settings: Settings,
        *,
        identity: IdentityBindings | None = None,
        fast_path: bool = True,
        delays: bool | None = None,
        fp_seed: int | None = None,
        rescan_held: bool = False,
    ) -> None:
        t = settings.timing
        super().__init__(
            settings.kafka.partitions,
            Timing(
                disconnect_after=t.disconnect_after,
                expire_after=t.expire_after,
                outage_hold=t.outage_hold,
                window=t.window,
                flap_threshold=t.flap_threshold,
            ),
        )
        self.settings = settings
        # the fingerprint seed of partitions that start empty; None: a random one each
        self.fp_seed = fp_seed
        self.fast_path = fast_path  # False: every message takes the general path (tests)
        # False: no delivery-delay bookkeeping (None: the delivery_delays setting)
        self.delays = t.delivery_delays if delays is None else delays
        # True: every tick decodes every held machine to find those to look at, and every
        # machine whose wheel bucket came up, the way it was done before the held index (the
        # reference of its property test)
        self.rescan_held = rescan_held
        # True while a partition's log is replayed after a restart: its transitions were
        # emitted (and counted) by the run that committed them
        self.replaying = False
        # signed heartbeats required when bindings are configured (a bad file fails at start)
        if identity is None and settings.identity.bindings:
            identity = load_bindings(settings.identity.bindings)
        self.identity = identity
        self.late_after = t.late_after or late_after(t.heartbeat_interval, t.disconnect_after)
        self.silence = MassSilence(
            ratio=t.outage_ratio,
            min_machines=t.outage_min_machines,
            late_after=self.late_after,
            disconnect_after=t.disconnect_after,
            outage_hold=t.outage_hold,
            grace=settings.worker.commit_interval + t.check_interval,
        )
        # delivery delays and interval samples (docs/early-warning.md); the samples of ticks
        # since the caller last took them
        self.early = EarlyWarning(settings)
        self.early_samples: list[PartitionSample] = []
        self.granularity = min(t.check_interval, 1.0)
        self.stats = EngineStats()
        self._accepts_region = settings.input.accepts_region
        self._max_bytes = settings.input.max_message_bytes
        self._skew_warn = settings.input.skew_warn
        self.availability = AvailabilityWindows(
            t.window if settings.worker.availability_windows else 0.0,
            max(1, round(t.window / t.heartbeat_interval)),
            t.check_interval,
        )
        self.window = self.availability.window  # 0: no availability windows

    # ---- assignment -------------------------------------------------------------------

    def index_for(self, p: int) -> PartitionIndex:
        idx = self.partitions.get(p)
        if idx is None:
            idx = self.partitions[p] = PartitionIndex(self.granularity, self._new_seed())
        return idx

    def _new_seed(self) -> int:
        return randbits(64) if self.fp_seed is None else self.fp_seed

    def reset(self, p: int) -> None:
        """Start partition ``p`` empty (its log is read from the start)."""
        self.partitions[p] = PartitionIndex(self.granularity, self._new_seed())

    def release(self, p: int) -> None:
        """Forget a partition this worker no longer owns."""
        self.partitions.pop(p, None)
        self.early.release(p)

    def adopting(
        self,
        p: int,
        machines: dict[str, Slot],
        index: Sequence[IndexRow],
        *,
        late: Iterable[str] = (),
        pending: Mapping[str, float] | None = None,
        previous_tick: float | None = None,
        snapshot_bucket: int = -1,
        seed: int | None = None,
        maintenance: Sequence[Mapping[str, Any]] = (),
        step: int = ADOPT_STEP,
    ) -> Iterator[int]:
        """Install a partition's restored state, deriving its indexes in steps of ``step``
        machines (yields the machines done so far), so that a worker restoring a million
        machines lets its event loop run in between. The partition is installed after the
        last step: nothing sees it half built.

        ``index`` holds, per machine in ``machines``' order, the record fields the indexes
        need (:data:`.restore.IndexRow`), so that a million machines are indexed without
        decoding a record or building a state.
        """
        # the fingerprints in ``machines`` were made with ``seed``; without it they match nothing
        # and every machine's next heartbeat takes the general path once
        idx = PartitionIndex(self.granularity, seed if seed is not None else self._new_seed())
        idx.machines = machines
        idx.previous_tick = previous_tick
        idx.snapshot_bucket = snapshot_bucket
        idx.plan(maintenance)
        if pending:
            idx.pending.update(pending)
        yield from build_index(
            idx, index, set(late), self.timing, self.late_after, self.early.counters_for, step
        )
        self.partitions[p] = idx

    def save(self, idx: PartitionIndex, key: str, m: Machine, fp: int) -> None:
        """Keep the machine's new record in its slot, with its fingerprint ``fp``."""
        old = idx.machines.get(key)
        slot = idx.machines[key] = to_slot(m, fp)
        slot.loc = self.early.counters_for(idx, m.info.location, m.info.subscription_id)
        if old is not None:
            slot.base = old.base

    @staticmethod
    def restate(idx: PartitionIndex, key: str, state: MachineState, info: MachineInfo) -> None:
        """A tick moved the machine's state: its slot's record follows, in place. A deadline
        moves no per-heartbeat field (arrival, sentAt, sequence, window) and no descriptive
        one, so the slot's other fields, counters and baseline stay as they are."""
        slot = idx.machines[key]
        slot.rec = encode_record(state, info)
        slot.ok = state.status is Status.CONNECTED and state.held_since is None

    def schedule(self, idx: PartitionIndex, key: str, state: MachineState) -> None:
        """Book the machine's next look on the wheel (none: it has no deadline)."""
        at = deadline(state, self.timing)
        if at is None:
            idx.wheel.unschedule(key)
            return
        watch = (
            state.status is Status.CONNECTED and state.held_since is None and key not in idx.late
        )
        at = next_look(at, state.last_heartbeat_at, self.late_after, watch=watch)
        idx.wheel.schedule(key, at)

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
        parts: Parts | Literal[False] | None = UNSPLIT,
    ) -> tuple[list[Emit], bool]:
        """One record of the heartbeats topic. Returns outputs and whether it was accepted.

        ``headers``: the record's Kafka headers, checked against the identity bindings
        (signature, allowed machines) when the deployment has them. ``parts``: the message
        already split (:func:`.split_heartbeat`) and turned down by :meth:`fast_heartbeat`
        (the batch loop's case); by default it is split and the fast path tried here.
        """
        if parts is False:
            parts = split_heartbeat(value)
            if self.takes_fast_path() and self.fast_heartbeat(p, key, value, arrived_at, parts):
                return _NOTHING, True
        stats = self.stats
        stats.last_event_at = arrived_at
        raw = value or b""
        hb: Heartbeat | Reject = decode_heartbeat(
            raw, key, max_bytes=self._max_bytes, accepts_region=self._accepts_region
        )
        if self.identity is not None and isinstance(hb, Heartbeat):
            hb = self.identity.check(headers, raw, hb) or hb
        if isinstance(hb, Reject):
            stats.rejects[hb.reason] += 1
            record = dlq_record(
                hb, raw, topic=topic, partition=p, offset=offset, received_at=arrived_at
            )
            return [Emit("dlq", key, record)], False
        stats.heartbeats[hb.kind] += 1
        delay = arrived_at - hb.sent_at
        if abs(delay) > self._skew_warn:
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
            start, received = self.availability.count(idx, mkey, old, hb.kind, arrived_at, out)
            new = Machine(step.state, info, start, received)
            self.save(idx, mkey, new, head_digest(parts, hb.kind, idx.seed))
            if self.delays and (step.outcome is Outcome.APPLIED or step.transition is not None):
                self._delay(idx.machines[mkey], delay)
        else:
            if old is not None:
                self.availability.close(idx, mkey, old, out)
            idx.machines.pop(mkey, None)
        idx.recount(mkey, old, new, self.timing.flap_threshold)
        if new is not None:
            self.schedule(idx, mkey, new.state)
        if step.transition is not None:
            out.append(self.status_emit(mkey, info, step.transition, wall_now))
        return out, True

    def takes_fast_path(self) -> bool:
        """Whether :meth:`fast_heartbeat` may be tried before :meth:`handle_message`."""
        return self.fast_path and self.identity is None  # signed: every message is checked

    def fast_heartbeat(
        self,
        p: int,
        key: bytes | None,
        value: bytes | None,
        arrived_at: float,
        parts: Parts | None,
    ) -> bool:
        """A heartbeat of a Connected machine that changes nothing durable: the common case.

        ``parts``: the message split by :func:`.split_heartbeat` (None: not in the usual
        layout). The machine's slot keeps a digest of the head (the bytes before sentAt) of
        the last heartbeat the full decoder accepted for it. A message with the very same head
        is the same machine, fields and kind, already validated: only its tail (sentAt,
        sequence) is parsed, and only the per-heartbeat fields move. Same result as the
        general path (decode, ``on_message``, the window count; a property test holds them
        equal). False: take the general path.
        """
        idx = self.partitions.get(p)
        if idx is None or key is None or value is None or len(value) > self._max_bytes:
            return False
        k = key.decode("utf-8", "replace")
        slot = idx.machines.get(k)
        if slot is None or not slot.ok or not slot.fp or k in idx.late or k in idx.pending:
            return False  # unknown, not plainly Connected, or scope bookkeeping changes
        if parts is None:
            return False
        head, sent, seq = parts
        if digest(head, idx.seed) != slot.fp:
            return False  # another machine's head, changed fields, or another kind
        if seq is not None and slot.seq is not None and seq <= slot.seq and sent <= slot.sent:
            return False  # stale: counted by the general path
        if self.window:
            if slot.wstart != window_start(arrived_at, self.window):
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
        if abs(delay) > self._skew_warn:
            stats.clock_skew += 1
        stats.outcomes["applied"] += 1
        if not self.delays:
            return True
        # delivery delay less the machine's own clock-offset baseline (early warning), into
        # the counters of its partition, location and subscription (the slot holds them);
        # written out here rather than calling _delay: this is the path nearly every heartbeat
        # takes
        base = slot.base
        if delay < base:
            slot.base = base = delay
        else:
            slot.base = base = base + (delay - base) * CREEP
        d = delay - base
        c = slot.loc
        if d <= _FIRST_BOUND:
            c[0] += 1  # a healthy uplink: one comparison, cheaper than a call to bisect_left
        else:
            c[bisect_left(DELAY_BOUNDS, d)] += 1
        c[DELAY_SUM] += d  # a non-negative index: CPython specialises it, not -1
        return True

    @staticmethod
    def _delay(slot: Slot, delay: float) -> None:
        """The general path's share of :meth:`fast_heartbeat`'s delay bookkeeping."""
        base = slot.base
        slot.base = base = delay if delay < base else base + (delay - base) * CREEP
        d = delay - base
        c = slot.loc
        c[bisect_left(DELAY_BOUNDS, d)] += 1
        c[DELAY_SUM] += d

    def handle_tick(
        self,
        p: int,
        now: float,
        verdicts: Mapping[str, Verdict],
        *,
        wall_now: float,
        decided_at: float | None = None,
        maintenance: Sequence[Mapping[str, Any]] = (),
    ) -> TickResult:
        """A tick appended to partition ``p`` at broker time ``now`` (:mod:`.tick`).

        Everything appended to ``p`` before the tick has been processed, so every machine of
        ``p`` due at or before ``now`` really was silent (docs/how-it-decides.md, Lag).

        ``verdicts``, ``decided_at`` (broker time of the latest mass-silence decision; None: no
        decider) and ``maintenance`` (the windows that may cover this tick's decisions, as
        JSON) are the ones the tick record carries, so that a replay of the log decides
        exactly as the first run did. Returns the outputs and the partition's scope counts.
        """
        return run_steps(
            self.tick_steps(
                p, now, verdicts, wall_now=wall_now, decided_at=decided_at, maintenance=maintenance
            )
        )

    def tick_steps(
        self,
        p: int,
        now: float,
        verdicts: Mapping[str, Verdict],
        *,
        wall_now: float,
        decided_at: float | None = None,
        maintenance: Sequence[Mapping[str, Any]] = (),
    ) -> Generator[int, None, TickResult]:
        """:meth:`handle_tick` in steps (:func:`.tick.tick_steps`): the worker lets its event
        loop run between them when a tick looks at thousands of machines."""
        return tick_steps(
            self, p, now, verdicts, wall_now=wall_now, decided_at=decided_at,
            maintenance=maintenance,
        )  # fmt: skip

    def decide_scopes(
        self, now: float, totals: Mapping[str, ScopeCounts], verdicts: Mapping[str, Verdict]
    ) -> tuple[list[Emit], dict[str, Verdict]]:
        """Mass silence per scope from every partition's counts (run by one partition's owner)."""
        return self.silence.decide(now, totals, verdicts)

    # ---- output -------------------------------------------------------------------------

    def status_emit(
        self,
        key: str,
        info: MachineInfo,
        tr: Transition,
        wall_now: float,
        maintenance: str | None = None,
    ) -> Emit:
        """The StatusChanged record of a transition, counted in the stats (not in a replay)."""
        changed_at = max(wall_now, tr.at)
        delay: float | None = None
        if tr.detection_delay is not None:
            # decided at tick time tr.at; reported against when it was really emitted
            delay = round(tr.detection_delay + (changed_at - tr.at), 3)
            if not self.replaying:
                self.stats.detection_delay.observe(max(delay, 0.0))
        if not self.replaying:
            # the members themselves: StrEnums equal (and hash as) their values, and reading
            # .value costs an enum descriptor call each
            self.stats.transitions[(tr.previous or "none", tr.status, tr.reason)] += 1
        return status_changed(key, info, tr, changed_at, delay, maintenance)
