"""Detection delay and Connected latency with a fleet of N machines, all through the live path.

A real worker runs from the start; the fleet is put in state by its own heartbeats, produced
to the heartbeats topic at the times a fleet would send them and processed by the worker:
machine m connects at ``S + (m / N) * interval`` and sends a heartbeat every interval after.
The broker stamps every record (LogAppendTime), so a deadline is ``disconnect_after`` of real
time after a machine's last heartbeat: time is compressed (an interval of seconds instead of
minutes) so that deadlines come within a minute or two.

S silent machines stop sending at planned moments so that their deadlines are spread over a
measurement window of ``window`` seconds; each resumes ``resume_after`` seconds after its
deadline (Connected again) and keeps sending. The window starts once every silent machine
can have its last heartbeat after its onboarding: ``interval + disconnect_after`` after S.

The interval is chosen from the worker's measured rate so that the live load is a fraction of
what it can process: a saturated worker lags, and lag (rightly) delays every decision.

Measured from ``<prefix>.status`` by a read_committed consumer (what downstream sees):

- detection delay: ``detectionDelaySeconds`` of each Disconnected record (changedAt - deadline)
  and, for comparison, arrival at the consumer - deadline;
- Connected latency: for each ``heartbeat_resumed`` record, changedAt - lastHeartbeatAt (the
  resuming heartbeat's LogAppendTime), the status record's timestamp - lastHeartbeatAt, and
  arrival at the consumer - lastHeartbeatAt (includes the transaction commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from arcbeat.bench.context import Bench
from arcbeat.bench.fleetload import FleetEncoder
from arcbeat.bench.kafka_admin import create_deployment_topics
from arcbeat.bench.stats import summary
from arcbeat.deploy.agents.producer import make_producer
from arcbeat.streams.decide.status import Status
from arcbeat.streams.decide.timestamps import parse_rfc3339, rfc3339
from arcbeat.streams.settings import Settings

Send = tuple[float, int, str, int]  # when (unix), machine, kind, sequence

MIN_INTERVAL = 5.0
MAX_INTERVAL = 60.0


def detection_interval(machines: int, rate_hint: float, utilisation: float) -> float:
    """The heartbeat interval that makes the fleet's live load ``utilisation`` of the worker's
    measured rate, within [5 s, 60 s] (the deadline, 3 intervals, must come within minutes)."""
    wanted = machines / max(1.0, utilisation * rate_hint)
    return float(min(MAX_INTERVAL, max(MIN_INTERVAL, math.ceil(wanted))))


@dataclass
class Plan:
    n: int
    interval: float
    disconnect_after: float
    window: float
    start: float  # S: the first machine connects (unix)
    t0: float  # start of the measurement window (unix)
    silent: dict[int, float]  # machine -> deadline (unix)
    resume_after: float
    tail: float = 5.0  # after the window: the last decisions and commits

    @property
    def end(self) -> float:
        return self.t0 + self.window + self.tail

    def phase(self, m: int) -> float:
        return m / self.n

    def last_heartbeat(self, m: int) -> float:
        """Planned time of a silent machine's last heartbeat before its silence."""
        return self.silent[m] - self.disconnect_after

    def _regular(self) -> Iterator[Send]:
        """Every machine's schedule, cycle by cycle (time order); silent machines included
        (their sends inside the silence are dropped by :meth:`sends`)."""
        k = 0
        while True:
            base = self.start + k * self.interval
            if base >= self.end:
                return
            for m in range(self.n):
                t = base + self.phase(m) * self.interval
                if t >= self.end:
                    return
                yield (t, m, "connect" if k == 0 else "heartbeat", k)
            k += 1

    def _silent_sends(self) -> list[Send]:
        """A silent machine's last heartbeat exactly at its planned time, and its resume."""
        out: list[Send] = []
        for m, deadline in self.silent.items():
            last = self.last_heartbeat(m)
            k_last = math.floor((last - self.start - self.phase(m) * self.interval) / self.interval)
            out.append((last, m, "heartbeat", 3 * k_last + 1))
            resume = deadline + self.resume_after
            if resume < self.end:
                out.append((resume, m, "heartbeat", 3 * k_last + 2))
        out.sort()
        return out

    def sends(self) -> Iterator[Send]:
        """Every planned send in time order. A silent machine follows its schedule until its
        last heartbeat, is silent until it resumes, then follows its schedule again (sequence
        numbers keep growing: its regular sequence k is sent as 3k, the last heartbeat before
        the silence and the resume as the two numbers after one of them)."""
        silence = {
            m: (self.last_heartbeat(m), deadline + self.resume_after)
            for m, deadline in self.silent.items()
        }

        def regular() -> Iterator[Send]:
            for t, m, kind, k in self._regular():
                quiet = silence.get(m)
                if quiet is not None:
                    if quiet[0] <= t <= quiet[1]:
                        continue
                    k *= 3  # room for the extra sends in sequence order
                yield (t, m, kind, k)

        return heapq.merge(regular(), self._silent_sends())

    def count(self) -> int:
        return sum(1 for _ in self.sends())


def make_plan(
    n: int,
    interval: float,
    window: float,
    silent: int,
    start_in: float,
    *,
    resume_after: float = 5.0,
) -> Plan:
    d = 3 * interval
    start = time.time() + start_in
    # the first silent machine's last heartbeat (first deadline - d) comes after every
    # machine has connected (one interval after the start)
    t0 = start + interval + d - 10.0
    step = max(1, n // max(1, silent))
    chosen = list(range(step // 2, n, step))[:silent]
    first, last = 10.0, max(11.0, window - 20.0)
    deadlines = {
        m: t0 + first + (last - first) * (i + 0.5) / len(chosen) for i, m in enumerate(chosen)
    }
    return Plan(n, interval, d, window, start, t0, deadlines, resume_after)


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
        bootstrap_servers=settings.kafka.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topics.status, p) for p in range(settings.kafka.partitions)]
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
    settings: Settings, plan: Plan, encoder: FleetEncoder, say: Any, total: int
) -> dict[str, Any]:
    """Send every planned message at its time (late ones at once), one batch per partition
    per turn; returns send figures."""
    producer = make_producer(settings, linger_ms=2, enable_idempotence=False, acks=1)
    await producer.start()
    topic = settings.topics.heartbeats
    pending: list[asyncio.Future[Any]] = []
    lateness: list[float] = []
    sent = failed = 0
    sends = plan.sends()
    upcoming: Send | None = next(sends, None)
    next_say = time.time() + 10
    try:
        while upcoming is not None and time.time() < plan.end:
            now = time.time()
            stamp = rfc3339(now).encode()
            batches: dict[int, Any] = {}
            while upcoming is not None and upcoming[0] <= now:
                when, m, kind, seq = upcoming
                body, key = encoder.body(m, kind, stamp, seq)
                p = encoder.partition(m)
                batch = batches.get(p)
                if batch is None:
                    batch = batches[p] = producer.create_batch()
                if batch.append(key=key, value=body, timestamp=None) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=p))
                    batch = batches[p] = producer.create_batch()
                    batch.append(key=key, value=body, timestamp=None)
                lateness.append(now - when)
                sent += 1
                upcoming = next(sends, None)
            for p, batch in batches.items():
                if batch.record_count():
                    pending.append(await producer.send_batch(batch, topic, partition=p))
            if len(pending) > 1000:
                done = await asyncio.gather(*pending, return_exceptions=True)
                failed += sum(1 for r in done if isinstance(r, BaseException))
                pending.clear()
            if now >= next_say:
                say(f"detection: {sent:,}/{total:,} heartbeats sent")
                next_say = now + 10
            wait = upcoming[0] - time.time() if upcoming is not None else 0.05
            await asyncio.sleep(min(0.02, max(0.0, wait)))
        done = await asyncio.gather(*pending, return_exceptions=True)
        failed += sum(1 for r in done if isinstance(r, BaseException))
    finally:
        await producer.stop()
    return {
        "planned": total,
        "sent": sent,
        "failedBatches": failed,
        "sendLateness": summary(lateness),
    }


async def _live(
    b: Bench,
    s: Settings,
    plan: Plan,
    encoder: FleetEncoder,
    silent_keys: set[str],
    excluded: set[str],
    out: Observed,
    total: int,
) -> dict[str, Any]:
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_status(s, plan, silent_keys, excluded, stop, out))
    try:
        await asyncio.sleep(max(0.0, plan.start - time.time()))
        sent = await drive(s, plan, encoder, b.say, total)
        await asyncio.sleep(max(0.0, plan.end - time.time()))
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await watcher
    return sent


def run_detection(
    b: Bench,
    machines: int,
    rate_hint: float,
    window: float,
    silent: int,
    *,
    interval: float | None = None,
    utilisation: float = 0.25,
    rate_measured: bool = True,
) -> dict[str, Any]:
    interval = interval or detection_interval(machines, rate_hint, utilisation)
    s = b.phase_settings("detect", heartbeat_interval=interval, disconnect_after=3 * interval)
    create_deployment_topics(s)
    w = b.worker(s, "detect")
    w.start()
    ready = w.wait_ready(120.0, progress=b.say, label="detection worker")
    b.say(f"detection: worker ready {ready - w.started_at:.1f}s after start")
    plan = make_plan(machines, interval, window, silent, start_in=2.0)
    total = plan.count()
    b.say(
        f"detection: {machines:,} machines connect over {plan.interval:g}s and heartbeat every "
        f"{plan.interval:g}s (disconnect_after {plan.disconnect_after:g}s, "
        f"{machines / plan.interval:,.0f}/s); {len(plan.silent):,} go silent; the window "
        f"starts in {plan.t0 - time.time():.0f}s and lasts {window:g}s"
    )
    encoder = FleetEncoder(s, machines)
    silent_keys = {encoder.fleet.key(m) for m in plan.silent}
    # deadlines before the worker was ready would measure its start, not detection
    excluded = {encoder.fleet.key(m) for m, d in plan.silent.items() if d < ready + 2.0}
    out = Observed()
    try:
        cpu0 = w.cpu_seconds()
        sent = asyncio.run(_live(b, s, plan, encoder, silent_keys, excluded, out, total))
        w.check_alive()
        cpu = w.cpu_seconds() - cpu0
        rss = w.rss_kib()
    finally:
        w.stop()
    missing = len(silent_keys) - len(out.disconnected_keys)
    duration = plan.end - plan.start
    b.say(
        f"detection: {len(out.detection):,} Disconnected measured, p99 "
        f"{summary(out.detection)['p99']}s; {len(out.connected_visible):,} resumed; "
        f"{out.false_disconnected} false Disconnected"
    )
    return {
        "machines": machines,
        "interval": plan.interval,
        "disconnectAfter": plan.disconnect_after,
        "checkInterval": s.timing.check_interval,
        "commitInterval": s.worker.commit_interval,
        "producerLinger": s.worker.producer_linger,
        "window": window,
        "warmupSeconds": round(plan.t0 - plan.start, 1),
        "liveRate": round(machines / plan.interval, 1),
        "utilisationTarget": utilisation,
        "rateHint": round(rate_hint, 1),
        "rateHintMeasured": rate_measured,
        "silent": len(plan.silent),
        "excludedBeforeReady": len(excluded),
        "readyAfterStartSeconds": round(ready - w.started_at, 2),
        "workerCpuSeconds": round(cpu, 1),
        "workerCpuUtilisation": round(cpu / duration, 3) if duration > 0 else None,
        "workerRssKiB": rss,
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
