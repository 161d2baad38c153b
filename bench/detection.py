"""Detection delay and Connected latency with a fleet of N machines in state, in compressed time.

The fleet is put in state first (changelog seeding, :mod:`arcbeat.bench.seeding`), as if every
machine had been heartbeating: machine m's last heartbeat is one interval before its next
scheduled one. Then, for ``window`` seconds, live heartbeats flow at the fleet's rate
(N / interval) while S silent machines reach their deadline (their last heartbeat was
``disconnect_after`` before a moment spread over the window), are declared Disconnected, and
resume ``resume_after`` seconds later (Connected again).

The interval is chosen from the worker's measured rate so that the live load is a fraction of
what it can process: a saturated worker lags, and lag (rightly) delays every decision.

Measured from ``<prefix>.status`` by a read_committed consumer (what downstream sees):

- detection delay: ``detectionDelaySeconds`` of each Disconnected record (changedAt - deadline)
  and, for comparison, arrival at the consumer - deadline;
- Connected latency: for each ``heartbeat_resumed`` record, changedAt - lastHeartbeatAt (the
  resuming heartbeat's LogAppendTime), the status record's timestamp - lastHeartbeatAt, and
  arrival at the consumer - lastHeartbeatAt (includes the transaction commit under EOS).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from arcbeat.bench.context import Bench
from arcbeat.bench.fleetload import FleetEncoder, produce_many
from arcbeat.bench.kafka_admin import create_compacted, create_deployment_topics
from arcbeat.bench.seeding import StateSeeder, machines_changelog
from arcbeat.bench.stats import summary
from arcbeat.bench.worker_process import WorkerProcess
from arcbeat.streams.records import parse_rfc3339
from arcbeat.streams.settings import Settings
from arcbeat.streams.simulate import make_producer
from arcbeat.streams.status import Status


@dataclass
class Plan:
    n: int
    interval: float
    disconnect_after: float
    window: float
    t0: float  # planned start of the live window (unix)
    silent: dict[int, float]  # machine -> deadline (unix)
    resume_after: float

    def phase(self, m: int) -> float:
        return m / self.n

    def last_heartbeat(self, m: int) -> float:
        deadline = self.silent.get(m)
        if deadline is not None:
            return deadline - self.disconnect_after
        return self.t0 + self.phase(m) * self.interval - self.interval

    def sends(self) -> list[tuple[float, int, int]]:
        """(when, machine, sequence) of every live send in the window, in time order."""
        end = self.t0 + self.window
        out: list[tuple[float, int, int]] = []
        for m in range(self.n):
            if m in self.silent:
                continue
            t, k = self.t0 + self.phase(m) * self.interval, 1
            while t < end:
                out.append((t, m, k))
                t, k = t + self.interval, k + 1
        for m, deadline in self.silent.items():
            t = deadline + self.resume_after
            if t < end:
                out.append((t, m, 1))
        out.sort()
        return out


def make_plan(
    n: int, rate_hint: float, window: float, silent: int, lead: float, *, utilisation: float
) -> Plan:
    interval = max(5.0, float(math.ceil(n / max(1.0, utilisation * rate_hint))))
    d = 3 * interval
    t0 = time.time() + lead
    step = max(1, n // max(1, silent))
    chosen = list(range(step // 2, n, step))[:silent]
    first, last = 10.0, max(11.0, window - 20.0)
    deadlines = {
        m: t0 + first + (last - first) * (i + 0.5) / len(chosen) for i, m in enumerate(chosen)
    }
    return Plan(n, interval, d, window, t0, deadlines, resume_after=5.0)


@dataclass
class Observed:
    detection: list[float] = field(default_factory=list)
    detection_visible: list[float] = field(default_factory=list)
    connected_decision: list[float] = field(default_factory=list)
    connected_record: list[float] = field(default_factory=list)
    connected_visible: list[float] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    false_disconnected: int = 0
    scope_events: int = 0
    disconnected_keys: set[str] = field(default_factory=set)
    resumed_keys: set[str] = field(default_factory=set)


async def watch_status(
    settings: Settings,
    plan: Plan,
    silent_keys: set[str],
    excluded: set[str],
    stop: asyncio.Event,
    out: Observed,
) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.status_topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=5000)
            received = time.time()
            for msgs in batches.values():
                for msg in msgs:
                    _observe(
                        msg.value, msg.timestamp / 1000, received, plan, silent_keys, excluded, out
                    )
    finally:
        await consumer.stop()


def _observe(
    raw: bytes | None,
    record_ts: float,
    received: float,
    plan: Plan,
    silent_keys: set[str],
    excluded: set[str],
    out: Observed,
) -> None:
    if raw is None:
        return
    r = orjson.loads(raw)
    kind = r.get("type")
    if kind != "StatusChanged":
        out.scope_events += 1
        out.kinds[str(kind)] += 1
        return
    key = str(r["resourceId"]).lower()
    status, reason = r["status"], r["reason"]
    out.kinds[f"{status}/{reason}"] += 1
    last = parse_rfc3339(r["lastHeartbeatAt"])
    if status == Status.DISCONNECTED.value:
        if key not in silent_keys:
            out.false_disconnected += 1
            return
        out.disconnected_keys.add(key)
        if key in excluded:
            return
        out.detection.append(float(r["detectionDelaySeconds"]))
        out.detection_visible.append(received - (last + plan.disconnect_after))
    elif status == Status.CONNECTED.value and reason == "heartbeat_resumed":
        out.resumed_keys.add(key)
        out.connected_decision.append(parse_rfc3339(r["changedAt"]) - last)
        out.connected_record.append(record_ts - last)
        out.connected_visible.append(received - last)


async def drive(
    settings: Settings, plan: Plan, encoder: FleetEncoder, say: Any, stop_at: float
) -> dict[str, Any]:
    """Send every planned heartbeat at its time (late ones at once); returns send figures."""
    sends = plan.sends()
    producer = make_producer(settings, linger_ms=2, enable_idempotence=False, acks=1)
    await producer.start()
    topic = settings.heartbeats_topic
    pending: list[asyncio.Future[Any]] = []
    late: list[float] = []
    i = 0
    next_say = time.time() + 10
    try:
        while i < len(sends) and time.time() < stop_at:
            now = time.time()
            while i < len(sends) and sends[i][0] <= now:
                when, m, seq = sends[i]
                body, key = encoder.body(m, "heartbeat", now, seq)
                pending.append(
                    await producer.send(topic, body, key=key, partition=encoder.partition(m))
                )
                late.append(now - when)
                i += 1
            if now >= next_say:
                say(f"detection: {i:,}/{len(sends):,} live heartbeats sent")
                next_say = now + 10
            wait = sends[i][0] - time.time() if i < len(sends) else 0.05
            await asyncio.sleep(min(0.05, max(0.0, wait)))
        results = await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await producer.stop()
    failed = sum(1 for r in results if isinstance(r, BaseException))
    return {
        "planned": len(sends),
        "sent": i,
        "failed": failed,
        "rate": round(len(sends) / plan.window, 1),
        "sendLateness": summary(late),
    }


async def _live(
    b: Bench,
    s: Settings,
    plan: Plan,
    encoder: FleetEncoder,
    silent_keys: set[str],
    excluded: set[str],
    out: Observed,
) -> dict[str, Any]:
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_status(s, plan, silent_keys, excluded, stop, out))
    end = plan.t0 + plan.window
    try:
        await asyncio.sleep(max(0.0, plan.t0 - time.time()))
        sent = await drive(s, plan, encoder, b.say, end)
        await asyncio.sleep(max(0.0, end - time.time()) + 5.0)  # last decisions + commits
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await watcher
    return sent


def wait_caught_up(w: WorkerProcess, partitions: int, since: float, timeout: float) -> float:
    """Until /healthz shows every partition, lag 0, and a tick appended after ``since``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w.check_alive()
        h = w.health()
        if h is not None and h.partitions >= partitions and h.lag == 0 and h.last_event_at > since:
            return time.time()
        time.sleep(0.1)
    raise TimeoutError(f"the worker was not caught up within {timeout:.0f}s:\n{w.log_tail()}")


def run_detection(
    b: Bench,
    machines: int,
    rate_hint: float,
    window: float,
    silent: int,
    *,
    utilisation: float = 0.5,
) -> dict[str, Any]:
    lead = 20.0 + machines / 3000  # seeding + worker start + recovery, before the window
    plan = make_plan(machines, rate_hint, window, silent, lead, utilisation=utilisation)
    s = b.phase_settings(
        "detect", heartbeat_interval=plan.interval, disconnect_after=plan.disconnect_after
    )
    create_deployment_topics(s)
    create_compacted(s, [machines_changelog(s.app_id)])
    b.say(
        f"detection: {machines:,} machines in state, interval {plan.interval:g}s, "
        f"disconnect_after {plan.disconnect_after:g}s, {len(plan.silent):,} go silent"
    )
    seeder = StateSeeder(s, machines)
    topic = machines_changelog(s.app_id)
    chunks = (
        (topic, table)
        for table in seeder.chunks(
            range(machines),
            status_of=lambda m: Status.CONNECTED,
            last_heartbeat_of=plan.last_heartbeat,
            window_counts=False,
        )
    )
    asyncio.run(produce_many(s, chunks, progress=b.say, label="seed", total=machines))
    w = b.worker(s, "detect")
    spawned = time.time()
    w.start()
    ready = wait_caught_up(w, s.partitions, spawned, timeout=max(120.0, lead * 3))
    b.say(
        f"detection: worker caught up {ready - spawned:.1f}s after start; live window "
        f"starts in {plan.t0 - time.time():.1f}s"
    )
    silent_keys = {seeder.key(m) for m in plan.silent}
    # deadlines before the worker was ready would measure startup, not detection
    excluded = {seeder.key(m) for m, d in plan.silent.items() if d < ready + 2.0}
    out = Observed()
    encoder = FleetEncoder(s, machines)
    try:
        sent = asyncio.run(_live(b, s, plan, encoder, silent_keys, excluded, out))
        cpu = w.cpu_seconds()
    finally:
        w.stop()
    missing = len(silent_keys) - len(out.disconnected_keys)
    b.say(
        f"detection: {len(out.detection):,} Disconnected measured, p99 "
        f"{summary(out.detection)['p99']}s; {len(out.connected_visible):,} resumed"
    )
    return {
        "machines": machines,
        "interval": plan.interval,
        "disconnectAfter": plan.disconnect_after,
        "checkInterval": s.check_interval,
        "commitInterval": s.commit_interval,
        "processingGuarantee": s.processing_guarantee,
        "window": window,
        "liveRate": round((len(plan.sends())) / window, 1),
        "utilisationTarget": utilisation,
        "rateHint": round(rate_hint, 1),
        "silent": len(plan.silent),
        "excludedBeforeReady": len(excluded),
        "startupWithStateSeconds": round(ready - spawned, 2),
        "workerCpuSeconds": round(cpu, 1),
        "send": sent,
        "detectionDelay": summary(out.detection),
        "detectionDelayVisible": summary(out.detection_visible),
        "connectedDecision": summary(out.connected_decision),
        "connectedRecord": summary(out.connected_record),
        "connectedVisible": summary(out.connected_visible),
        "statusRecords": dict(out.kinds),
        "falseDisconnected": out.false_disconnected,
        "silentNotDeclared": missing,
        "scopeEvents": out.scope_events,
    }
