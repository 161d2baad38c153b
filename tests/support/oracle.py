"""Judging a run: the transitions docs/how-it-decides.md requires, computed independently of
the engine, against what the workers emitted.

- :class:`Oracle`: the required transitions, from the ground truth and the workers' *tick*
  records in the heartbeats log (offset order, as a worker reads them); the ground-truth gap
  check (:func:`undeclared_gaps`) makes sure the ticks themselves did not stop.
- :func:`compare`: observed vs expected, per machine, field by field.
- :func:`judge`: waits until a deployment's ``<prefix>.status`` matches the oracle.
- :func:`false_disconnected`: Disconnected of machines whose agent kept sending.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from arcbeat.deploy.agents.groundtruth import expected_silences
from arcbeat.streams.settings import Settings
from tests.support.deployment import Deployment
from tests.support.groundtruth import AgentMessage, GroundTruth, send_times
from tests.support.kafka import KafkaRecord
from tests.support.observed import Observed, Tick, Transition
from tests.support.progress import say
from tests.support.waiting import settle


@dataclass(slots=True)
class _State:
    status: str
    last: float
    changed: float
    number: int
    flap_window: float
    flap_count: int
    location: str
    held_since: float | None = None
    late_seen: bool = False  # a tick saw it late (missed a heartbeat) before its deadline
    pending_since: float | None = None  # late and due in one tick: waits for a verdict


class Oracle:
    """docs/how-it-decides.md over the log as the worker sees it: agent messages and ticks in
    offset order.

    ``silent``: per scope, the verdict intervals of the mass-silence rule (observed; the
    oracle does not re-derive the verdict, only what a verdict implies for each machine).
    A verdict is shared through a global table, so a tick of another partition within
    ``fuzz`` seconds of a verdict change may be processed before or after the change is
    visible; at such a tick either outcome is right, and ``guide`` (the observed output)
    says which one the worker took. Everything else is decided by the oracle alone.
    """

    def __init__(
        self,
        settings: Settings,
        silent: Mapping[str, list[tuple[float, float]]] | None = None,
        fuzz: float = 2.0,
        guide: Observed | None = None,
    ) -> None:
        self.guide = guide
        self.grace = min(
            1.5 * settings.timing.heartbeat_interval, settings.timing.disconnect_after / 2
        )
        self.d = settings.timing.disconnect_after
        self.e = settings.timing.expire_after
        self.hold = settings.timing.outage_hold
        self.window = settings.timing.window
        self.flap = settings.timing.flap_threshold
        self.silent = dict(silent or {})
        self.fuzz = fuzz
        self.out: dict[str, list[Transition]] = defaultdict(list)
        self.state: dict[str, _State] = {}

    def _silent_at(self, location: str, t: float, held: bool) -> tuple[bool, bool]:
        """(does a scope of the machine hold it at t, is t near a verdict boundary).

        A held machine stays held for ``grace`` (one late_after) past its scope's recovery:
        the agents that report again come back over a heartbeat interval.
        """
        silent = near = False
        for scope in ("fleet", f"location={location}"):
            for start, end in self.silent.get(scope, ()):
                until = end + self.grace if held else end
                if start <= t < until:
                    silent = True
                if any(abs(t - b) < self.fuzz for b in (start, end, until)):
                    near = True
        return silent, near

    def _emit(
        self,
        key: str,
        st: _State | None,
        status: str,
        reason: str,
        at: float,
        last: float,
        *,
        mass: bool = False,
        location: str = "",
    ) -> tuple[int, float, int]:
        number = (st.number if st else 0) + 1
        window = at - (at % self.window)
        count = (st.flap_count if st and st.flap_window == window else 0) + 1
        self.out[key].append(
            Transition(
                key,
                number,
                st.status if st else None,
                status,
                reason,
                at,
                last,
                count >= self.flap,
                mass,
                location=st.location if st else location,
            )
        )
        return number, window, count

    def run(
        self, messages: Iterable[AgentMessage], ticks: Iterable[Tick]
    ) -> dict[str, list[Transition]]:
        per_part: dict[int, list[tuple[int, AgentMessage | Tick]]] = defaultdict(list)
        for m in messages:
            if m.event in ("connect", "heartbeat", "disconnect"):
                per_part[m.partition].append((m.offset, m))
        for t in ticks:
            per_part[t.partition].append((t.offset, t))
        for p, events in per_part.items():
            events.sort(key=lambda e: e[0])
            offsets = [o for o, _ in events]
            assert len(offsets) == len(set(offsets)), f"partition {p}: offsets used twice"
            keys: set[str] = set()
            for _, ev in events:
                if isinstance(ev, Tick):
                    for key in sorted(keys):
                        self._tick(key, ev.at)
                else:
                    keys.add(ev.key)
                    self._message(ev)
        return dict(self.out)

    def _message(self, m: AgentMessage) -> None:
        st = self.state.get(m.key)
        a = m.arrived
        if m.event == "disconnect":
            if st is not None:
                self._emit(m.key, st, "Deleted", "agent_disconnected", a, st.last)
                del self.state[m.key]
            return
        if st is None:
            n, w, c = self._emit(m.key, None, "Connected", "onboarded", a, a, location=m.location)
            self.state[m.key] = _State("Connected", a, a, n, w, c, m.location)
            return
        if st.status == "Expired":
            if m.event == "connect":
                n, w, c = self._emit(m.key, st, "Connected", "reonboarded", a, a)
                st.status, st.last, st.changed = "Connected", a, a
                st.number, st.flap_window, st.flap_count, st.held_since = n, w, c, None
            return
        st.last = max(st.last, a)
        st.held_since = None
        st.late_seen, st.pending_since = False, None
        if st.status == "Disconnected":
            n, w, c = self._emit(m.key, st, "Connected", "heartbeat_resumed", a, st.last)
            st.status, st.changed = "Connected", a
            st.number, st.flap_window, st.flap_count = n, w, c

    def _declared_at(self, key: str, now: float) -> bool:
        """Did the worker declare ``key`` Disconnected at the tick ``now`` (the guide says)?"""
        assert self.guide is not None
        return any(
            t.status == "Disconnected" and abs(t.decided_at - now) <= 0.002
            for t in self.guide.by_key.get(key, ())
        )

    def _declared_within(self, key: str, after: float, until: float) -> bool:
        """Did the worker declare ``key`` Disconnected at a later tick, before ``until``?"""
        assert self.guide is not None
        return any(
            t.status == "Disconnected" and after < t.decided_at <= until
            for t in self.guide.by_key.get(key, ())
        )

    def _tick(self, key: str, now: float) -> None:
        st = self.state.get(key)
        if st is None:
            return
        if st.status == "Connected":
            if now < st.last + self.d:
                if now >= st.last + self.grace:
                    st.late_seen = True
                return
            silent, near = self._silent_at(st.location, now, st.held_since is not None)
            if near and self.guide is not None:
                silent = not self._declared_at(key, now)
            if st.held_since is None and silent:
                st.held_since = now
                return
            if st.held_since is None and not st.late_seen and self.guide is not None:
                # Late and due in one tick (a backlog was just read): the worker waits for a
                # mass-silence decision newer than this machine's counts (Engine._await_verdict)
                # or for outage_hold. When that decision lands depends on partition 0's
                # processing, not on the log alone: the observed output says which tick it was.
                if st.pending_since is None:
                    st.pending_since = now
                if not self._declared_at(key, now) and now < st.pending_since + self.hold:
                    return
            if st.held_since is not None and silent:
                expiry = st.held_since + self.hold
                if now < expiry:
                    return
                # The hold began at the tick that saw the verdict, which is only known to within
                # ``fuzz`` (see above): so is its end, and the observed output says which tick.
                if (
                    self.guide is not None
                    and now < expiry + self.fuzz
                    and not self._declared_at(key, now)
                    and self._declared_within(key, now, expiry + self.fuzz)
                ):
                    return
            mass = st.held_since is not None
            n, w, c = self._emit(
                key,
                st,
                "Disconnected",
                "heartbeat_timeout",
                now,
                st.last,
                mass=mass,
            )
            st.status, st.changed, st.held_since = "Disconnected", now, None
            st.pending_since = None
            st.number, st.flap_window, st.flap_count = n, w, c
        elif st.status == "Disconnected" and now >= st.changed + self.e:
            n, w, c = self._emit(key, st, "Expired", "expired", now, st.last)
            st.status, st.changed = "Expired", now
            st.number, st.flap_window, st.flap_count = n, w, c


def in_scope(ts: Sequence[Transition], cutoff: float, disconnect_after: float) -> list[Transition]:
    """A machine's transitions up to (not including) its first Disconnected whose deadline is
    after ``cutoff``: past that, the end of the simulation (every agent stops) decides."""
    out = []
    for t in ts:
        if t.reason == "heartbeat_timeout" and t.last_heartbeat_at + disconnect_after > cutoff:
            break
        out.append(t)
    return out


def compare(
    observed: Observed,
    expected: Mapping[str, Sequence[Transition]],
    *,
    cutoff: float,
    disconnect_after: float,
    tolerance: float = 0.002,
    limit: int = 25,
) -> list[str]:
    """Problems found comparing observed with expected transitions (empty: identical)."""
    problems: list[str] = [
        f"transitionId emitted more than once: {t}" for t in observed.duplicate_ids
    ]
    for key, ts in observed.by_key.items():
        for a, b in itertools.pairwise(ts):
            if not (b.number == a.number + 1 or (a.status == "Deleted" and b.number == 1)):
                problems.append(f"{key}: transition numbers jump {a.number} -> {b.number}")
    for key in sorted(set(observed.by_key) | set(expected)):
        got = in_scope(observed.by_key.get(key, []), cutoff, disconnect_after)
        want = in_scope(expected.get(key, []), cutoff, disconnect_after)
        why = _diff(got, want, tolerance)
        if why:
            problems.append(
                f"{key} ({(want or got)[0].location if (want or got) else '?'}): {why}\n"
                f"    expected: {[t.short() for t in want]}\n"
                f"    observed: {[t.short() for t in got]}"
            )
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more problems"]
    return problems


def _diff(got: Sequence[Transition], want: Sequence[Transition], tol: float) -> str | None:
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        same = (
            (g.number, g.previous, g.status, g.reason, g.mass_outage)
            == (w.number, w.previous, w.status, w.reason, w.mass_outage)
            and abs(g.decided_at - w.decided_at) <= tol
            and abs(g.last_heartbeat_at - w.last_heartbeat_at) <= tol
            and g.flapping == w.flapping
        )
        if not same:
            return f"transition {i + 1} differs: expected {w.short()}, observed {g.short()}"
    if len(got) != len(want):
        return f"{len(want)} transitions expected, {len(got)} observed"
    return None


def undeclared_gaps(
    truth: GroundTruth,
    observed: Observed,
    settings: Settings,
    *,
    cutoff: float,
    blind: Sequence[tuple[float, float]] = (),
    slack: float = 1.0,
    held: Callable[[str, float], bool] | None = None,
) -> list[str]:
    """Ground-truth silences (gaps between delivered heartbeats longer than disconnect_after)
    with a deadline before ``cutoff`` that no Disconnected declares, and Disconnected with no
    ground-truth silence behind them.

    A gap is excused only when it is at most ``slack`` past the deadline (ticks come every
    check_interval), or it opened and closed inside a ``blind`` window (a worker that is
    stopped sees no deadline pass), or ``held(key, deadline)`` (a mass-silence hold).
    """
    d = settings.timing.disconnect_after
    silences = expected_silences(truth.path, d, end=truth.end)
    declared = {
        (t.key, round(t.last_heartbeat_at, 3))
        for t in observed.all()
        if t.reason == "heartbeat_timeout"
    }
    problems = []
    gaps = set()
    for key, gs in silences.items():
        for g in gs:
            deadline = g.last_heartbeat + d
            gaps.add((key, round(g.last_heartbeat, 3)))
            if deadline > cutoff or (key, round(g.last_heartbeat, 3)) in declared:
                continue
            resumed = g.resumed if g.resumed is not None else float("inf")
            if resumed - deadline <= slack:
                continue
            if any(b0 <= deadline and resumed <= b1 for b0, b1 in blind):
                continue
            if held is not None and held(key, deadline):
                continue
            problems.append(
                f"{key}: silent from {g.last_heartbeat:.3f} to "
                f"{'the end' if g.resumed is None else f'{resumed:.3f}'} (deadline "
                f"{deadline:.3f}) but never declared Disconnected"
            )
    for t in observed.all():
        if (
            t.reason == "heartbeat_timeout"
            and t.last_heartbeat_at + d <= cutoff
            and (t.key, round(t.last_heartbeat_at, 3)) not in gaps
        ):
            problems.append(f"{t.key}: false Disconnected, no ground-truth silence: {t.short()}")
    return problems


@dataclass
class Judged:
    """What a finished run produced, once it matched the oracle."""

    observed: Observed
    expected: dict[str, list[Transition]]
    ticks: list[Tick]
    agents: list[KafkaRecord]
    cutoff: float
    disconnect_after: float

    def in_scope(self, key: str) -> list[Transition]:
        """The machine's observed transitions before the end of the run took over."""
        return in_scope(self.observed.by_key.get(key, []), self.cutoff, self.disconnect_after)

    def scoped(self) -> list[Transition]:
        return [t for key in self.observed.by_key for t in self.in_scope(key)]


def judge(
    dep: Deployment,
    truth: GroundTruth,
    *,
    blind: Sequence[tuple[float, float]] = (),
    timeout: float = 40.0,
    use_verdicts: bool = False,
    verdict_fuzz: float = 2.0,
) -> Judged:
    """Wait until ``<prefix>.status`` (read_committed) holds exactly the oracle's transitions
    for everything the ground truth decided before the end of the run, and no ground-truth
    silence went undeclared; fail with the differences otherwise.

    ``use_verdicts``: apply the observed mass-silence verdicts (holds) in the oracle; without
    it, any ScopeSilent before the cutoff is itself a problem. ``verdict_fuzz``: how far (log
    time) from a verdict change a tick may see either verdict; while a worker catches up on a
    backlog, partitions are read in any interleaving, so it grows to the backlog's length.
    """
    s = dep.settings
    cutoff = truth.end - 2.0  # past this, every agent stopping at the end decides
    horizon = truth.end + (s.timing.expire_after if s.timing.expire_after < 60 else 0.0) + 1.0
    messages = truth.with_manual(dep.manual)
    result: list[Judged] = []

    def check() -> list[str]:
        ticks, agents = dep.ticks()
        observed = dep.status()
        problems: list[str] = []
        last_tick: dict[int, float] = {}
        for t in ticks:
            last_tick[t.partition] = max(last_tick.get(t.partition, 0.0), t.at)
        behind = [p for p in range(s.kafka.partitions) if last_tick.get(p, 0.0) < horizon]
        if behind:
            problems.append(f"partitions {behind} not ticked past {horizon:.3f} yet")
        if len(agents) != len(messages):
            problems.append(
                f"heartbeats topic holds {len(agents)} agent records, ground truth "
                f"and test sent {len(messages)}"
            )
        silent = observed.silent_intervals() if use_verdicts else {}
        if not use_verdicts:
            early = [e for e in observed.scope_events if e.at <= cutoff]
            problems += [f"unexpected {e.type} {e.scope} at {e.at:.3f}" for e in early]
        expected = Oracle(s, silent, fuzz=verdict_fuzz, guide=observed).run(messages, ticks)
        problems += compare(
            observed, expected, cutoff=cutoff, disconnect_after=s.timing.disconnect_after
        )

        def held(key: str, deadline: float) -> bool:
            loc = truth.locations.get(key, "")
            return any(
                a - max(2.0, verdict_fuzz) <= deadline <= b + s.timing.outage_hold
                for scope in ("fleet", f"location={loc}")
                for a, b in silent.get(scope, ())
            )

        problems += undeclared_gaps(truth, observed, s, cutoff=cutoff, blind=blind, held=held)
        result[:] = [Judged(observed, expected, ticks, agents, cutoff, s.timing.disconnect_after)]
        return problems

    settle(f"{dep.name}: transitions vs ground truth", check, timeout=timeout)
    j = result[0]
    say(
        f"{dep.name}: {j.observed.records} status records, "
        f"{sum(len(v) for v in j.expected.values())} expected transitions (incl. end of run), "
        f"{len(j.ticks)} ticks; cutoff = end - 2 s; all in-scope transitions match"
    )
    return j


def false_disconnected(j: Judged, truth: GroundTruth) -> list[str]:
    """Disconnected (heartbeat_timeout, before the end of the run) of a machine whose agent
    sent its next heartbeat less than disconnect_after after the last one the worker had:
    the agent kept sending; only the broker (or the worker) was late."""
    d = j.disconnect_after
    sends = send_times(truth)
    out = []
    for t in j.scoped():
        if t.reason != "heartbeat_timeout":
            continue
        mine = sends.get(t.key, [])
        # the last one sent of those that arrived then (a backlog arrives in one batch)
        i = max(
            (i for i, (_, a) in enumerate(mine) if abs(a - t.last_heartbeat_at) <= 0.002),
            default=None,
        )
        if i is None:
            out.append(
                f"{t.key}: Disconnected after a heartbeat not in the ground truth: {t.short()}"
            )
            continue
        sent = mine[i][0]
        following = mine[i + 1][0] if i + 1 < len(mine) else truth.end
        if following - sent < d:
            out.append(
                f"{t.key}: false Disconnected {t.short()}: the agent sent again "
                f"{following - sent:.2f}s after the heartbeat sent at {sent:.3f}"
            )
    return out
