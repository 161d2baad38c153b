"""Recovery of the worker (SIGKILL, immediate restart) and of the broker (restart mid-run),
and the worker's readiness endpoint, end to end.

- A kill -9 soak (marker ``slow``): a live fleet with outages and flapping machines, one
  worker SIGKILLed and started again with the same id at least 10 times, the broker itself
  SIGKILLed and started again in the middle; afterwards the status topic (read_committed)
  must match the independent oracle, every transitionId exactly once, no machine onboarded
  twice, no false Disconnected, and after every restart the worker knows the whole fleet.
- A broker restart (controlled shutdown) mid-run: machines that kept sending are never
  declared Disconnected; machines that stop after the restart still are.
- /readyz: ``no partitions`` for a worker whose group's only partition another worker owns,
  ``recovering`` / ``catching up: lag N`` while a restarted worker reads a backlog, then 200;
  /healthz 200 all along.
- SIGKILL and an immediate restart: the kill -> ready time (a printed figure; the only
  assertion is a generous bound).

The broker-restarting tests run against a dedicated single-node Kafka this module starts
from the local stack's jars on free loopback ports (``Stack(..., only=("kafka",))`` with its
own state folder), so the shared broker on 9092 is never disturbed; it is stopped at the end
of the module. Timings are printed (``pytest -s``) as benchmark figures.
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from arcbeat.deploy import processes
from arcbeat.deploy.agents.load import load
from arcbeat.deploy.aio import run_sync
from arcbeat.deploy.services import port_open
from arcbeat.deploy.settings import Settings
from arcbeat.deploy.stack import Stack, StackError
from arcbeat.streams.decide.timestamps import parse_rfc3339
from tests.support.deployment import Deployment, WorkerProcess
from tests.support.groundtruth import GroundTruth
from tests.support.net import free_port_block_below_ephemeral
from tests.support.observed import stats
from tests.support.oracle import Judged, false_disconnected, judge
from tests.support.progress import say
from tests.support.waiting import wait_for

pytestmark = pytest.mark.services

# a worker on this loaded machine may already be a second or two behind when it is stopped
BLIND_LEAD = 2.0
READY_TIMEOUT = 60.0
LAG_REASON = re.compile(r"^catching up: lag (\d+)$")


def _name(tag: str) -> str:
    return f"e2e-{tag}-{uuid.uuid4().hex[:8]}"


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


# ---------------------------------------------------------------------------------------------
# a dedicated broker


@dataclass
class Broker:
    """A single-node Kafka of its own (state folder, ports), started from the stack's jars."""

    stack: Stack
    bootstrap: str
    root: Path
    ports: tuple[int, int]
    restarts: list[tuple[str, float, float]] = field(default_factory=list)

    def pid(self) -> int | None:
        return self.stack.status()["kafka"].pid

    def restart(self, *, hard: bool) -> tuple[float, float]:
        """Stop the broker (SIGKILL when ``hard``, else a controlled shutdown) and start it
        again at once; returns (when it went down, when it answered again)."""
        pid = self.pid()
        assert pid is not None, "the test broker is not running"
        down = time.time()
        if hard:
            os.killpg(pid, signal.SIGKILL)  # the JVM leads its own process group
            # the leader thread shows as a zombie while the others still hold the sockets
            wait_for(
                "the killed broker to exit and release its ports",
                lambda: None if processes.alive(pid) or any(map(port_open, self.ports)) else True,
                timeout=30, every=0.05,
            )  # fmt: skip
        else:
            self.stack.down(lambda m: say(f"test broker: {m}"))
        stopped = time.time()
        self.stack.up(lambda m: say(f"test broker: {m}"))
        up = time.time()
        how = "SIGKILL" if hard else "controlled shutdown"
        say(
            f"test broker: {how} took {stopped - down:.1f}s, start {up - stopped:.1f}s; "
            f"down {up - down:.1f}s in all"
        )
        self.restarts.append((how, down, up))
        return down, up


@pytest.fixture(scope="module")
def broker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Kafka broker for this module only; stopped at the end, also when a test fails."""
    root = tmp_path_factory.mktemp("recovery-kafka")
    (root / "jars").symlink_to(stack.paths.jars)  # the stack's jar cache (read only)
    base = free_port_block_below_ephemeral(2)
    settings = Settings.load(
        env={},
        toml_path=root / "none.toml",
        state_dir=str(root),
        kafka_bootstrap=f"127.0.0.1:{base}",
        kafka_controller_port=base + 1,
    )
    kafka = Stack(settings, only=("kafka",))
    try:
        t0 = time.time()
        try:
            kafka.up(lambda m: say(f"test broker: {m}"))
        except StackError as exc:
            pytest.fail(f"the test broker could not start:\n{exc}", pytrace=False)
        say(f"test broker: up on 127.0.0.1:{base} in {time.time() - t0:.1f}s ({root})")
        yield Broker(kafka, settings.kafka.bootstrap, root, (base, base + 1))
    finally:
        kafka.down(lambda m: say(f"test broker: {m}"))


# ---------------------------------------------------------------------------------------------
# readiness traces


@dataclass
class Trace:
    """What /readyz (and /healthz) answered from a worker's start until it was ready."""

    since: float
    steps: list[tuple[float, int, str, dict[str, Any]]] = field(default_factory=list)
    health: Counter[int] = field(default_factory=Counter)
    ready_at: float | None = None

    @property
    def ready_time(self) -> float:
        """When /readyz first answered 200."""
        assert self.ready_at is not None, f"never ready: {self.summary()}"
        return self.ready_at

    @property
    def ready_after(self) -> float:
        return self.ready_time - self.since

    def reasons(self) -> list[str]:
        return [reason for _, _, reason, _ in self.steps]

    def summary(self) -> str:
        return ", ".join(
            f"+{t - self.since:.2f}s {status} {reason}" for t, status, reason, _ in self.steps
        )


def trace_readiness(
    w: WorkerProcess,
    since: float,
    *,
    timeout: float = READY_TIMEOUT,
    every: float = 0.1,
    healthz: bool = False,
) -> Trace:
    """Poll /readyz until 200 (each change of answer is kept), and /healthz after each
    answer when ``healthz``. Fails when the worker exits or is not ready within ``timeout``."""
    trace = Trace(since)
    deadline = since + timeout
    while True:
        if not w.alive():
            raise AssertionError(
                f"worker {w.id} exited with {w.proc.returncode} before it was ready "
                f"({trace.summary()})\n{w.log_tail()}"
            )
        r = w.readyz()
        now = time.time()
        if r is not None:
            status, body = r
            reason = str(body.get("reason"))
            if not trace.steps or trace.steps[-1][1:3] != (status, reason):
                trace.steps.append((now, status, reason, body))
            if healthz:
                try:
                    hs, _ = w.get("/healthz")
                except OSError:
                    hs = -1
                trace.health[hs] += 1
            if status == 200:
                trace.ready_at = now
                return trace
            if reason.startswith("failed"):  # the heartbeat loop died: it never gets ready
                raise AssertionError(
                    f"worker {w.id} (pid {w.pid}, {'running' if w.alive() else 'exited'}) "
                    f"answers /readyz {status} {reason!r} ({trace.summary()})\n{w.log_tail(40)}"
                )
        if now > deadline:
            try:
                health: Any = w.get("/healthz")
            except OSError as exc:
                health = repr(exc)
            raise AssertionError(
                f"worker {w.id} (pid {w.pid}, still running) not ready {timeout:g}s after "
                f"{since:.3f}: {trace.summary()}; /healthz answers {health}\n{w.log_tail()}"
            )
        time.sleep(every)


class Prober(threading.Thread):
    """Asks a running worker /readyz and /healthz every ``every`` seconds in the background
    (e.g. while the broker is down)."""

    def __init__(self, w: WorkerProcess, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.w = w
        self.every = every
        self.answers: list[tuple[float, str, int]] = []  # (at, readyz answer, healthz status)
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            r = self.w.readyz()
            ready = "no answer" if r is None else f"{r[0]} {r[1].get('reason')}"
            try:
                health = self.w.get("/healthz")[0]
            except OSError:
                health = -1
            self.answers.append((time.time(), ready, health))
            self._done.wait(self.every)

    def __enter__(self) -> Prober:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self.join(15)

    def between(self, a: float, b: float) -> tuple[Counter[str], Counter[int]]:
        seen = [(r, h) for t, r, h in self.answers if a <= t <= b]
        return Counter(r for r, _ in seen), Counter(h for _, h in seen)


def events_flow_again(w: WorkerProcess, since: float, timeout: float = READY_TIMEOUT) -> float:
    """Seconds from ``since`` until the worker has processed an event appended after it."""

    def probe() -> float | None:
        h = w.healthz()
        return time.time() if h is not None and parse_rfc3339(h["lastEventAt"]) > since else None

    at = wait_for("the worker to process new events", probe, timeout=timeout, every=0.1,
                  on_timeout=w.log_tail)  # fmt: skip
    return at - since


def start_supervised(
    dep: Deployment, since: float, problems: list[str], what: str
) -> tuple[WorkerProcess, Trace]:
    """Start worker 0 and wait until it is ready. One that never gets ready is a problem
    (kept in ``problems`` with its evidence); it is then killed and started once more, as a
    supervisor would, so that the rest of the run is still exercised."""
    w = dep.start_worker(0)
    try:
        return w, trace_readiness(w, since)
    except AssertionError as exc:
        problems.append(f"{what}: {exc}")
        say(f"{what}: the worker did not get ready; killed and started again:\n{exc}")
        w.kill()
        w = dep.start_worker(0)
        return w, trace_readiness(w, time.time())


# ---------------------------------------------------------------------------------------------
# checks shared by the runs


def recovery_checks(j: Judged, truth: GroundTruth, printed: set[str]) -> list[str]:
    """Nothing onboarded twice, every transitionId exactly once, everything a killed worker
    printed committed (its aborted transactions were redone), no false Disconnected."""
    problems = [f"transitionId {tid} committed more than once" for tid in j.observed.duplicate_ids]
    onboarded = Counter(t.key for t in j.observed.all() if t.reason in ("onboarded", "reonboarded"))
    problems += [f"{k}: onboarded {n} times" for k, n in sorted(onboarded.items()) if n > 1]
    missing = truth.machines() - set(onboarded)
    problems += [f"{k}: never onboarded" for k in sorted(missing)]
    committed = {t.tid for t in j.observed.all()}
    problems += [
        f"{tid}: printed by a killed worker, never committed" for tid in sorted(printed - committed)
    ]
    problems += false_disconnected(j, truth)
    return problems


def fleet_known(w: WorkerProcess, machines: int) -> str | None:
    """None when the worker's /fleet counts exactly ``machines`` machines, else why not."""
    status, body = w.get("/fleet")
    if status != 200:
        return f"/fleet answered {status}: {body}"
    if body.get("total") != machines:
        return (
            f"/fleet counts {body.get('total')} machines ({body.get('byStatus')}), {machines} sent"
        )
    return None


def state_matches(w: WorkerProcess, j: Judged, truth: GroundTruth) -> list[str]:
    """Every machine the worker holds (GET /machines) has the status of its last committed
    transition and the arrival time of its last delivered heartbeat as lastHeartbeatAt."""
    status, body = w.get("/machines", {"limit": "1000"})
    assert status == 200, body
    items = {m["key"]: m for m in body["items"]}
    last_arrival: dict[str, float] = {}
    for message in truth.messages:
        if message.event in ("connect", "heartbeat"):
            key = message.key
            last_arrival[key] = max(last_arrival.get(key, 0.0), message.arrived)
    problems = []
    for key in sorted(truth.machines()):
        m = items.get(key)
        if m is None:
            problems.append(f"{key}: unknown to the worker (GET /machines)")
            continue
        ts = j.observed.by_key.get(key, [])
        if ts and m["status"] != ts[-1].status:
            problems.append(f"{key}: worker says {m['status']}, last transition {ts[-1].short()}")
        got = parse_rfc3339(m["lastHeartbeatAt"])
        if abs(got - last_arrival[key]) > 0.002:
            problems.append(
                f"{key}: lastHeartbeatAt {got:.3f}, last heartbeat arrived {last_arrival[key]:.3f}"
            )
    problems += [
        f"{k}: known to the worker, never sent" for k in sorted(set(items) - truth.machines())
    ]
    return problems


def _printed_ids(workers: list[WorkerProcess]) -> set[str]:
    return {str(r["transitionId"]) for w in workers for r in w.printed() if "transitionId" in r}


# ---------------------------------------------------------------------------------------------
# 1: the kill -9 soak


@pytest.mark.slow
def test_kill_9_soak_with_a_broker_restart(broker: Broker, tmp_path: Path) -> None:
    """A fleet of 250 machines (outages, permanent outages, flapping) for ~1 minute; the
    worker is SIGKILLed 2-6 s after each time it became ready and started again at once with
    the same id, 10 times (checkpoints every 5 s, so the kills land before, between and after
    checkpoints: restarts restore one and replay the log after it, ten draws of that phase);
    after the 5th, the broker is SIGKILLed and started again while the fleet keeps sending.
    Every outage starts within the first minute, so all of them fall inside the kills. After
    every restart the worker knows the whole fleet (/fleet), and at the end: the status topic
    matches the oracle, every transitionId exactly once, no machine onboarded twice, nothing a
    killed worker printed lost, no false Disconnected, every machine's state (status, last
    heartbeat) right."""
    n, seed, cycles = 250, 31, 10
    rng = random.Random(seed)
    dep = Deployment(
        tmp_path, _name("soak"), kafka_bootstrap=broker.bootstrap, checkpoint_interval="5"
    )
    problems: list[str] = []
    try:
        w, _ = start_supervised(dep, time.time(), problems, "first start")
        sim = dep.simulate(
            "-n", str(n), "--seed", str(seed), "--duration", "240",
            "--scenario", "outages,flap",
            "--outage-fraction", "0.2", "--outage-duration", "4.8",
            "--outage-permanent", "0.1", "--outage-window", "2:60",
            "--flap-machines", "4", "--flap-down", "4.8", "--flap-up", "3",
        )  # fmt: skip
        blind: list[tuple[float, float]] = []
        ready_after: list[float] = []
        for cycle in range(1, cycles + 1):
            time.sleep(rng.uniform(2.0, 6.0))
            w.kill()
            killed = time.time()
            before = len(problems)
            w, trace = start_supervised(dep, killed, problems, f"cycle {cycle}")
            if len(problems) == before:
                ready_after.append(trace.ready_after)
            assert trace.ready_at is not None
            blind.append((killed - BLIND_LEAD, trace.ready_at + 3.0))
            say(f"soak: cycle {cycle}: kill -> ready {trace.ready_after:.2f}s ({trace.summary()})")
            why = fleet_known(w, n)
            if why:
                problems.append(f"cycle {cycle}: after the restart {why}\n{w.log_tail()}")
            if cycle == cycles // 2:
                with Prober(w) as probe:
                    down, up = broker.restart(hard=True)
                    if not w.alive():
                        problems.append(
                            f"the worker exited during the broker restart "
                            f"(rc {w.proc.returncode})\n{w.log_tail(60)}"
                        )
                        w, _ = start_supervised(
                            dep, time.time(), problems, "after the broker restart"
                        )
                    flowing = events_flow_again(w, up)
                    trace = trace_readiness(w, up)
                blind.append((down - BLIND_LEAD, trace.ready_time + 10.0))
                readyz, healthz = probe.between(down, up)
                say(
                    f"soak: broker down {up - down:.1f}s (/readyz answered {dict(readyz)}, "
                    f"/healthz {dict(healthz)}); worker processes new events {flowing:.2f}s "
                    f"and /readyz 200 {trace.ready_after:.2f}s after the broker answered "
                    f"({trace.summary()})"
                )
                _, early = probe.between(down, up)  # liveness holds through a broker outage
                if set(early) != {200}:
                    problems.append(f"/healthz while the broker was down: {early}")
                why = fleet_known(w, n)
                if why:
                    problems.append(f"after the broker restart {why}")
        say(f"soak: kill -> ready over {cycles} kills: {stats(ready_after)}")
        truth = sim.stop(60)
        say(f"soak: the fleet sent for {truth.end - truth.start:.0f}s")
        j = judge(dep, truth, blind=blind, use_verdicts=True, verdict_fuzz=8.0, timeout=60)
        printed = _printed_ids(dep.workers[:-1])
        problems += recovery_checks(j, truth, printed)
        problems += state_matches(w, j, truth)
        scoped = j.scoped()
        by_reason = Counter((t.status, t.reason) for t in scoped)
        say(
            f"soak: transitions {dict(by_reason)}; {len(printed)} printed by killed workers; "
            f"scope events {[(e.type, e.scope) for e in j.observed.scope_events]}"
        )
        assert by_reason[("Disconnected", "heartbeat_timeout")] >= 30, by_reason
        assert by_reason[("Connected", "heartbeat_resumed")] >= 20, by_reason
        assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])
    finally:
        dep.close()


# ---------------------------------------------------------------------------------------------
# 2: a broker restart mid-run


def test_broker_restart_declares_nothing_false(broker: Broker, tmp_path: Path) -> None:
    """The broker stops (controlled shutdown) 5 s into a run and starts again while the fleet
    keeps sending: no machine that kept sending is declared Disconnected; 8 % of the fleet
    stops for good well after the restart and each of them is declared Disconnected."""
    n, seed = 150, 32
    dep = Deployment(tmp_path, _name("brokerrestart"), kafka_bootstrap=broker.bootstrap)
    problems: list[str] = []
    try:
        w, _ = start_supervised(dep, time.time(), problems, "first start")
        sim = dep.simulate(
            "-n", str(n), "--seed", str(seed), "--duration", "66",
            "--scenario", "outages", "--outage-fraction", "0.08",
            "--outage-permanent", "1", "--outage-window", "50:54",
        )  # fmt: skip
        _sleep_until(sim.started + 5)
        with Prober(w) as probe:
            down, up = broker.restart(hard=False)
            assert w.alive(), f"the worker exited during the broker restart\n{w.log_tail(60)}"
            flowing = events_flow_again(w, up)
            trace = trace_readiness(w, up, healthz=True)
        readyz, healthz = probe.between(down, up)
        say(
            f"broker restart: while the broker was down /readyz answered {dict(readyz)}, "
            f"/healthz {dict(healthz)}"
        )
        say(
            f"broker restart: worker processes new events {flowing:.2f}s after the broker "
            f"answered, /readyz 200 after {trace.ready_after:.2f}s ({trace.summary()})"
        )
        _, early = probe.between(down, up)  # liveness holds through a broker outage
        assert set(early) == {200}, f"/healthz while the broker was down: {early}"
        assert time.time() < sim.started + 48, "the broker came back after the outage window"
        truth = sim.wait(120)
        stopped = truth.stopped("outage-permanent")
        assert len(stopped) == 12
        j = judge(
            dep, truth, blind=[(down - BLIND_LEAD, trace.ready_time + 10.0)],
            use_verdicts=True, verdict_fuzz=8.0, timeout=60,
        )  # fmt: skip
        timeouts = [t for t in j.scoped() if t.reason == "heartbeat_timeout"]
        falsely = sorted({t.key for t in timeouts} - stopped)
        assert not falsely, (
            f"{len(falsely)} machines that kept sending declared Disconnected:\n"
            + "\n".join(f"{k}: {[t.short() for t in j.observed.by_key[k]]}" for k in falsely[:20])
        )
        assert not false_disconnected(j, truth)
        undeclared = sorted(stopped - {t.key for t in timeouts})
        assert not undeclared, f"stopped after the restart, never declared: {undeclared}"
        delays = [
            t.changed_at - (t.last_heartbeat_at + dep.settings.timing.disconnect_after)
            for t in timeouts
        ]
        say(
            f"broker restart: {len(timeouts)} machines stopped after the restart declared "
            f"Disconnected, after the deadline: {stats(delays)}; scope events "
            f"{[(e.type, e.scope, round(e.at - truth.start, 1)) for e in j.observed.scope_events]}"
        )
        assert not recovery_checks(j, truth, set())
        assert not problems, "\n".join(problems)
    finally:
        dep.close()


# ---------------------------------------------------------------------------------------------
# 3: readiness


def test_readiness_no_partitions_then_catching_up_then_ready(stack: Stack, tmp_path: Path) -> None:
    """One partition, two workers: the one without it answers 503 `no partitions` (and
    /healthz 200). Then the owner is stopped, 50,000 heartbeats pile up, it starts again:
    /readyz answers 503 `recovering` / `catching up: lag N` while it reads them, then 200,
    and /healthz is 200 throughout."""
    dep = Deployment(tmp_path, _name("ready"), partitions="1")
    try:
        w0 = dep.start_worker(0)
        w0.wait_ready(timeout=READY_TIMEOUT, partitions={0})
        w1 = dep.start_worker(1)

        def split() -> tuple[WorkerProcess, WorkerProcess, dict[str, Any]] | None:
            maybe = {w.id: w.readyz() for w in (w0, w1)}
            answers = {k: a for k, a in maybe.items() if a is not None}
            if len(answers) < len(maybe):
                return None
            owners = [w for w in (w0, w1) if answers[w.id][0] == 200]
            idle = [
                w for w in (w0, w1) if answers[w.id] == (503, answers[w.id][1])
                and answers[w.id][1]["reason"] == "no partitions"
            ]  # fmt: skip
            if len(owners) == 1 and len(idle) == 1:
                return owners[0], idle[0], answers[idle[0].id][1]
            return None

        owner, idle, body = wait_for(
            "one worker ready with the partition, the other without any", split,
            timeout=READY_TIMEOUT, every=0.2,
            on_timeout=lambda: w0.log_tail() + "\n" + w1.log_tail(),
        )  # fmt: skip
        assert body["status"] == "not ready" and body["partitions"] == [] and body["lag"] == 0
        assert body["worker"] == str(idle.id) and "lastEventAt" in body
        # it stays that way: the group has one partition, and the owner keeps it
        for _ in range(6):
            time.sleep(0.5)
            status, again = idle.get("/readyz")
            assert (status, again["reason"]) == (503, "no partitions"), again
            assert idle.get("/healthz")[0] == 200
            status, ob = owner.get("/readyz")
            assert status == 200 and ob["partitions"] == [0], ob
        say(f"readiness: worker {idle.id} answers 503 no partitions, worker {owner.id} owns [0]")

        idle.stop()
        owner.stop()
        t0 = time.time()
        result = run_sync(
            lambda: load(
                dep.settings, 5000, heartbeats_per_machine=10, connect_first=True, progress=None
            )
        )
        assert result.errors == 0 and result.sent == 50_000
        say(f"readiness: backlog of {result.sent} heartbeats produced in {time.time() - t0:.1f}s")

        started = time.time()
        w = dep.start_worker(owner.id)
        trace = trace_readiness(w, started, every=0.02, healthz=True)
        say(f"readiness: restart -> ready {trace.ready_after:.2f}s: {trace.summary()}")
        say(f"readiness: /healthz answers while starting: {dict(trace.health)}")
        assert set(trace.health) == {200}, trace.health
        not_ready = [(s, r, b) for _, s, r, b in trace.steps if s != 200]
        assert all(s == 503 and b["status"] == "not ready" for s, _, b in not_ready), not_ready
        for _, _, b in not_ready:
            assert {"worker", "partitions", "lag", "lastEventAt"} <= set(b), b
        lags = [int(m.group(1)) for _, r, _ in not_ready if (m := LAG_REASON.match(r))]
        assert "recovering" in trace.reasons() or any(lag > 0 for lag in lags), trace.summary()
        known = {"starting", "no partitions", "recovering", "catching up: lag unknown"}
        odd = [r for _, r, _ in not_ready if r not in known and not LAG_REASON.match(r)]
        assert not odd, odd
        final = trace.steps[-1][3]
        assert final["status"] == "ready" and final["reason"] == "ready", final
        assert final["partitions"] == [0] and final["lag"] == 0, final
        wait_for("the backlog's machines in /fleet", lambda: fleet_known(w, 5000) is None or None,
                 timeout=30, on_timeout=lambda: str(fleet_known(w, 5000)))  # fmt: skip
    finally:
        dep.close()


# ---------------------------------------------------------------------------------------------
# 4: SIGKILL, then an immediate restart


def test_sigkill_then_immediate_restart_is_ready_fast(stack: Stack, tmp_path: Path) -> None:
    """A worker SIGKILLed under a live fleet and started again at once with the same id takes
    its partitions back without waiting for the session timeout (static membership); the
    kill -> ready time is printed, and nothing is lost or duplicated."""
    dep = Deployment(tmp_path, _name("killready"))
    try:
        w = dep.start_worker(0)
        w.wait_ready(timeout=READY_TIMEOUT)
        sim = dep.simulate(
            "-n", "100", "--seed", "34", "--duration", "24",
            "--scenario", "outages", "--outage-fraction", "0.1", "--outage-duration", "4.8",
            "--outage-window", "2:14",
        )  # fmt: skip
        _sleep_until(sim.started + 7)
        w.kill()
        killed = time.time()
        printed = _printed_ids([w])
        w = dep.start_worker(0)
        trace = trace_readiness(w, killed, every=0.05, healthz=True)
        say(
            f"kill -> ready {trace.ready_after:.2f}s (session timeout "
            f"{dep.settings.worker.session_timeout:g}s): {trace.summary()}"
        )
        assert trace.ready_after <= READY_TIMEOUT
        truth = sim.wait(90)
        j = judge(dep, truth, blind=[(killed - BLIND_LEAD, trace.ready_time + 3.0)])
        assert not recovery_checks(j, truth, printed)
    finally:
        dep.close()
