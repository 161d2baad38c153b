"""Mass outage: a big fleet in state, one location and then the whole fleet silent and held.

The hour a region's uplink drops is the hour the worker must stay quick and ready. The phase:

1. a real ``arcbeat worker`` builds the fleet's state from its own heartbeats (a connect and a
   heartbeat per machine); the machines of two locations then keep reporting (a live load of
   one heartbeat per machine and interval), those of the first location (a third of the
   fleet) never report again: it becomes a silent scope and its machines are held;
2. with the location held, the worker is killed (SIGKILL) and started again, several times,
   each run shorter than ``checkpoint_interval`` (a crash loop): time to /readyz 200 and the
   log each restart replayed (``restartHeld``; the replay must not grow);
3. the live load stops: the whole fleet is silent and held. While nothing but ticks arrives,
   the worker's CPU share (``heldIdleCpu``) and its tick handling time;
4. the holds end (``outage_hold``, at least 10 minutes) with every machine still silent: each
   is declared Disconnected (``massOutage``); ``releaseDelay`` is the latest of them after its
   hold's end, from the status records.

Throughout, /readyz is probed every second (``readyFlaps``: not ready while held, restarts
aside), and the worker reports its tick handling time (``arcbeat_tick_seconds``, ``tickP99``)
and its event loop's lag (``arcbeat_event_loop_lag_max_seconds``, ``loopLagMax``).
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from arcbeat.bench.bigstate import _produce, heartbeat_chunks, wait_checkpoints
from arcbeat.bench.context import Bench
from arcbeat.bench.fleetload import Encoded, FleetEncoder
from arcbeat.bench.kafka_admin import committed_offsets, create_deployment_topics
from arcbeat.bench.raw import end_offsets
from arcbeat.bench.worker_process import WorkerProcess, metric_value, wait_processed
from arcbeat.deploy.agents.producer import make_producer
from arcbeat.streams.decide.deadlines import late_after
from arcbeat.streams.decide.timestamps import parse_rfc3339
from arcbeat.streams.kafka.ticks import TICK_HEADER
from arcbeat.streams.settings import Settings

MIN_HOLD = 600.0  # at least 10 minutes of ticks with the fleet held


def outage_interval(machines: int) -> float:
    """The heartbeat interval of the phase's fleet: short, so that silence comes quickly, but
    long enough for the state to be loaded before the first machine is late (and for the
    live load of two locations to stay well within a worker's capacity)."""
    return max(30.0, machines / 5000)


def outage_hold(interval: float) -> float:
    """Long enough that the whole fleet is held before the first location's hold ends."""
    return max(MIN_HOLD, 8 * interval)


@dataclass
class Probe:
    at: float
    ready: bool
    reason: str


@dataclass
class ReadyProber:
    """/readyz once a second in a thread; every answer kept."""

    w: WorkerProcess
    probes: list[Probe] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="readyz-prober", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            r = self.w.readiness(timeout=2.0) if self.w.alive() else None
            self.probes.append(Probe(t, r is not None and r.ready, r.reason if r else "no answer"))
            self._stop.wait(max(0.0, 1.0 - (time.time() - t)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


class LiveLoad:
    """The reporting machines' heartbeats, one per machine and interval, spread evenly over
    the interval (a thread with its own producer)."""

    def __init__(
        self, s: Settings, enc: FleetEncoder, machines: list[int], interval: float, seq: int
    ) -> None:
        self.s, self.enc, self.machines, self.interval = s, enc, machines, interval
        self.seq = seq  # sequence of the next round
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        try:
            asyncio.run(self._go())
        except BaseException as exc:  # reported by the phase
            self.error = exc

    async def _go(self) -> None:
        producer = make_producer(self.s, linger_ms=20, enable_idempotence=False, acks=1)
        await producer.start()
        topic = self.s.topics.heartbeats
        slices = max(1, round(self.interval))  # one slice a second
        per = -(-len(self.machines) // slices)
        try:
            t_next = time.monotonic()
            while not self._stop.is_set():
                for k in range(slices):
                    if self._stop.is_set():
                        break
                    chunk = self.machines[k * per : (k + 1) * per]
                    enc = self.enc.encode(
                        chunk, rounds=1, first_kind="heartbeat", first_sequence=self.seq
                    )
                    await _send(producer, topic, enc)
                    self.sent += enc.count
                    t_next += self.interval / slices
                    await asyncio.sleep(max(0.0, t_next - time.monotonic()))
                self.seq += 1
        finally:
            await producer.stop()


async def _send(producer: Any, topic: str, enc: Encoded) -> None:
    futures = []
    for p, records in enc.by_partition.items():
        batch = producer.create_batch()
        for key, value, ts, headers in records:
            if batch.append(key=key, value=value, timestamp=ts, headers=headers or []) is None:
                futures.append(await producer.send_batch(batch, topic, partition=p))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=ts, headers=headers or [])
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=p))
    await asyncio.gather(*futures)


def held(w: WorkerProcess, timeout: float = 30.0) -> dict[str, int]:
    """Held machines per scope, from /fleet?local=1 (the held index: cheap; a /metrics scrape
    after a mass release would decode every Disconnected machine)."""
    try:
        with urllib.request.urlopen(w.url + "/fleet?local=1", timeout=timeout) as r:
            data = orjson.loads(r.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, orjson.JSONDecodeError):
        return {}
    return {str(k): int(v) for k, v in (data.get("held") or {}).items()}


def wait_held(
    b: Bench, w: WorkerProcess, scope: str, count: int, timeout: float, label: str
) -> float:
    """Until at least ``count`` machines are held by ``scope``; returns when (unix)."""
    deadline = time.monotonic() + timeout
    next_say = time.monotonic() + 15
    got = 0
    while time.monotonic() < deadline:
        w.check_alive()
        got = held(w).get(scope, 0)
        if got >= count:
            return time.time()
        if time.monotonic() >= next_say:
            b.say(f"{label}: {got:,}/{count:,} machines held by {scope}")
            next_say = time.monotonic() + 15
        time.sleep(1.0)
    raise TimeoutError(
        f"{label}: {got:,} of {count:,} machines held by {scope} after {timeout:.0f}s"
    )


def buckets(body: bytes, name: str) -> list[tuple[float, float]]:
    """The cumulative buckets of a histogram in a Prometheus text exposition."""
    out = []
    prefix = f'{name}_bucket{{le="'.encode()
    for line in body.splitlines():
        if line.startswith(prefix):
            le = line[len(prefix) :].split(b'"', 1)[0].decode()
            bound = float("inf") if le == "+Inf" else float(le)
            out.append((bound, float(line.rsplit(b" ", 1)[1])))
    return sorted(out)


def quantile(
    after: list[tuple[float, float]], before: list[tuple[float, float]], q: float
) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of the observations between two
    scrapes (conservative: the true value is at most this)."""
    base = dict(before)
    diff = [(le, n - base.get(le, 0.0)) for le, n in after]
    if not diff or diff[-1][1] <= 0:
        return None
    want = q * diff[-1][1]
    for le, n in diff:
        if n >= want:
            return le
    return None


def read_ticks(s: Settings) -> dict[int, list[float]]:
    """The broker times of the ticks in each heartbeats partition (what the worker decided at)."""

    async def go() -> dict[int, list[float]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        out: dict[int, list[float]] = {}
        try:
            tps = [TopicPartition(s.topics.heartbeats, p) for p in range(s.kafka.partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            open_ = {tp for tp in tps if ends[tp] > 0}
            while open_:
                batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
                for tp, msgs in batch.items():
                    ticks = out.setdefault(tp.partition, [])
                    for msg in msgs:
                        if msg.headers and any(h[0] == TICK_HEADER for h in msg.headers):
                            ticks.append(msg.timestamp / 1000.0)
                for tp in list(open_):
                    if await consumer.position(tp) >= ends[tp]:
                        open_.discard(tp)
        finally:
            await consumer.stop()
        for ticks in out.values():
            ticks.sort()
        return out

    return asyncio.run(go())


def _first_at_or_after(ticks: list[float], t: float) -> float | None:
    i = bisect.bisect_left(ticks, t)
    return ticks[i] if i < len(ticks) else None


def read_releases(s: Settings, ticks: dict[int, list[float]]) -> dict[str, Any]:
    """The status topic's Disconnected records: released from a hold (massOutage) or not, and
    how long after its hold's end each release was emitted (changedAt). A hold starts at the
    first tick of the machine's partition at or after its deadline (lastHeartbeatAt +
    disconnect_after) and ends outage_hold later: the same arithmetic the worker does, on the
    tick times of the log."""
    deadline_after = s.timing.disconnect_after
    hold = s.timing.outage_hold

    async def go() -> dict[str, Any]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        mass = other = unknown = 0
        delays: list[float] = []
        tick_after: list[float] = []  # the releasing tick's time after the hold's end
        processed_after: list[float] = []  # the worker read that tick this much later
        try:
            tps = [TopicPartition(s.topics.status, p) for p in range(s.kafka.partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            open_ = {tp for tp in tps if ends[tp] > 0}
            while open_:
                batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
                for tp, msgs in batch.items():
                    for msg in msgs:
                        if msg.value is None:
                            continue
                        r = orjson.loads(msg.value)
                        if r.get("type") != "StatusChanged" or r["status"] != "Disconnected":
                            continue
                        if not r.get("massOutage"):
                            other += 1
                            continue
                        mass += 1
                        due = parse_rfc3339(r["lastHeartbeatAt"]) + deadline_after
                        since = _first_at_or_after(ticks.get(tp.partition, []), due)
                        if since is None:
                            unknown += 1
                            continue
                        end = since + hold
                        decided = parse_rfc3339(r["decidedAt"])
                        delays.append(parse_rfc3339(r["changedAt"]) - end)
                        tick_after.append(decided - end)
                        processed_after.append(parse_rfc3339(r["changedAt"]) - decided)
                    if await consumer.position(tp) >= ends[tp]:
                        open_.discard(tp)
                if not batch:
                    positions = {tp: await consumer.position(tp) for tp in open_}
                    open_ = {tp for tp, pos in positions.items() if pos < ends[tp]}
        finally:
            await consumer.stop()
        delays.sort()
        tick_after.sort()
        processed_after.sort()
        return {
            "tickAfterHoldEndMax": round(tick_after[-1], 3) if tick_after else None,
            "processedAfterTickMax": round(processed_after[-1], 3) if processed_after else None,
            "processedAfterTickP99": (
                round(processed_after[int(0.99 * (len(processed_after) - 1))], 3)
                if processed_after
                else None
            ),
            "released": mass,
            "otherDisconnected": other,
            "holdStartUnknown": unknown,
            "delayMax": round(delays[-1], 3) if delays else None,
            "delayP99": round(delays[int(0.99 * (len(delays) - 1))], 3) if delays else None,
        }

    return asyncio.run(go())


def _restarts(
    b: Bench, w: WorkerProcess, s: Settings, n: int, between: float
) -> list[dict[str, Any]]:
    """``n`` crashes (SIGKILL) and immediate starts, ``between`` seconds of run after each."""
    out = []
    for i in range(n):
        committed = committed_offsets(s, s.kafka.partitions)
        replay = sum(
            max(0, c.offset - (c.pointer.offset if c.pointer is not None else 0))
            for c in committed.values()
        )
        t_kill = time.time()
        w.kill()
        w.start()
        ready = w.wait_ready(600.0, progress=b.say, label=f"restart {i + 1}")
        seconds = ready - w.started_at
        b.say(f"restart {i + 1}/{n} with the location held: ready in {seconds:.1f}s "
              f"({replay:,} records to replay)")  # fmt: skip
        out.append(
            {"seconds": round(seconds, 2), "replayRecords": replay, "killedAt": t_kill,
             "readyAt": ready}
        )  # fmt: skip
        time.sleep(between)
    return out


def run_massoutage(
    b: Bench,
    machines: int,
    *,
    interval: float | None = None,
    hold: float | None = None,
    restarts: int = 3,
    checkpoint_interval: float | None = None,
) -> dict[str, Any]:
    interval = interval or outage_interval(machines)
    hold = hold or outage_hold(interval)
    s = b.phase_settings(
        "outage",
        heartbeat_interval=interval,
        disconnect_after=2 * interval,
        outage_hold=hold,
        checkpoint_interval=checkpoint_interval or b.settings.worker.checkpoint_interval,
    )
    create_deployment_topics(s)
    enc = FleetEncoder(s, machines)
    locations = enc.fleet.spec.locations
    first = locations[0]
    silent_first = set(enc.fleet.in_location(first))
    reporting = [m for m in range(machines) if m not in silent_first]
    w = b.worker(s, "outage", loglevel="info")
    w.start()
    w.wait_ready(300.0, progress=b.say, label="outage worker")

    # 1. the state: a connect and a heartbeat per machine; then two locations keep reporting
    b.say(
        f"mass outage: {machines:,} machines, interval {interval:g}s, deadline "
        f"{2 * interval:g}s, hold {hold:g}s; {len(silent_first):,} in {first} fall silent"
    )
    load = _produce(
        b, s,
        heartbeat_chunks(enc, range(machines), rounds=2, first_kind="connect", first_sequence=0),
        "outage state", 2 * machines,
    )  # fmt: skip
    live = LiveLoad(s, enc, reporting, interval, seq=2)
    live.start()
    wait_processed(w, 2 * machines, 1800.0, progress=b.say, label="outage worker", every=20.0)
    w.wait_ready(600.0, progress=b.say, label="outage worker")
    prober = ReadyProber(w)
    prober.start()
    try:
        # 2. the location held; every partition checkpointed with the state; crash loop
        scope_first = f"location={first}"
        t_held_first = wait_held(
            b, w, scope_first, len(silent_first), 4 * interval + 300, "first location"
        )
        b.say(f"{scope_first}: {len(silent_first):,} machines held")
        ends = asyncio.run(end_offsets(s, s.topics.heartbeats))
        wait_checkpoints(s, ends, s.worker.checkpoint_interval + 120.0, b.say, "location held")
        runs = _restarts(b, w, s, restarts, between=min(20.0, s.worker.checkpoint_interval / 4))
        held_after_restart = held(w).get(scope_first, 0)

        # 3. the whole fleet silent and held; the worker idle but for ticks
        if live.error is not None:
            raise RuntimeError(f"the live load failed: {live.error!r}")
        live.stop()
        t_silent = time.time()
        b.say(f"live load stopped ({live.sent:,} heartbeats): the whole fleet is silent")
        t_held_all = wait_held(b, w, "fleet", machines, 4 * interval + 300, "whole fleet")
        b.say(f"fleet: {machines:,} machines held")
        # the first location's earliest hold ends about a load's length before its last
        first_release = t_held_first + hold - load["seconds"]
        # holding the fleet moved every partition's state once: each writes one checkpoint
        # of it (within checkpoint_interval), then only ticks that look at no machine follow.
        # The idle window starts after that round, whose cost is reported beside it.
        cpu_c, t_c = w.cpu_seconds(), time.time()
        settled = True
        try:
            ends = asyncio.run(end_offsets(s, s.topics.heartbeats))
            wait_checkpoints(
                s, ends, max(0.0, first_release - time.time() - 80.0), b.say, "fleet held"
            )
        except TimeoutError:
            settled = False  # measured anyway, with the checkpoints in the window
        checkpoint_round = {
            "seconds": round(time.time() - t_c, 1),
            "cpu": round((w.cpu_seconds() - cpu_c) / max(1e-9, time.time() - t_c), 4),
            "completeBeforeIdle": settled,
        }
        b.say(
            f"checkpoint round after the holds: {checkpoint_round['seconds']:.0f}s at "
            f"{checkpoint_round['cpu']:.1%} of a core"
        )
        window = max(10.0, min(120.0, first_release - time.time() - 20.0))
        before = w.scrape(timeout=120).body
        cpu0, t0 = w.cpu_seconds(), time.time()
        time.sleep(window)
        cpu1, t1 = w.cpu_seconds(), time.time()
        idle_body = w.scrape(timeout=120).body
        idle_cpu = (cpu1 - cpu0) / (t1 - t0)
        tick = "arcbeat_tick_seconds"
        idle_tick_p99 = quantile(buckets(idle_body, tick), buckets(before, tick), 0.99)
        b.say(
            f"held and idle for {t1 - t0:.0f}s: {idle_cpu:.1%} of a core; tick p99 "
            f"<= {idle_tick_p99}s"
        )

        # 4. the holds end with every machine still silent: all released
        last_hold_end = t_held_all + hold
        b.say(f"waiting {last_hold_end - time.time():.0f}s for the holds to end")
        deadline = last_hold_end + 300
        while time.time() < deadline:
            w.check_alive()
            if time.time() > t_held_first + hold and not held(w).get("fleet", 0):
                break
            time.sleep(2.0)
        t_released = time.time()
        still = held(w).get("fleet", 0)
        time.sleep(max(2.0, 3 * s.worker.commit_interval))
        final = w.scrape(timeout=300).body
    finally:
        prober.stop()
        live.stop()
    b.say("reading the tick times and the status records")
    releases = read_releases(s, read_ticks(s))
    tick_p99 = quantile(buckets(final, "arcbeat_tick_seconds"), [], 0.99)
    commit = buckets(final, "arcbeat_commit_seconds")
    commit_idle = buckets(idle_body, "arcbeat_commit_seconds")
    lag_max = metric_value(final, "arcbeat_event_loop_lag_max_seconds")
    ready_from = runs[-1]["readyAt"] if runs else t_held_first
    windows = [(r["killedAt"], r["readyAt"]) for r in runs]
    held_probes = [
        p
        for p in prober.probes
        if t_held_first <= p.at <= t_released and not any(a <= p.at <= z for a, z in windows)
    ]
    flaps = [p for p in held_probes if not p.ready]
    cpu_total = w.cpu_seconds()
    w.stop()
    return {
        "machines": machines,
        "silentFirst": {"location": first, "machines": len(silent_first)},
        "timing": {
            "heartbeatInterval": interval,
            "disconnectAfter": 2 * interval,
            "lateAfter": late_after(interval, 2 * interval),
            "outageHold": hold,
            "checkInterval": s.timing.check_interval,
            "checkpointInterval": s.worker.checkpoint_interval,
        },
        "load": load,
        "liveHeartbeats": live.sent,
        "heldIdleCpu": round(idle_cpu, 4),
        "idleWindowSeconds": round(t1 - t0, 1),
        "checkpointRoundAfterHolds": checkpoint_round,
        "tickP99": tick_p99,
        "tickP99Idle": idle_tick_p99,
        "ticks": int(metric_value(final, "arcbeat_tick_seconds_count")),
        "tickLooks": int(metric_value(final, "arcbeat_tick_looks_total")),
        "loopLagMax": round(lag_max, 3),
        "readyFlaps": len(flaps),
        "readyProbes": len(held_probes),
        "flapReasons": sorted({p.reason for p in flaps}),
        "restartHeld": max((r["seconds"] for r in runs), default=None),
        "restarts": [{"seconds": r["seconds"], "replayRecords": r["replayRecords"]} for r in runs],
        "heldAfterRestart": held_after_restart,
        "releaseDelay": releases["delayMax"],
        "releases": releases,
        # the loop processes nothing while it seals a round of commits: the pauses' p99 and
        # longest (bucket upper bounds) from the idle window's end to the last release
        "commitP99AtRelease": quantile(commit, commit_idle, 0.99),
        "commitMaxAtRelease": quantile(commit, commit_idle, 1.0),
        "heldAtEnd": still,
        "fleetSilentAt": t_silent,
        "readyFrom": ready_from,
        "workerCpuSeconds": round(cpu_total, 1),
        "method": (
            "A real worker builds the state from its heartbeats (a connect and a heartbeat "
            "per machine); two locations keep reporting at the interval, the first never "
            "does again and is held; the worker is then killed and started again "
            f"{restarts} times (each run shorter than checkpoint_interval); then the live "
            "load stops and the whole fleet is held until the holds end. heldIdleCpu: the "
            "worker's CPU seconds over wall seconds while the fleet was held and nothing but "
            "ticks arrived, from the end of the checkpoint round that holding the fleet "
            "causes (checkpointRoundAfterHolds: its length and CPU share); tickP99: p99 of "
            "arcbeat_tick_seconds of the last worker process "
            "(restore, holds and releases included; upper bound of its bucket); loopLagMax: "
            "arcbeat_event_loop_lag_max_seconds of that process (a 100 ms timer's lateness); "
            "readyFlaps: /readyz probes (1 s) answering not ready while held, restarts aside; "
            "restartHeld: the slowest restart, process start to /readyz 200; releaseDelay: "
            "the latest massOutage Disconnected (changedAt) after its hold's end (the first "
            "tick of its partition at or after its deadline, plus outage_hold)."
        ),
    }
