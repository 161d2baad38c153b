"""A fleet of simulated agents with outage scenarios and time compression (``arcbeat simulate``).

N machines send heartbeats every ``heartbeat_interval`` (from settings, so
``ARCBEAT_HEARTBEAT_INTERVAL=1`` compresses 5 minutes into a second), each first one spread
over one interval, with composable scenarios (:class:`~arcbeat.deploy.agents.scenarios.Scenario`),
and writes a ground-truth log (:mod:`arcbeat.deploy.agents.groundtruth`) of what it did.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import OutOfOrderSequenceNumber
from aiokafka.structs import RecordMetadata

from arcbeat.deploy.agents.groundtruth import GroundTruthWriter
from arcbeat.deploy.agents.payloads import UNSUPPORTED_REGION, PayloadFactory, malformed_message
from arcbeat.deploy.agents.producer import check_topic, make_producer, stop_quietly
from arcbeat.deploy.agents.running import Progress, stop_on_signals
from arcbeat.deploy.agents.scenarios import (
    Action,
    Fleet,
    FleetSpec,
    MalformedKind,
    Scenario,
    Schedule,
    build_schedule,
    fleet_locations,
)
from arcbeat.streams.decide.partitioner import KeyPartitioner
from arcbeat.streams.decide.records import Heartbeat, decode_heartbeat
from arcbeat.streams.decide.timestamps import rfc3339
from arcbeat.streams.settings import Settings

# per-machine state flags (one byte per machine)
_SENT: Final = 1  # has sent its first message (the `connect`)
_STOPPED: Final = 2  # silent (outage, flap, dead)
_GONE: Final = 4  # sent `disconnect`: never sends again


@dataclass(slots=True)
class SimulationResult:
    topic: str
    machines: int
    seconds: float
    sent: int
    errors: int
    by_event: dict[str, int] = field(default_factory=dict)
    groundtruth: str | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class Simulator:
    """One simulation run; see :func:`simulate`."""

    def __init__(
        self,
        settings: Settings,
        fleet: Fleet,
        schedule: Schedule,
        *,
        interval: float,
        topic: str,
        duration: float | None,
        until_count: int | None,
        groundtruth: GroundTruthWriter | None,
        progress: Progress | None,
        progress_every: float,
        seed: int,
    ) -> None:
        self.settings = settings
        self.fleet = fleet
        self.schedule = schedule
        self.scenario = schedule.scenario
        self.interval = interval
        self.topic = topic
        self.duration = duration
        self.until_count = until_count
        self.truth = groundtruth
        self.progress = progress
        self.progress_every = progress_every
        self.state = bytearray(len(fleet))
        self.rng = random.Random(seed * 31 + 5)  # per-message draws, in send order
        self.counts: Counter[str] = Counter()
        self.sent = 0
        self.errors = 0
        self.outstanding = 0
        self.stopped = 0
        self._degrade_started = False
        self.gone = 0
        self.silent_machines = (
            fleet.location_of.count(schedule.silent_location)
            if schedule.silent_location is not None
            else 0
        )
        self.t0 = 0.0
        self.producer: AIOKafkaProducer | None = None
        self._last_error: str | None = None
        self._rate_mark = (0.0, 0)
        self.partitions: list[int] = [0]
        self.partitioner = KeyPartitioner(1)
        self.part_of = array("h", [-1]) * len(fleet)  # partition per machine, -1 = unknown
        self.factory = PayloadFactory(fleet)
        self._stamp_ts = math.nan
        self.lag = 0.0  # how far behind schedule the sender is
        self._stamp_text = b""
        self._renew = False  # the producer failed for good: the next send makes a new one
        self._closing: set[asyncio.Task[None]] = set()

    # -- the loop --------------------------------------------------------------------------
    async def run(self, stop_event: asyncio.Event) -> SimulationResult:
        producer = make_producer(self.settings)
        self.producer = producer
        await producer.start()
        try:
            self.partitions = sorted(await producer.partitions_for(self.topic))
            self.partitioner = KeyPartitioner(len(self.partitions))
            await self._loop(stop_event)
        finally:
            producer = self.producer
            try:
                await producer.flush()
                await self._drain(timeout=30.0)
            finally:
                await producer.stop()
        seconds = time.time() - self.t0
        if self.truth is not None:
            self.truth.write(
                {
                    "t": time.time(),
                    "event": "end",
                    "sent": self.sent,
                    "errors": self.errors,
                    "byEvent": dict(self.counts),
                }
            )
        self._say_progress(final=True)
        return SimulationResult(
            topic=self.topic,
            machines=len(self.fleet),
            seconds=seconds,
            sent=self.sent,
            errors=self.errors,
            by_event=dict(self.counts),
            groundtruth=str(self.truth.path) if self.truth is not None else None,
        )

    async def _loop(self, stop_event: asyncio.Event) -> None:
        fleet, n, interval = self.fleet, len(self.fleet), self.interval
        actions, ap = self.schedule.actions, 0
        self.t0 = t0 = time.time()
        end = t0 + self.duration if self.duration is not None else math.inf
        w_start, w_end = (t0 + w for w in self.schedule.silent_window)
        in_window = False
        k = i = 0
        next_send = t0 + fleet.phase(0) * interval
        next_progress = t0 + self.progress_every
        self._rate_mark = (t0, 0)
        while not stop_event.is_set():
            now = time.time()
            if now >= end or self._count_reached():
                break
            if self.schedule.silent_location is not None:
                if not in_window and w_start <= now < w_end:
                    in_window = True
                    self._scope_event("stop", now)
                elif in_window and now >= w_end:
                    in_window = False
                    self._scope_event("resume", now)
            done = 0
            while True:
                t_act = t0 + actions[ap].at if ap < len(actions) else math.inf
                if t_act <= next_send:
                    if t_act > now:
                        break
                    await self._apply(actions[ap], now)
                    ap += 1
                else:
                    if next_send > now:
                        break
                    await self._tick(i, k, now, in_window)
                    i += 1
                    if i == n:
                        i, k = 0, k + 1
                    next_send = t0 + (k + fleet.phase(i)) * interval
                done += 1
                if done % 256 == 0:
                    await asyncio.sleep(0)  # let the producer's sender run
                    now = time.time()
                    if now >= next_progress:  # also when the sender is behind
                        self.lag = max(0.0, now - next_send)
                        self._say_progress()
                        next_progress = now + self.progress_every
                    if now >= end or self._count_reached() or stop_event.is_set():
                        break
            if now >= next_progress:
                self.lag = max(0.0, now - next_send)
                self._say_progress()
                next_progress = now + self.progress_every
            t_act = t0 + actions[ap].at if ap < len(actions) else math.inf
            wake = min(next_send, t_act, next_progress, end)
            if self.schedule.silent_location is not None:
                wake = min(wake, w_start if now < w_start else w_end if now < w_end else wake)
            delay = min(wake - time.time(), 0.5)  # wake up at least twice a second for stop
            await asyncio.sleep(max(0.0, delay))

    def _count_reached(self) -> bool:
        return self.until_count is not None and self.sent >= self.until_count

    # -- actions ---------------------------------------------------------------------------
    async def _apply(self, action: Action, now: float) -> None:
        m = action.machine
        st = self.state[m]
        if st & _GONE:
            return
        if action.kind == "stop":
            if not st & _STOPPED:
                self.state[m] = st | _STOPPED
                self.stopped += 1
            self._record_action("stop", m, now, action.reason)
        elif action.kind == "resume":
            if st & _STOPPED:
                self.state[m] = st & ~_STOPPED
                self.stopped -= 1
            self._record_action("resume", m, now, action.reason)
        else:  # disconnect: the agent removes the machine, like `azcmagent disconnect`
            seq = max(0, math.floor((now - self.t0) / self.interval - self.fleet.phase(m)))
            rid = self.fleet.resource_id(m)
            await self._send_heartbeat(m, rid, rid.lower().encode(), "disconnect", seq, now)
            if st & _STOPPED:
                self.stopped -= 1
            self.state[m] = (st | _GONE) & ~_STOPPED
            self.gone += 1

    def _record_action(self, event: str, m: int, now: float, reason: str) -> None:
        if self.truth is None:
            return
        rid = self.fleet.resource_id(m)
        self.truth.write(
            {
                "t": now,
                "event": event,
                "key": rid.lower(),
                "resourceId": rid,
                "location": self.fleet.location(m),
                "reason": reason,
            }
        )

    def _scope_event(self, event: str, now: float) -> None:
        location = self.scenario.silent_location
        if self.truth is not None:
            self.truth.write(
                {
                    "t": now,
                    "event": event,
                    "scope": f"location={location}",
                    "location": location,
                    "machines": self.silent_machines,
                    "reason": "location-silent",
                }
            )

    # -- messages --------------------------------------------------------------------------
    async def _tick(self, m: int, k: int, now: float, in_window: bool) -> None:
        st = self.state[m]
        if st & (_STOPPED | _GONE):
            return
        if in_window and self.fleet.location_of[m] == self.schedule.silent_location:
            return
        late = 0.0
        if self._degrading(m):
            degraded = self._degraded(now)
            if degraded is None:
                return  # the uplink lost this one
            late = degraded
        kind = "connect" if self.scenario.connect_first and not st & _SENT else "heartbeat"
        self.state[m] = st | _SENT
        rid = self.fleet.resource_id(m)
        key = rid.lower().encode()
        payload = await self._send_heartbeat(m, rid, key, kind, k, now, sent_shift=-late)
        sc, rng = self.scenario, self.rng
        if sc.duplicate_rate and rng.random() < sc.duplicate_rate:
            if k >= 1 and rng.random() < 0.5:  # an older one: arrives out of order
                old_at = self.t0 + (k - 1 + self.fleet.phase(m)) * self.interval
                await self._send_heartbeat(m, rid, key, "heartbeat", k - 1, old_at, "duplicate")
            else:  # the same one again (a connect too: agents retry)
                extra: dict[str, Any] = {"kind": kind}
                if m in self.schedule.skewed:
                    extra["skew"] = self.schedule.skewed[m]
                await self._send(m, rid, payload, key, "duplicate", now, k, extra)
        if sc.malformed_rate and rng.random() < sc.malformed_rate:
            await self._send_malformed(m, rid, k, now)

    def _degrading(self, m: int) -> bool:
        """Whether machine ``m`` is behind the degrading uplink (its location's or its
        subscription's)."""
        schedule = self.schedule
        if self.fleet.location_of[m] == schedule.degrade_location:
            return True
        sub = schedule.degrade_subscription
        return sub is not None and self.fleet.group(m) // self.fleet.spec.resource_groups == sub

    def _degraded(self, now: float) -> float | None:
        """The delivery delay of a heartbeat of the degrading location sent now, or None when
        its uplink loses it. The delay shows as a sentAt that much earlier than its arrival:
        the agent stamped it, the uplink held it."""
        sc = self.scenario
        steps = (now - self.t0 - sc.degrade_at) / self.interval
        if steps < 0:
            return 0.0
        if not self._degrade_started and self.truth is not None:
            self._degrade_started = True
            if sc.degrade_location is not None:
                self.truth.write(
                    {"t": now, "event": "degrade", "scope": f"location={sc.degrade_location}",
                     "location": sc.degrade_location, "reason": "uplink-degrades"}
                )  # fmt: skip
            if sc.degrade_subscription is not None:
                sub = sc.degrade_subscription.lower()
                self.truth.write(
                    {"t": now, "event": "degrade", "scope": f"subscription={sub}",
                     "subscription": sub, "reason": "subscription-degrades"}
                )  # fmt: skip
        if steps >= sc.degrade_gone_after:
            return None
        if steps >= sc.degrade_miss_after:
            share = (steps - sc.degrade_miss_after + 1) / (
                sc.degrade_gone_after - sc.degrade_miss_after + 1
            )
            if self.rng.random() < share:
                return None
        return sc.degrade_step * min(steps, 5.0)

    def _stamp(self, ts: float) -> bytes:
        """RFC 3339 bytes of ``ts``; the loop sends many messages with the same ``now``."""
        if ts != self._stamp_ts:
            self._stamp_ts, self._stamp_text = ts, rfc3339(ts).encode()
        return self._stamp_text

    async def _send_heartbeat(
        self,
        m: int,
        rid: str,
        key: bytes,
        kind: str,
        seq: int,
        at: float,
        event: str | None = None,
        *,
        sent_shift: float = 0.0,
    ) -> bytes:
        skew = self.schedule.skewed.get(m, 0.0)
        payload = self.factory.body(m, rid.encode(), kind, self._stamp(at + skew + sent_shift), seq)
        extra: dict[str, Any] = {"skew": skew} if skew else {}
        if sent_shift:
            extra["delay"] = round(-sent_shift, 3)
        if event == "duplicate":
            extra["kind"] = kind
        await self._send(m, rid, payload, key, event or kind, at, seq, extra)
        return payload

    async def _send_malformed(self, m: int, rid: str, k: int, now: float) -> None:
        kinds = [
            kind
            for kind in self.scenario.malformed_kinds
            if kind != "unsupported_region"
            or not self.settings.input.accepts_region(UNSUPPORTED_REGION)
        ]
        if not kinds:
            return
        kind: MalformedKind = self.rng.choice(kinds)
        raw, key = malformed_message(self.fleet, m, kind, k, now, self.rng, self.settings)
        verdict = decode_heartbeat(
            raw,
            key,
            max_bytes=self.settings.input.max_message_bytes,
            accepts_region=self.settings.input.accepts_region,
        )
        if isinstance(verdict, Heartbeat):  # cannot happen; never count a valid one as bad
            return
        extra = {"malformed": kind, "reason": verdict.reason}
        await self._send(m, rid, raw, key, "malformed", now, None, extra)

    def _partition(self, m: int, key: bytes | None, rid: str) -> int | None:
        """Kafka's default partition of ``key``; cached per machine for its own key."""
        if key is None:
            return None
        if key == rid.lower().encode():
            p = self.part_of[m]
            if p < 0:
                p = self.part_of[m] = self.partitions[self.partitioner(key)]
            return p
        return self.partitions[self.partitioner(key)]  # a malformed message's odd key

    async def _send(
        self,
        m: int,
        rid: str,
        payload: bytes,
        key: bytes | None,
        event: str,
        at: float,
        seq: int | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if self._renew:
            await self._renew_producer()
        producer = self.producer
        if producer is None:
            raise RuntimeError("the simulator sends only while it runs (Simulator.run)")
        record: dict[str, Any] | None = None
        if self.truth is not None:
            record = {
                "t": time.time(),
                "event": event,
                "key": rid.lower(),
                "resourceId": rid,
                "location": self.fleet.location(m),
            }
            if seq is not None:
                record["sequence"] = seq
            if extra:
                record.update(extra)
        self.sent += 1
        self.counts[event] += 1
        self.outstanding += 1
        try:
            # explicit partition: aiokafka's own murmur2 costs more than the send
            future = await producer.send(
                self.topic, payload, key=key, partition=self._partition(m, key, rid)
            )
        except Exception as exc:
            self._failed(record, exc)
            return
        future.add_done_callback(partial(self._delivered, record))

    def _delivered(self, record: dict[str, Any] | None, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._failed(record, asyncio.CancelledError("send cancelled"))
            return
        exc = future.exception()
        if exc is not None:
            self._failed(record, exc)
            return
        self.outstanding -= 1
        if record is None or self.truth is None:
            return
        md: RecordMetadata = future.result()
        record["partition"] = md.partition
        record["offset"] = md.offset
        if md.timestamp is not None and md.timestamp_type == 1:  # LogAppendTime
            record["appendedAt"] = md.timestamp / 1000.0
        elif md.timestamp is not None:
            record["recordTimestamp"] = md.timestamp / 1000.0
        self.truth.write(record)

    def _failed(self, record: dict[str, Any] | None, exc: BaseException) -> None:
        self.outstanding -= 1
        self.errors += 1
        self._last_error = repr(exc)
        if isinstance(exc, OutOfOrderSequenceNumber):
            # fatal for an idempotent producer (its sequence state is lost, e.g. after a
            # broker restart outlived a batch): an agent carries on with a new one
            self._renew = True
        if record is not None and self.truth is not None:
            record["error"] = repr(exc)
            self.truth.write(record)

    async def _renew_producer(self) -> None:
        self._renew = False
        old, self.producer = self.producer, make_producer(self.settings)
        await self.producer.start()
        if old is not None:  # its failed sends are already counted
            task = asyncio.create_task(stop_quietly(old))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.outstanding > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # -- progress --------------------------------------------------------------------------
    def _say_progress(self, *, final: bool = False) -> None:
        if self.progress is None:
            return
        now = time.time()
        mark_t, mark_n = (self.t0, 0) if final else self._rate_mark  # final: the average
        rate = (self.sent - mark_n) / (now - mark_t) if now > mark_t else 0.0
        self._rate_mark = (now, self.sent)
        n = len(self.fleet)
        active = n - self.stopped - self.gone
        what = "done" if final else "running"
        line = (
            f"simulate: {what} {now - self.t0:6.1f}s sent={self.sent} ({rate:,.0f}/s) "
            f"machines={n} active={active} stopped={self.stopped} disconnected={self.gone}"
        )
        if self.lag > 1.0:
            line += f" behind={self.lag:.1f}s (the sender cannot keep up with the fleet)"
        if self.errors:
            line += f" errors={self.errors} (last: {self._last_error})"
        self.progress(line)


async def simulate(
    settings: Settings,
    *,
    fleet: FleetSpec | Fleet | None = None,
    scenario: Scenario | None = None,
    duration: float | None = None,
    until_count: int | None = None,
    groundtruth: str | Path | None = None,
    interval: float | None = None,
    topic: str | None = None,
    progress: Progress | None = None,
    progress_every: float = 5.0,
    stop_event: asyncio.Event | None = None,
    check: bool = True,
) -> SimulationResult:
    """Run a simulated fleet against ``settings.topics.heartbeats`` (or ``topic``).

    Stops after ``duration`` seconds, after ``until_count`` messages, or when ``stop_event``
    is set (SIGINT/SIGTERM set it when none is given); whichever comes first.
    """
    if fleet is None:
        fleet = FleetSpec(locations=fleet_locations(settings))
    built = fleet if isinstance(fleet, Fleet) else Fleet(fleet)
    scenario = scenario or Scenario()
    beat = interval if interval is not None else settings.timing.heartbeat_interval
    if beat <= 0:
        raise ValueError(f"simulate: interval must be > 0, got {beat}")
    schedule = build_schedule(
        built,
        scenario,
        interval=beat,
        disconnect_after=settings.timing.disconnect_after,
        duration=duration,
    )
    target = topic or settings.topics.heartbeats
    if check:
        await check_topic(settings, target)
    writer = GroundTruthWriter(groundtruth) if groundtruth is not None else None
    sim = Simulator(
        settings,
        built,
        schedule,
        interval=beat,
        topic=target,
        duration=duration,
        until_count=until_count,
        groundtruth=writer,
        progress=progress,
        progress_every=progress_every,
        seed=built.spec.seed,
    )
    if writer is not None:
        writer.write(
            {
                "t": time.time(),
                "event": "header",
                "topic": target,
                "bootstrap": settings.kafka.bootstrap,
                "interval": beat,
                "disconnectAfter": settings.timing.disconnect_after,
                "expireAfter": settings.timing.expire_after,
                "maxMessageBytes": settings.input.max_message_bytes,
                "regions": list(settings.input.regions),
                "duration": duration,
                "untilCount": until_count,
                "fleet": asdict(built.spec),
                "scenario": schedule.scenario.as_dict(),
                "actions": len(schedule.actions),
                "skewed": len(schedule.skewed),
            }
        )
    if progress is not None:
        progress(
            f"simulate: {len(built)} machines -> {target} on {settings.kafka.bootstrap}, "
            f"interval {beat:g}s, {len(schedule.actions)} scenario actions"
            + (f", ground truth {groundtruth}" if groundtruth else "")
        )
    with stop_on_signals(stop_event) as stop:
        try:
            return await sim.run(stop)
        finally:
            if writer is not None:
                writer.close()
